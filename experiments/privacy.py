"""The privacy meter: how much of the text a learned attack reads back from each split.

For every split k of a model, the frozen model's head runs on public text: the corpus's server
hold-out (`edgesplit.data`; drawn before the partition, so no client of any run with the same
data settings trains on it). A `TokenInverter` (`edgesplit.inversion`) learns to map the
activations at k back to tokens on the first 80 % of those blocks and is scored on the last
20 % (other records of the corpus), under each condition a device may send them in:

- ``float32``: lossless (float16 and bfloat16 round far less than int8);
- Gaussian noise of each ``--noise`` level (`activation-noise-std`, `edgesplit.activation_noise`)
  on float32;
- ``int8``: the stream's int8 wire codec (`edgesplit.framing`, encode and decode).

The attacker knows the defence: it trains on activations sent the same way (fresh noise every
epoch). Scores per row: token accuracy and ROUGE-L F1 of the decoded text; ``coverage`` (the
share of evaluated tokens the attacker's text contains: the most it can recover) and
``prior_accuracy`` (always guessing the commonest token: what recovering nothing scores); and the
frozen model's perplexity on evaluated blocks when the activations at k cross under the
condition (what the defence costs the model before fine-tuning adapts to it). The budget (tokens,
epochs, width) and the seconds each row took are in every row.

Writes ``<out>/<model>.csv`` (columns `edgesplit.privacy_report.COLUMNS`, read back by a run's
`privacy-report`) and ``<out>/<model>.png``. Usage::

    python -m experiments.privacy [--model smollm2-135m tiny-llama] [--noise 0.5 1] [--out DIR]
    python -m experiments.privacy --quick --out /tmp/quick   # tiny-llama, 100 blocks: seconds (CI)
    python -m experiments.privacy --resume             # continue a stopped run
    python -m experiments.privacy --resume --splits 1 8 15   # add rows for only these splits
    python -m experiments.privacy --plot-only [--model NAME]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.ticker import MaxNLocator

from edgesplit.activation_noise import add_noise
from edgesplit.data import federated_text
from edgesplit.framing import int8_rows_decode, int8_rows_encode
from edgesplit.inversion import (
    AttackSettings,
    Perturb,
    text_rouge_l,
    token_accuracy,
    train_inverter,
)
from edgesplit.presets import DEFAULT_MODEL
from edgesplit.privacy_report import COLUMNS, REPORT_WIRES
from edgesplit.settings import DataSettings
from edgesplit.split_model import SplitModel
from experiments.plotting import save, subplots, write_csv

TRAIN_SHARE = 0.8  # of the hold-out's blocks, in corpus order: the attacker's text
#: activation-noise-std levels of a full report: from barely felt (0.2, 14 dB) to past where
#: SmolLM2-135M stops working (1 = 0 dB: perplexity x10), so both ends of the trade-off show.
NOISE_LEVELS = (0.2, 0.5, 1.0, 2.0, 4.0)


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much a report spends.

    max_blocks : hold-out blocks used (None: all of them).
    attack : the attacker's training.
    ppl_blocks : evaluated blocks whose perplexity is measured per split and condition.
    """

    max_blocks: int | None
    attack: AttackSettings
    ppl_blocks: int


FULL = Budget(max_blocks=None, attack=AttackSettings(), ppl_blocks=8)
QUICK = Budget(max_blocks=100, attack=AttackSettings(width=32, epochs=2), ppl_blocks=2)


def perturbation(wire: str, noise_std: float) -> Perturb | None:
    """How a device sends activations: noise first (on the device), then the wire format."""
    if wire not in REPORT_WIRES:
        raise ValueError(f"wire must be one of {REPORT_WIRES}, got {wire!r}")
    if wire == "float32" and noise_std == 0:
        return None

    def perturb(hidden: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        hidden = add_noise(hidden, noise_std, generator)
        return int8_rows_decode(*int8_rows_encode(hidden)) if wire == "int8" else hidden

    return perturb


def measure(model_name: str, noise_levels: Sequence[float], budget: Budget,
            corpus: str = "shakespeare", out: Path | None = None,
            done: Sequence[dict] = (), splits: Sequence[int] | None = None) -> list[dict]:
    """One row per (condition, split): see the module docstring.

    Conditions run one after another over `splits` (default: every split; float32 first, then
    each noise level, then int8), and with `out` the CSV is rewritten after every row, so a
    stopped run leaves whole curves of the conditions it finished; `done` (rows read back from
    such a CSV, of the same model and budget) are kept and not measured again. A subset of
    splits lets the costly conditions of a large model be measured where they matter; a run's
    leakage budget then refuses a condition whose report lacks a split it could choose.
    """
    text = federated_text(DataSettings(corpus=corpus), model_name, num_partitions=1)
    ids = text.heldout.input_ids[:budget.max_blocks]
    mask = text.heldout.attention_mask[:budget.max_blocks]
    cut = int(TRAIN_SHARE * len(ids))
    eval_ids, eval_mask = ids[cut:], mask[cut:]
    train_tokens = ids[:cut][mask[:cut].bool()]
    eval_tokens = eval_ids[eval_mask.bool()]
    counts = torch.bincount(train_tokens)
    labels = eval_ids.masked_fill(eval_mask == 0, -100)[:budget.ppl_blocks]
    model = SplitModel(model_name)
    every = range(1, model.num_layers)
    chosen = sorted(set(splits)) if splits is not None else list(every)
    if not chosen or not set(chosen) <= set(every):
        raise ValueError(f"splits must be a non-empty subset of 1..{model.num_layers - 1}, "
                         f"got {list(splits or [])}")
    fixed = {
        "model": model_name, "num_layers": model.num_layers,
        "coverage": float(torch.isin(eval_tokens, train_tokens).float().mean()),
        "prior_accuracy": float((eval_tokens == counts.argmax()).float().mean()),
        "train_tokens": len(train_tokens), "eval_tokens": len(eval_tokens),
        "epochs": budget.attack.epochs, "width": budget.attack.width}
    hidden = {}  # the activations at the chosen splits (SmolLM2: 59 MB each), one forward pass
    with torch.no_grad():
        current = model.head(ids, mask, 1)
        for split in range(1, chosen[-1] + 1):
            if split > 1:
                current = model.body(current, mask, split - 1, split)
            if split in chosen:
                hidden[split] = current
    budget_columns = ("model", "train_tokens", "eval_tokens", "epochs", "width")
    for row in done:
        if any(str(row[c]) != str(fixed[c]) for c in budget_columns):
            raise ValueError(f"cannot resume: the existing rows were measured with another model "
                             f"or budget ({', '.join(f'{c} {row[c]}' for c in budget_columns)})")
    measured = {(r["wire"], float(r["noise_std"]), int(r["split"])) for r in done}
    conditions = [("float32", 0.0), *(("float32", s) for s in noise_levels), ("int8", 0.0)]
    rows = list(done)
    for wire, noise_std in conditions:
        perturb = perturbation(wire, noise_std)
        for split in chosen:
            if (wire, noise_std, split) in measured:
                continue
            acts = hidden[split]
            started = time.perf_counter()
            attack = train_inverter(acts[:cut], ids[:cut], mask[:cut], budget.attack, perturb)
            sent = acts[cut:]
            if perturb:  # a draw the attacker never trained on
                sent = perturb(sent, torch.Generator().manual_seed(budget.attack.seed + 1))
            predicted = attack.predict(sent)
            with torch.no_grad():
                loss = model.tail(sent[:budget.ppl_blocks], eval_mask[:budget.ppl_blocks],
                                  split, labels).loss
            row = {**fixed, "split": split, "wire": wire, "noise_std": noise_std,
                   "token_accuracy": round(token_accuracy(predicted, eval_ids, eval_mask), 4),
                   "rouge_l_f1": round(text_rouge_l(predicted, eval_ids, eval_mask,
                                                    text.tokenizer), 4),
                   "perplexity": round(float(loss.exp()), 3),
                   "seconds": round(time.perf_counter() - started, 1)}
            rows.append({c: row[c] for c in COLUMNS})
            print(f"{condition_label(wire, noise_std):22s} split {split:2d}: accuracy "
                  f"{row['token_accuracy']:.3f} rouge-l {row['rouge_l_f1']:.3f} "
                  f"ppl {row['perplexity']:.1f} ({row['seconds']:.0f} s)", flush=True)
            if out:
                write_csv(rows, out)
    return rows


def condition_label(wire: str, noise_std: float) -> str:
    return wire if noise_std == 0 else f"{wire} + noise {noise_std:g}"


def plot(rows: list[dict], path: Path) -> Path:
    """Token accuracy, ROUGE-L and perplexity against the split, a line per condition."""
    fig, axes = subplots(1, 3)
    conditions = sorted({(r["wire"], float(r["noise_std"])) for r in rows},
                        key=lambda c: (c[1], c[0]))  # float32, int8, then noise upwards
    for wire, noise_std in conditions:
        mine = sorted((r for r in rows if (r["wire"], float(r["noise_std"])) == (wire, noise_std)),
                      key=lambda r: int(r["split"]))  # resumed rows come after the others
        splits = [int(r["split"]) for r in mine]
        style = {"marker": ".", "label": condition_label(wire, noise_std),
                 "linestyle": "--" if wire == "int8" else "-"}
        for ax, key in zip(axes[0], ("token_accuracy", "rouge_l_f1", "perplexity"), strict=True):
            ax.plot(splits, [float(r[key]) for r in mine], **style)
    first = rows[0]
    for value, label in ((first["coverage"], "coverage (ceiling)"),
                         (first["prior_accuracy"], "commonest token")):
        axes[0, 0].axhline(float(value), color="0.5", linestyle=":", linewidth=1)
        axes[0, 0].annotate(label, (1, float(value)), fontsize=7, color="0.4",
                            xytext=(0, 2), textcoords="offset points")
    titles = ("tokens recovered", "ROUGE-L F1 of the text", "perplexity (frozen model)")
    for ax, title in zip(axes[0], titles, strict=True):
        ax.set_xlabel("split (decoder layers on the device)")
        ax.set_title(title)
    for ax in axes[0]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0, 0].set_ylim(0, 1)
    axes[0, 1].set_ylim(0, 1)
    perplexities = [float(r["perplexity"]) for r in rows]
    if max(perplexities) > 10 * min(perplexities):  # noise that wrecks the model: a log axis
        axes[0, 2].set_yscale("log")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside right center")  # off the lines
    fig.suptitle(f"{first['model']}: learned inversion attack per split "
                 f"({first['train_tokens']} training tokens, {first['epochs']} epochs, "
                 f"width {first['width']})")
    return save(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=None,
                        help=f"presets or checkpoint folders, one report each (default "
                        f"{DEFAULT_MODEL}; tiny-llama with --quick)")
    parser.add_argument("--noise", type=float, nargs="*", default=None,
                        help="activation-noise-std levels to measure (default "
                        f"{' '.join(f'{n:g}' for n in NOISE_LEVELS)}; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="tiny-llama, few blocks (CI)")
    parser.add_argument("--out", type=Path, default=Path("results/privacy"))
    parser.add_argument("--plot-only", action="store_true", help="redraw from the CSV")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows of an existing CSV, measure only the missing ones")
    parser.add_argument("--splits", type=int, nargs="+", default=None,
                        help="measure only these splits (default: every split)")
    args = parser.parse_args(argv)
    noise = args.noise if args.noise is not None else [1.0] if args.quick else NOISE_LEVELS
    for model in args.model or ["tiny-llama" if args.quick else DEFAULT_MODEL]:
        name = Path(model).name
        csv_path, png_path = args.out / f"{name}.csv", args.out / f"{name}.png"
        rows = []
        if args.plot_only or (args.resume and csv_path.exists()):
            with csv_path.open(newline="") as f:
                rows = list(csv.DictReader(f))
        if not args.plot_only:
            started = time.perf_counter()
            args.out.mkdir(parents=True, exist_ok=True)
            rows = measure(model, noise, QUICK if args.quick else FULL, out=csv_path,
                           done=rows, splits=args.splits)
            print(f"{len(rows)} rows in {time.perf_counter() - started:.0f} s: {csv_path}")
        print(f"figure: {plot(rows, png_path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
