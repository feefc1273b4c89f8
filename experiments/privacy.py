"""The privacy meter: how much of the text each attack reads back from what a split sends.

For every split k of a model, the frozen model (its initial adapter: what round 1's frames are
computed with) runs on public text: the corpus's server hold-out, drawn before the partition
(`edgesplit.data`), here a larger share of the records (`Budget.heldout_fraction`) so the
attacker has ten times the text of the first meter. The attacker's text is the first 80 % of
those blocks; the evaluated text is drawn from the rest (other records). Three attacks, each by
the honest-but-curious server of docs/privacy.md (`edgesplit.inversion`):

- ``learned``: a `TokenInverter` trained on the attacker's text sent the way devices send it;
- ``white-box``: relaxed-input optimisation through the known head, no training;
- ``gradient``: a U-shaped split's returned gradient at the body's output
(`privacy.device-tail-layers
  = 1`): which rows carry a loss (``loss_row_accuracy``, balanced, the threshold calibrated on
  the attacker's own simulated text) and the labels, that is the next tokens, of the loss rows
  (``token_accuracy``). Evaluated blocks get a prompt (a prefix without loss, 0-8 tokens) and a
  trailing part without loss (0-8 tokens), as instruction data would.

Conditions a device may send under:

- ``float32``: lossless (float16 and bfloat16 round far less than int8);
- ``int8``: the stream's int8 wire codec (`edgesplit.framing`, encode and decode);
- Gaussian noise of each ``--noise`` level (`privacy.activation-noise-std`) on float32;
- differential privacy at each ``--dp`` noise multiplier z (`privacy.epsilon`,
  `edgesplit.dp`): activations clipped per token around the public probe's centre at
  `privacy.activation-clip` x its median norm, gradients per row at `privacy.gradient-clip` x
  theirs, noise z x each block's sensitivity. Which epsilon a z gives depends on how often a block
  is released (`experiments.privacy_frontier` pairs them with training runs).

The attacker knows the defence: it trains and calibrates on releases made the same way (fresh
noise every epoch) and is scored on a draw it never saw. Every row also holds ``coverage`` (the
share of evaluated tokens in the attacker's text: the most the learned and white-box attacks can
name), ``prior_accuracy`` (always guessing the commonest token), and the frozen model's
perplexity on evaluated blocks when the activations cross under the condition (the defence's
cost before fine-tuning adapts to it).

Writes ``<out>/<model>.csv`` (columns `edgesplit.privacy_report.COLUMNS`, read back by a run's
`privacy.report`) and ``<out>/<model>.png``. Usage::

    python -m experiments.privacy [--model smollm2-135m] [--splits 1 4 15] [--out DIR]
    python -m experiments.privacy --budget first --attacks learned --out results/privacy
    python -m experiments.privacy --noise 0.5 1 --dp 0.01 0.1 --attacks learned gradient
    python -m experiments.privacy --quick --out /tmp/quick   # tiny-llama, seconds (CI)
    python -m experiments.privacy --resume             # continue a stopped run
    python -m experiments.privacy --plot-only [--model NAME]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from matplotlib.ticker import MaxNLocator

from edgesplit.activation_noise import add_noise
from edgesplit.blocks import IGNORE
from edgesplit.data import federated_text
from edgesplit.dp import ReleaseNoise, ReleaseScale, privatize, probe_scale
from edgesplit.framing import int8_rows_decode, int8_rows_encode
from edgesplit.inversion import (
    AttackSettings,
    Perturb,
    Received,
    balanced_accuracy,
    gradient_labels,
    loss_row_threshold,
    loss_rows,
    relaxed_inversion,
    text_rouge_l,
    token_accuracy,
    train_inverter,
)
from edgesplit.presets import DEFAULT_MODEL
from edgesplit.privacy_report import ATTACKS, COLUMNS, REPORT_WIRES
from edgesplit.settings import DataSettings, PrivacySettings
from edgesplit.split_model import SplitModel
from experiments.plotting import save, subplots, write_csv

TRAIN_SHARE = 0.8  # of the hold-out's blocks, in corpus order: the attacker's text
#: privacy.activation-noise-std levels of a full report: from barely felt (0.2, 14 dB) to past where
#: SmolLM2-135M stops working (1 = 0 dB: perplexity x10), so both ends of the trade-off show.
NOISE_LEVELS = (0.2, 0.5, 1.0, 2.0, 4.0)
DEVICE_TAIL_LAYERS = 1  # the gradient attack's U-shaped split
UNLABELLED_MAX = 8  # longest prompt and trailing part without loss in the gradient attack


@dataclasses.dataclass(frozen=True)
class Condition:
    """How a device sends: wire format, `privacy.activation-noise-std`, or a DP noise multiplier."""

    wire: str = "float32"
    noise_std: float = 0.0
    noise_multiplier: float = 0.0
    activation_clip: float = 1.0
    gradient_clip: float = 1.0

    @property
    def label(self) -> str:
        if self.noise_multiplier:
            return f"dp z={self.noise_multiplier:g}"
        return self.wire if self.noise_std == 0 else f"{self.wire} + noise {self.noise_std:g}"

    def key(self) -> tuple:
        return self.wire, float(self.noise_std), float(self.noise_multiplier)


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much a report spends.

    heldout_fraction : share of the corpus's records in the public hold-out.
    max_blocks : hold-out blocks used (None: all of them).
    attack : the learned attacker's training.
    eval_blocks : evaluated blocks the learned attack is scored on (None: all).
    whitebox_blocks, whitebox_iterations : the white-box attack's blocks and Adam steps.
    gradient_blocks : evaluated (and, for calibration, public) blocks of the gradient attack.
    ppl_blocks : evaluated blocks whose perplexity is measured per split and condition.
    """

    heldout_fraction: float
    max_blocks: int | None
    attack: AttackSettings
    eval_blocks: int | None
    whitebox_blocks: int
    whitebox_iterations: int
    gradient_blocks: int
    ppl_blocks: int


# The first meter's: the default hold-out (2 % of the records: 20 k tokens of attacker's text),
# a decoder of one hidden layer of 128, the learned attack only (results/privacy/<model>.csv).
FIRST = Budget(heldout_fraction=0.02, max_blocks=None, attack=AttackSettings(),
               eval_blocks=None, whitebox_blocks=4, whitebox_iterations=200,
               gradient_blocks=16, ppl_blocks=8)
# 0.2 of Shakespeare's records: 6 400 blocks (205 k tokens) of attacker's text, 10x the first
# meter's; a decoder of two hidden layers of 256.
FULL = Budget(heldout_fraction=0.2, max_blocks=8000,
              attack=AttackSettings(width=256, depth=2, epochs=2, batch_tokens=1024),
              eval_blocks=256, whitebox_blocks=2, whitebox_iterations=100, gradient_blocks=16,
              ppl_blocks=8)
QUICK = Budget(heldout_fraction=0.02, max_blocks=100, attack=AttackSettings(width=32, epochs=2),
               eval_blocks=20, whitebox_blocks=2, whitebox_iterations=20, gradient_blocks=4,
               ppl_blocks=2)


def perturbation(wire: str, noise_std: float) -> Perturb | None:
    """How a device sends activations without DP: noise first (on the device), then the wire
    format."""
    if wire not in REPORT_WIRES:
        raise ValueError(f"wire must be one of {REPORT_WIRES}, got {wire!r}")
    if wire == "float32" and noise_std == 0:
        return None

    def perturb(hidden: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        hidden = add_noise(hidden, noise_std, generator)
        return int8_rows_decode(*int8_rows_encode(hidden)) if wire == "int8" else hidden

    return perturb


def release_noise(condition: Condition, scale: ReleaseScale, block_size: int
                  ) -> ReleaseNoise | None:
    """The DP release of `condition` at a split of public scale `scale` (None without DP)."""
    if not condition.noise_multiplier:
        return None
    privacy = PrivacySettings(epsilon=1.0, delta=1e-5,  # only the clip factors are read
                              activation_clip=condition.activation_clip,
                              gradient_clip=condition.gradient_clip)
    return ReleaseNoise.plan(scale, privacy, condition.noise_multiplier, block_size)


def sender(condition: Condition, release: ReleaseNoise | None) -> Perturb | None:
    """The activations as the condition sends them, with seeded noise (repeatable)."""
    if release is None:
        return perturbation(condition.wire, condition.noise_std)

    def perturb(hidden: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return privatize(hidden, release.activation_clip, release.activation_sigma,
                         release.centre, generator)

    return perturb


def loss_labels(ids: torch.Tensor, seed: int) -> torch.Tensor:
    """Labels with a prompt and a trailing part without loss (0-8 tokens each, seeded)."""
    generator = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, UNLABELLED_MAX + 1, (len(ids), 1), generator=generator)
    trailing = torch.randint(0, UNLABELLED_MAX + 1, (len(ids), 1), generator=generator)
    position = torch.arange(ids.shape[1])
    unlabelled = (position < prompt) | (position >= ids.shape[1] - trailing)
    return ids.masked_fill(unlabelled, IGNORE)


def returned_gradient(model: SplitModel, split: int, sent: torch.Tensor, mask: torch.Tensor,
                      labels: torch.Tensor, release: ReleaseNoise | None,
                      generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The server's body output on the activations it received, and the gradient a U-shaped
    device returns at it (clipped and noised under DP), in batches of 4 as training's loss."""
    tail_from = model.num_layers - DEVICE_TAIL_LAYERS
    bodies, grads = [], []
    for start in range(0, len(sent), 4):
        rows = slice(start, start + 4)
        with torch.no_grad():
            body = model.body(sent[rows], mask[rows], split, tail_from)
        body = body.detach().requires_grad_()
        model.tail(body, mask[rows], tail_from, labels[rows]).loss.backward()
        grad = body.grad.float().cpu()
        if release is not None:
            grad = privatize(grad, release.gradient_clip, release.gradient_sigma,
                             generator=generator)
        bodies.append(body.detach())
        grads.append(grad)
    return torch.cat(bodies), torch.cat(grads)


def measure(model_name: str, conditions: Sequence[Condition], budget: Budget,
            corpus: str = "shakespeare", out: Path | None = None,
            done: Sequence[dict] = (), splits: Sequence[int] | None = None,
            attacks: Sequence[str] = ATTACKS) -> list[dict]:
    """One row per (condition, split, attack): see the module docstring.

    Conditions run one after another over `splits` (default: every split), and with `out` the
    CSV is rewritten after every row, so a stopped run leaves whole curves of the conditions it
    finished; `done` (rows read back from such a CSV, of the same model and budget) are kept
    and not measured again.
    """
    data = DataSettings(corpus=corpus, heldout_fraction=budget.heldout_fraction)
    text = federated_text(data, model_name, num_partitions=1)
    ids = text.heldout.input_ids[:budget.max_blocks]
    mask = text.heldout.attention_mask[:budget.max_blocks]
    cut = int(TRAIN_SHARE * len(ids))
    evaluated = slice(cut, len(ids) if budget.eval_blocks is None
                      else min(len(ids), cut + budget.eval_blocks))
    eval_ids, eval_mask = ids[evaluated], mask[evaluated]
    train_tokens = ids[:cut][mask[:cut].bool()]
    eval_tokens = eval_ids[eval_mask.bool()]
    vocab = torch.unique(train_tokens)
    labels = eval_ids.masked_fill(eval_mask == 0, IGNORE)[:budget.ppl_blocks]
    model = SplitModel(model_name)
    every = range(1, model.num_layers)
    u_shaped = range(1, model.num_layers - DEVICE_TAIL_LAYERS)  # where the gradient attack runs
    chosen = sorted(set(splits)) if splits is not None else list(every)
    if not chosen or not set(chosen) <= set(every):
        raise ValueError(f"splits must be a non-empty subset of 1..{every.stop - 1}, "
                         f"got {list(splits or [])}")
    unknown = set(attacks) - set(ATTACKS)
    if unknown or not attacks:
        raise ValueError(f"attacks must be some of {ATTACKS}, got {list(attacks)}")
    fixed = {
        "model": model_name, "num_layers": model.num_layers,
        "coverage": round(float(torch.isin(eval_tokens, train_tokens).float().mean()), 4),
        "prior_accuracy": round(float((eval_tokens == torch.bincount(train_tokens).argmax())
                                      .float().mean()), 4),
        "train_tokens": len(train_tokens), "eval_tokens": len(eval_tokens),
        "epochs": budget.attack.epochs, "width": budget.attack.width}
    budget_columns = ("model", "train_tokens", "eval_tokens", "epochs", "width")
    for row in done:
        if any(str(row[c]) != str(fixed[c]) for c in budget_columns):
            raise ValueError(f"cannot resume: the existing rows were measured with another model "
                             f"or budget ({', '.join(f'{c} {row[c]}' for c in budget_columns)})")
    measured = {(r.get("attack") or "learned", r["wire"], float(r["noise_std"]),
                 float(r.get("noise_multiplier") or 0), int(r["split"])) for r in done}
    rows = list(done)
    block_size = ids.shape[1]
    public = slice(0, budget.gradient_blocks)  # the gradient attack's calibration text
    blocks = list(range(cut)) + list(range(evaluated.start, evaluated.stop))
    hidden = cached(out, lambda: activations(model, ids, mask, chosen, blocks),
                    (model_name, budget.heldout_fraction, len(ids), tuple(chosen), len(blocks)))
    scales: dict[int, ReleaseScale] = {}
    for condition in conditions:
        for split in chosen:
            todo = [a for a in attacks if (a, *condition.key(), split) not in measured
                    and (a != "gradient" or split in u_shaped)]
            if not todo:
                continue
            acts = hidden[split]
            if split not in scales:
                scales[split] = probe_scale(
                    model, split, {}, block_size, 4,
                    tail_from=model.num_layers - DEVICE_TAIL_LAYERS if split in u_shaped
                    else None)
            release = release_noise(condition, scales[split], block_size)
            perturb = sender(condition, release)
            # A draw the attacker never trained on.
            sent = acts[cut:]
            if perturb:
                sent = perturb(sent, torch.Generator().manual_seed(budget.attack.seed + 1))
            with torch.no_grad():
                loss = model.tail(sent[:budget.ppl_blocks], eval_mask[:budget.ppl_blocks],
                                  split, labels).loss
            common = {**fixed, "split": split, "wire": condition.wire,
                      "noise_std": condition.noise_std,
                      "noise_multiplier": condition.noise_multiplier,
                      "perplexity": round(float(loss.exp()), 3)}
            for attack in todo:
                started = time.perf_counter()
                scores = ATTACK_RUNS[attack](
                    model=model, split=split, acts=acts, cut=cut, ids=ids, mask=mask,
                    evaluated=evaluated, sent=sent, perturb=perturb, release=release,
                    vocab=vocab, budget=budget, public=public, tokenizer=text.tokenizer)
                row = {**common, "attack": attack, "rouge_l_f1": "", "loss_row_accuracy": "",
                       **{k: round(v, 4) for k, v in scores.items()},
                       "seconds": round(time.perf_counter() - started, 1)}
                rows.append({c: row[c] for c in COLUMNS})
                print(f"{condition.label:22s} split {split:2d} {attack:9s}: recovered "
                      f"{row['token_accuracy']:.3f} ppl {row['perplexity']:.1f} "
                      f"({row['seconds']:.0f} s)", flush=True)
                if out:
                    write_csv(rows, out)
    return rows


def cached(out: Path | None, compute: Callable[[], dict[int, torch.Tensor]], key: tuple
           ) -> dict[int, torch.Tensor]:
    """`compute()`, kept beside the report (``<out>.activations.pt``, not committed) so a
    resumed run does not recompute the activations (tens of CPU minutes for SmolLM2)."""
    if out is None:
        return compute()
    path = out.with_suffix(".activations.pt")
    if path.exists():
        saved = torch.load(path)
        if saved["key"] == key:
            return saved["hidden"]
    hidden = compute()
    torch.save({"key": key, "hidden": hidden}, path)
    return hidden


def activations(model: SplitModel, ids: torch.Tensor, mask: torch.Tensor,
                splits: Sequence[int], blocks: Sequence[int]) -> dict[int, torch.Tensor]:
    """The frozen head's output at each split for `blocks` (in that order), one pass up the
    layers (SmolLM2: 470 MB per split for 6 400 blocks of 32 tokens)."""
    rows = torch.tensor(blocks)
    hidden: dict[int, list[torch.Tensor]] = {}
    with torch.no_grad():
        for start in range(0, len(rows), 256):
            part = rows[start:start + 256]
            current = model.head(ids[part], mask[part], 1)
            for split in range(1, max(splits) + 1):
                if split > 1:
                    current = model.body(current, mask[part], split - 1, split)
                if split in splits:
                    hidden.setdefault(split, []).append(current.float().cpu())
    return {k: torch.cat(v) for k, v in hidden.items()}


def _learned(*, acts, cut, ids, mask, evaluated, sent, perturb, budget, tokenizer, **_):
    attack = train_inverter(acts[:cut], ids[:cut], mask[:cut], budget.attack, perturb)
    predicted = attack.predict(sent)
    eval_ids, eval_mask = ids[evaluated], mask[evaluated]
    return {"token_accuracy": token_accuracy(predicted, eval_ids, eval_mask),
            "rouge_l_f1": text_rouge_l(predicted, eval_ids, eval_mask, tokenizer)}


def _white_box(*, model, split, ids, mask, evaluated, sent, release, vocab, budget, tokenizer,
               **_):
    blocks = slice(evaluated.start, evaluated.start + budget.whitebox_blocks)
    received = Received(sent[:budget.whitebox_blocks], mask[blocks],
                        release.activation_clip if release else None,
                        release.centre if release else None)
    predicted = relaxed_inversion(model, split, received, vocab, budget.whitebox_iterations)
    return {"token_accuracy": token_accuracy(predicted, ids[blocks], mask[blocks]),
            "rouge_l_f1": text_rouge_l(predicted, ids[blocks], mask[blocks], tokenizer)}


def _gradient(*, model, split, acts, ids, mask, evaluated, sent, perturb, release, budget,
              public, **_):
    generator = torch.Generator().manual_seed(budget.attack.seed + 2)
    tail_from = model.num_layers - DEVICE_TAIL_LAYERS
    n = budget.gradient_blocks
    # The attacker simulates devices on its own text to set its threshold.
    own = acts[public] if perturb is None else perturb(acts[public], generator)
    own_labels = loss_labels(ids[public], seed=budget.attack.seed)
    _, own_grad = returned_gradient(model, split, own, mask[public], own_labels, release,
                                    generator)
    threshold = loss_row_threshold(own_grad, carries_loss(own_labels))
    blocks = slice(evaluated.start, evaluated.start + n)
    labels = loss_labels(ids[blocks], seed=budget.attack.seed + 1)
    body, grad = returned_gradient(model, split, sent[:n], mask[blocks], labels, release,
                                   generator)
    truth = carries_loss(labels)
    predicted = gradient_labels(model, tail_from, body, mask[blocks], grad)
    return {"loss_row_accuracy": balanced_accuracy(loss_rows(grad, threshold), truth),
            "token_accuracy": float((predicted[:, :-1] == ids[blocks][:, 1:])[truth[:, :-1]]
                                    .float().mean())}


def carries_loss(labels: torch.Tensor) -> torch.Tensor:
    """Row t carries a loss when its label, the token at t + 1, is not ignored."""
    shifted = torch.full_like(labels, IGNORE)
    shifted[:, :-1] = labels[:, 1:]
    return shifted != IGNORE


ATTACK_RUNS: dict[str, Callable[..., dict[str, float]]] = {
    "learned": _learned, "white-box": _white_box, "gradient": _gradient}


def plot(rows: list[dict], path: Path) -> Path:
    """Tokens recovered per attack and perplexity against the split, a line per condition."""
    attacks = [a for a in ATTACKS if any((r.get("attack") or "learned") == a for r in rows)]
    fig, axes = subplots(1, len(attacks) + 1)
    conditions = sorted({(r["wire"], float(r["noise_std"]), float(r.get("noise_multiplier")
                                                                    or 0)) for r in rows},
                        key=lambda c: (c[2], c[1], c[0]))
    for wire, noise_std, multiplier in conditions:
        condition = Condition(wire, noise_std, multiplier)
        mine = [r for r in rows if (r["wire"], float(r["noise_std"]),
                                    float(r.get("noise_multiplier") or 0)) == condition.key()]
        style = {"marker": ".", "label": condition.label,
                 "linestyle": "--" if wire == "int8" else ":" if multiplier else "-"}
        for ax, attack in zip(axes[0], attacks, strict=False):
            line = sorted((r for r in mine if (r.get("attack") or "learned") == attack),
                          key=lambda r: int(r["split"]))
            ax.plot([int(r["split"]) for r in line], [float(r["token_accuracy"]) for r in line],
                    **style)
        line = sorted({int(r["split"]): r for r in mine}.values(), key=lambda r: int(r["split"]))
        axes[0, -1].plot([int(r["split"]) for r in line],
                         [float(r["perplexity"]) for r in line], **style)
    first = rows[0]
    for ax, attack in zip(axes[0], attacks, strict=False):
        ax.set_title({"learned": "learned inversion", "white-box": "white-box (no training)",
                      "gradient": "returned gradients (labels)"}[attack])
        ax.set_ylim(0, 1)
        if attack != "gradient":
            ax.axhline(float(first["coverage"]), color="0.5", linestyle=":", linewidth=1)
    axes[0, 0].set_ylabel("tokens recovered")
    axes[0, -1].set_title("perplexity (frozen model)")
    perplexities = [float(r["perplexity"]) for r in rows]
    if max(perplexities) > 10 * min(perplexities):  # noise that wrecks the model: a log axis
        axes[0, -1].set_yscale("log")
    for ax in axes[0]:
        ax.set_xlabel("split (decoder layers on the device)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside right center")
    fig.suptitle(f"{first['model']}: what the server reads back per split "
                 f"({first['train_tokens']} attacker tokens, {first['epochs']} epochs, "
                 f"width {first['width']})")
    return save(fig, path)


def conditions_from(args: argparse.Namespace) -> list[Condition]:
    """float32, then each noise level, each DP multiplier, and int8 (--quick: float32 and one
    DP multiplier)."""
    noise = args.noise if args.noise is not None else [] if args.quick else NOISE_LEVELS
    dp = args.dp if args.dp is not None else [0.01] if args.quick else []
    return [Condition(), *(Condition(noise_std=s) for s in noise),
            *(Condition(noise_multiplier=z, activation_clip=args.activation_clip,
                        gradient_clip=args.gradient_clip) for z in dp),
            *([Condition(wire="int8")] if args.int8 and not args.quick else [])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=None,
                        help=f"presets or checkpoint folders, one report each (default "
                        f"{DEFAULT_MODEL}; tiny-llama with --quick)")
    parser.add_argument("--noise", type=float, nargs="*", default=None,
                        help="privacy.activation-noise-std levels to measure (default "
                        f"{' '.join(f'{n:g}' for n in NOISE_LEVELS)}; none with --quick)")
    parser.add_argument("--dp", type=float, nargs="*", default=None,
                        help="DP noise multipliers to measure (default none; 0.01 with --quick)")
    parser.add_argument("--activation-clip", type=float, default=1.0)
    parser.add_argument("--gradient-clip", type=float, default=1.0)
    parser.add_argument("--no-int8", dest="int8", action="store_false",
                        help="leave out the int8 wire format")
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=ATTACKS)
    parser.add_argument("--quick", action="store_true", help="tiny-llama, few blocks (CI)")
    parser.add_argument("--budget", choices=("full", "first"), default="full",
                        help="full: 10x the first meter's text and a larger decoder; first: the "
                        "first meter's budget (results/privacy/<model>.csv)")
    parser.add_argument("--out", type=Path, default=Path("results/privacy/attacks"))
    parser.add_argument("--plot-only", action="store_true", help="redraw from the CSV")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows of an existing CSV, measure only the missing ones")
    parser.add_argument("--splits", type=int, nargs="+", default=None,
                        help="measure only these splits (default: every split)")
    args = parser.parse_args(argv)
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
            budget = QUICK if args.quick else FIRST if args.budget == "first" else FULL
            rows = measure(model, conditions_from(args), budget,
                           out=csv_path, done=rows, splits=args.splits, attacks=args.attacks)
            print(f"{len(rows)} rows in {time.perf_counter() - started:.0f} s: {csv_path}")
        print(f"figure: {plot(rows, png_path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
