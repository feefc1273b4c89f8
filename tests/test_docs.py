"""The documentation works: every relative link and anchor resolves, the README fits two
screens, and every command in a fenced block marked `cheap` runs.

A cheap `flwr run . --run-config '...'` is read by Flower's own parser and merged into
pyproject's config the way Flower merges it (undeclared keys refused), then trained in-process
(`harness.inprocess`: the real ServerApp and ClientApp code) with tiny settings for what the
command leaves out (tiny-llama, synthetic data, one round of one or two steps); the files it
names (`./my-model`, `data/*.jsonl`) are made first in a temporary folder. A cheap `python` block
runs as a script. `flwr run` itself is covered by the e2e tests.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from flwr.common.config import flatten_dict, fuse_dicts, parse_config_args

from edgesplit.settings import START_HERE, Settings, new_keys

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# What a cheap run leaves out becomes tiny; what would make it long is capped.
TINY = {"model.name": "tiny-llama", "data.corpus": "synthetic", "data.block-size": 16,
        "train.rounds": 1, "train.local-steps": 1, "eval.every": 0,
        "allocation.calibration": "none", "compute.server-device": "cpu"}
CAPS = {"train.rounds": 1, "train.local-steps": 2, "data.block-size": 64}


def blocks(page: Path) -> list[tuple[str, str]]:
    """(info string, text) of every fenced block of a page."""
    return [(m.group(1).strip(), m.group(2)) for m in FENCE.finditer(page.read_text())]


def cheap_blocks() -> list[tuple[str, str, str]]:
    found = [(page.relative_to(ROOT).as_posix(), info.split()[0], text)
             for page in PAGES for info, text in blocks(page) if "cheap" in info.split()[1:]]
    return found


def slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_and_anchor_resolves(page):
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: link to missing {target}"
        if anchor and dest.suffix == ".md":
            assert anchor in anchors(dest), f"{page.name}: no heading #{anchor} in {dest.name}"


def test_the_readme_fits_two_screens_and_keeps_its_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    commands = [text for info, text in blocks(ROOT / "README.md") if info == "bash"]
    assert commands[0].strip().endswith('flwr run . --federation-config "num-supernodes=8 '
                                        'client-resources-num-cpus=1" --stream')
    assert commands[1].strip().endswith("pytest -q")
    assert all("pip install torch==2.13.0 &&" in c for c in commands[:2])


def test_the_newcomers_edit_in_the_readme_needs_only_first_screen_keys():
    [(_, _, text)] = [b for b in cheap_blocks() if b[0] == "README.md"]
    keys = set(run_config_of(shlex.split(text.strip()[len("flwr run ."):].strip())))
    assert keys and keys <= set(START_HERE), keys - set(START_HERE)


def test_there_are_cheap_commands_to_run():
    assert {page for page, _, _ in cheap_blocks()} >= {"README.md", "docs/config.md",
                                                      "docs/data.md"}


def run_config_of(argv: list[str]) -> dict:
    """The overrides of a `flwr run` command line, as Flower parses them."""
    values = [argv[i + 1] for i, a in enumerate(argv) if a == "--run-config"]
    return parse_config_args(values)


def supernodes_of(argv: list[str]) -> int:
    federation = " ".join(argv[i + 1] for i, a in enumerate(argv) if a == "--federation-config")
    found = re.search(r"num-supernodes=(\d+)", federation)
    return min(int(found.group(1)), 4) if found else 2


def make_referenced_files(folder: Path) -> None:
    """The files the documented commands name: a checkpoint folder and JSONL data."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgesplit.presets import resolve_checkpoint

    tiny = resolve_checkpoint("tiny-llama")
    AutoModelForCausalLM.from_pretrained(tiny).save_pretrained(folder / "my-model")
    AutoTokenizer.from_pretrained(tiny).save_pretrained(folder / "my-model")
    data = folder / "data"
    data.mkdir()
    users = [f"user{i}" for i in range(6)]
    with (data / "notes.jsonl").open("w") as f:
        for i in range(120):
            f.write(json.dumps({"user": users[i % 6], "body": f"Note {i}: the tide turns at "
                                f"{i % 12} and the ferry waits for no one."}) + "\n")
    with (data / "chats.jsonl").open("w") as f:
        for i in range(120):
            f.write(json.dumps({"user": users[i % 6], "messages": [
                {"role": "user", "content": f"When does ferry {i} leave?"},
                {"role": "assistant", "content": f"At {i % 12} o'clock, from pier {i % 3}."}]})
                    + "\n")


def tiny_run(argv: list[str], folder: Path) -> list[dict]:
    from harness.inprocess import run_in_process

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    defaults = flatten_dict(pyproject["tool"]["flwr"]["app"]["config"])
    given = run_config_of(argv)
    merged = fuse_dicts(defaults, given, check_keys=True)  # as Flower merges overrides
    named = new_keys(given)[0]  # an old flat key names its new key
    config = {**merged, **{k: v for k, v in TINY.items() if k not in named}}
    for key, cap in CAPS.items():
        config[key] = min(config[key], cap)
    config.update({"run.output-dir": str(folder / "outputs"), "run.name": "docs",
                   "eval.sample-prompts": ""})
    Settings.from_run_config(config)  # the documented values are valid keys and types
    _, _, rows = run_in_process(config, supernodes_of(argv))
    return rows


@pytest.mark.parametrize("page, language, text", cheap_blocks(),
                         ids=lambda x: x if isinstance(x, str) and x.endswith(".md") else "")
def test_a_cheap_documented_command_runs(page, language, text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_referenced_files(tmp_path)
    if language == "python":
        script = tmp_path / "snippet.py"
        script.write_text(text)
        out = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        return
    for line in text.replace("\\\n", " ").splitlines():
        argv = shlex.split(line)
        if not argv:
            continue
        assert argv[:3] == ["flwr", "run", "."], f"{page}: no tiny form for `{line}`"
        rows = tiny_run(argv[3:], tmp_path)
        assert rows and rows[-1]["completed"] >= 1, rows
