"""The privacy report's table, and the split floor a leakage budget reads from it (no torch).

`python -m experiments.privacy` writes one row per (split, attack, wire format, noise level): how
much of the text an attack recovers from what a device sends at that split. A run with
`privacy.max-token-recovery` and `privacy.report` turns the rows that match it (its model, the
format its activations travel in, its `privacy.activation-noise-std`) into the smallest split from
which every deeper split stays within the budget, judged by the strongest attack the report holds at
each split: the floor the allocator never goes below. Rows of differentially private releases
(`noise_multiplier` > 0) are the frontier's (`experiments.privacy_frontier`), not the floor's.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

#: The report's columns, in order (the experiment writes them, `read_report` reads them).
#: `attack`: learned | white-box (activations) | gradient (a U-shaped split's returned
#: gradients: token_accuracy is then the share of labels recovered, loss_row_accuracy the
#: balanced accuracy of telling rows with a loss from rows without).
COLUMNS = ("model", "num_layers", "split", "attack", "wire", "noise_std", "noise_multiplier",
           "token_accuracy", "rouge_l_f1", "loss_row_accuracy", "coverage", "prior_accuracy",
           "perplexity", "train_tokens", "eval_tokens", "epochs", "width", "seconds")
#: Columns a report must have: those of the first reports, which held the learned attack only.
REQUIRED = ("model", "num_layers", "split", "wire", "noise_std", "token_accuracy", "rouge_l_f1",
            "coverage", "prior_accuracy", "perplexity", "train_tokens", "eval_tokens", "epochs",
            "width", "seconds")
ATTACKS = ("learned", "white-box", "gradient")

#: Wire formats the report measures: the lossless default and the lossiest codec.
REPORT_WIRES = ("float32", "int8")


@dataclass(frozen=True)
class LeakageRow:
    """The leakage measured at one split under one wire format and noise level."""

    model: str
    split: int
    wire: str
    noise_std: float
    token_accuracy: float
    rouge_l_f1: float
    attack: str = "learned"
    noise_multiplier: float = 0.0


def read_report(path: str | Path) -> list[LeakageRow]:
    """The rows of a report CSV; ValueError saying what is wrong with an unreadable one."""
    try:
        with Path(path).open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise ValueError(f"cannot read the privacy report: {exc}") from None
    if not rows:
        raise ValueError(f"{path}: no rows")
    missing = set(REQUIRED) - set(rows[0])
    if missing:
        raise ValueError(f"{path}: not a privacy report (no column {sorted(missing)})")
    try:
        return [LeakageRow(r["model"], int(r["split"]), r["wire"], float(r["noise_std"]),
                           float(r["token_accuracy"]), float(r["rouge_l_f1"] or 0),
                           r.get("attack") or "learned", float(r.get("noise_multiplier") or 0))
                for r in rows]
    except ValueError as exc:
        raise ValueError(f"{path}: bad value ({exc})") from None


def report_wire(stream_dtype: str) -> str:
    """The report's format for activations sent as `stream_dtype`: int8 is measured; float16
    and bfloat16 round far less than int8's 255 levels, so the lossless float32 rows (the
    larger leakage) stand for them."""
    return "int8" if stream_dtype == "int8" else "float32"


def split_floor(rows: list[LeakageRow], model: str, wire: str, noise_std: float,
                max_token_recovery: float, splits: range) -> int:
    """The smallest split k in `splits` such that the attack recovers at most
    `max_token_recovery` of the tokens at k and at every deeper split of `splits`.

    Every deeper split counts because recovery need not fall monotonically with depth, and the
    allocator may choose any split above its floor. The rows used are the model's, in `wire`,
    at the largest measured noise level not above `noise_std` (less noise leaks more, so a run
    between two measured levels is judged by the lower one); a split's recovery is the largest
    of the attacks measured there, and every attack the report holds at that level must be
    measured at every split of `splits` (a missing one might be the strongest).

    Raises
    ------
    ValueError
        When the report has no rows for this model and wire at or below this noise level, lacks
        a split of `splits` for one of its attacks, or no split meets the budget.
    """
    candidates = [r for r in rows if r.model == model and r.wire == wire
                  and not r.noise_multiplier]
    levels = sorted({r.noise_std for r in candidates if r.noise_std <= noise_std + 1e-12})
    if not levels:
        raise ValueError(f"the privacy report has no {wire} rows for model {model!r} at a noise "
                         f"std <= {noise_std:g}")
    level = [r for r in candidates if r.noise_std == levels[-1]]
    recovery: dict[int, float] = {}
    for r in level:
        recovery[r.split] = max(recovery.get(r.split, 0.0), r.token_accuracy)
    for attack in sorted({r.attack for r in level}):
        measured = {r.split for r in level if r.attack == attack}
        absent = [k for k in splits if k not in measured]
        if absent:
            raise ValueError(f"the privacy report lacks splits {absent} of model {model!r} "
                             f"for the {attack} attack")
    floor = None
    for k in reversed(splits):
        if recovery[k] > max_token_recovery:
            break
        floor = k
    if floor is None:
        best = min(splits, key=recovery.get)
        raise ValueError(
            f"no split of {model} keeps the measured token recovery within {max_token_recovery:g}"
            f" down to the deepest split ({wire}, noise std {levels[-1]:g}); the lowest is "
            f"{recovery[best]:.3f} at split {best}: raise the budget or "
            "privacy.activation-noise-std")
    return floor
