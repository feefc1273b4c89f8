"""The family table: every causal-LM family of the installed transformers, split exactly or
refused with the reason, as a user meets it (a tiny random model saved to a local folder, then
the project's own `SplitModel(folder)`).

    python -m experiments.families                   # results/families.csv (~10 min, 1 core)
    python -m experiments.families --quick --out /tmp/f    # the families of issue 26 only
    python -m experiments.families --only gptj falcon-alibi

Each family runs in a forked child with a memory cap and a time limit, so one that misbehaves
costs a row, not the sweep. Status per row:
  exact     loaded, and every cut (head/tail at each layer, every U-shaped pair) reproduced the
            unsplit logits, loss and LoRA gradients within 1e-5 (`harness.split_oracle`);
  refused   `SplitModel` refused it with `UnsupportedModel` (from its config alone, or after
            loading its weights): the reason is recorded;
  untested  our tiny model of it does not build or run in transformers itself (the reason
            says why), and its config alone is not refused: no verdict;
  crash     any other exception from `SplitModel` or the oracle (a bug: must not happen);
  inexact   loaded but some cut is off by 1e-5 or more (a bug the load probe missed).
The script exits 1 if any row is `crash` or `inexact`.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import resource
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import peft
import torch
import transformers
from transformers import AutoModelForCausalLM, PretrainedConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from edgesplit.families import UnsupportedModel, check_config
from edgesplit.presets import quiet_transformers
from edgesplit.split_model import SplitModel
from experiments.plotting import write_csv
from harness.split_oracle import cut_errors, padded_batch, randomised
from harness.tiny_families import SUPPORTED, save_config_only, tiny_config

EXACT = 1e-5  # the oracle's bound, as in tests/edgesplit/test_split_model.py
# The families issue 26 names (and the two Falcon layouts): the --quick set.
ISSUE_26 = ("gptj", "gpt_neo", "codegen", "falcon", "falcon-alibi", "bloom", "mpt")
FIELDS = ("family", "model_type", "status", "reason", "cuts", "logits_gap", "loss_gap",
          "grad_gap", "seconds")


def families() -> dict[str, str]:
    """Row name -> model type: every causal-LM model type, then the test configs that are a
    second layout of one (falcon-alibi)."""
    rows = {name: name for name in sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)}
    for name, build in SUPPORTED.items():
        model_type = build().model_type
        if name not in rows and name.replace("-", "_") not in rows:
            rows[name] = model_type
    return rows


def check(name: str, model_type: str, folder: Path) -> dict[str, object]:
    """One row of the table, the way a user meets the family: a folder holding its tiny model
    (or only its config, when `SplitModel` refuses that before reading any weight), loaded with
    `SplitModel(folder)`, then the oracle."""
    row: dict[str, object] = {"family": name, "model_type": model_type}
    try:
        config = SUPPORTED[name]() if name in SUPPORTED else tiny_config(model_type)
    except Exception as exc:
        return {**row, "status": "untested", "reason": f"no tiny config: {_short(exc)}"}
    refusal = _refused_from_config(config, folder / "config-only")
    if refusal:
        return {**row, "status": "refused", "reason": refusal}
    try:
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        ids, mask = padded_batch(vocab=min(256, base.config.vocab_size))
        base(input_ids=ids, attention_mask=mask, use_cache=False)  # runs in transformers itself
        base.save_pretrained(folder / "model")
    except Exception as exc:
        return {**row, "status": "untested",
                "reason": f"the tiny model does not build or run in transformers itself: "
                          f"{_short(exc)}"}
    try:
        model = SplitModel(str(folder / "model"))
    except UnsupportedModel as exc:
        return {**row, "status": "refused", "reason": str(exc)}
    except Exception as exc:
        return {**row, "status": "crash", "reason": f"SplitModel: {_short(exc)}"}
    try:
        randomised(model)
        errors = cut_errors(model)
    except Exception as exc:
        return {**row, "status": "crash",
                "reason": f"oracle: {_short(exc)} {traceback.format_exc(limit=-2)}"}
    gaps = {key: max(e[key] for e in errors.values()) for key in ("logits", "loss", "grad")}
    exact = max(gaps.values()) < EXACT
    return {**row, "status": "exact" if exact else "inexact",
            "reason": "" if exact else f"cuts off by >= {EXACT}: "
            + ", ".join(str(c) for c, e in errors.items() if max(e.values()) >= EXACT),
            "cuts": len(errors), **{f"{key}_gap": f"{gap:.3g}" for key, gap in gaps.items()}}


def _refused_from_config(config: PretrainedConfig, folder: Path) -> str | None:
    """`SplitModel`'s refusal of a folder holding only this config (with an empty weights
    file), if its config checks refuse it; None when they let it through to the weights."""
    try:
        check_config(config)
        return None
    except Exception:  # noqa: BLE001 (SplitModel turns any failure here into a refusal)
        save_config_only(config, folder)
    try:
        SplitModel(str(folder))
    except UnsupportedModel as refusal:
        return str(refusal)
    return None


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"


def _child(connection, name: str, model_type: str, folder: Path, memory_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    torch.set_num_threads(1)
    with quiet_transformers(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        connection.send(check(name, model_type, folder))
    connection.close()


def isolated(name: str, model_type: str, folder: Path, timeout_s: float, memory_gib: float
             ) -> dict[str, object]:
    """`check` in a forked child capped at `memory_gib` GiB more address space than the parent
    has now, killed after `timeout_s`."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    limit = _address_space_bytes() + int(memory_gib * 2**30)
    started = time.perf_counter()
    child = context.Process(target=_child, args=(sender, name, model_type, folder, limit))
    child.start()
    sender.close()
    row = None
    try:
        if receiver.poll(timeout_s):
            row = receiver.recv()
    except EOFError:  # the child died before answering
        pass
    child.join(timeout=5 if row is not None else 0)
    if child.is_alive():
        child.kill()
        child.join()
    receiver.close()
    if row is None:
        why = (f"no answer in {timeout_s:.0f} s" if child.exitcode in (None, -9)
               else f"child exited with code {child.exitcode} (memory cap {memory_gib} GiB?)")
        row = {"family": name, "model_type": model_type, "status": "untested",
               "reason": f"tiny model not checked: {why}"}
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def _address_space_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--quick", action="store_true", help="only the families of issue 26")
    parser.add_argument("--only", nargs="+", help="these rows (family names) only")
    parser.add_argument("--timeout-s", type=float, default=120.0, help="per family")
    parser.add_argument("--memory-gib", type=float, default=4.0, help="per family")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # transformers' notes on random init, per family
    every = families()
    wanted = args.only or (ISSUE_26 if args.quick else list(every))
    unknown = [name for name in wanted if name not in every]
    if unknown:
        parser.error(f"unknown families {unknown}; known: {', '.join(every)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="families-") as scratch:
        for name in wanted:
            rows.append(isolated(name, every[name], Path(scratch) / name, args.timeout_s,
                                 args.memory_gib))
            print(f"{name:28s} {rows[-1]['status']:9s} {str(rows[-1]['reason'])[:110]}",
                  flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv([{key: row.get(key, "") for key in FIELDS} for row in rows],
              args.out / "families.csv")
    (args.out / "families_versions.txt").write_text(
        f"transformers {transformers.__version__}\npeft {peft.__version__}\n"
        f"torch {torch.__version__}\n")
    counts = {s: sum(r["status"] == s for r in rows) for s in
              ("exact", "refused", "untested", "crash", "inexact")}
    print(f"{len(rows)} families: {counts}; table in {args.out / 'families.csv'}")
    return 1 if counts["crash"] or counts["inexact"] else 0


if __name__ == "__main__":
    sys.exit(main())
