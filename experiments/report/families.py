"""Section: which decoder families split exactly and which are refused, and why
(results/families.csv, written by `python -m experiments.families`)."""

from __future__ import annotations

from pathlib import Path

from experiments.report.stats import rows, table

STATUSES = ("exact", "refused", "untested", "crash", "inexact")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(results: Path) -> str:
    found = rows(results / "families.csv")
    versions = (results / "families_versions.txt").read_text().split("\n")
    counts = {status: sum(r["status"] == status for r in found) for status in STATUSES}
    by_status = {status: [r for r in found if r["status"] == status] for status in STATUSES}
    lines = [
        "## Decoder families: split exactly or refused with the reason",
        "",
        "Every model type that `AutoModelForCausalLM` loads in "
        f"{', '.join(v for v in versions if v)}, as a user meets it: a tiny random model (or, "
        "where `SplitModel` refuses from the config alone, only its config) saved to a local "
        "folder and loaded with `SplitModel(folder)`. *Exact*: every cut (head/tail at every "
        "layer, every U-shaped pair) gave the unsplit logits, loss and LoRA gradients on "
        "unpadded, left-, right- and two-sided-padded rows (`harness/split_oracle.py`; the gaps "
        "below are the largest over all cuts). *Untested*: our tiny model of it does not build "
        "or run in transformers itself. Regenerate: `python -m experiments.families` "
        "(results/families.csv).",
        "",
        table(["rows", *STATUSES], [[len(found), *(counts[s] for s in STATUSES)]]),
        "### Exact",
        "",
        table(["family", "model type", "cuts", "logits gap", "loss gap", "gradient gap"],
              [[r["family"], r["model_type"], r["cuts"], r["logits_gap"], r["loss_gap"],
                r["grad_gap"]] for r in by_status["exact"]]),
        "### Refused, with the reason `SplitModel` gives",
        "",
        table(["family", "reason"],
              [[r["family"], _cell(r["reason"])] for r in by_status["refused"]]),
    ]
    for status, title in (("untested", "Untested"), ("crash", "Crashed (a bug)"),
                          ("inexact", "Loaded but inexact (a bug)")):
        if by_status[status]:
            lines += [f"### {title}", "",
                      table(["family", "why"],
                            [[r["family"], _cell(r["reason"])] for r in by_status[status]])]
    return "\n".join(lines)
