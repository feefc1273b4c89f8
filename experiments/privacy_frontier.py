"""The privacy frontier: what differential privacy of the frames costs, against what it stops.

For each split and each `privacy.epsilon` (and off), one training run of the real ServerApp
and ClientApp code in-process (`harness.inprocess`, the stream transport, a U-shaped split with
`privacy.device-tail-layers = 1`, every client at the same split), then the final adapter's
perplexity on the server's held-out blocks; and, from the privacy meter (`experiments.privacy`, same
model, same splits), every attack's token recovery under the noise multiplier the devices
planned for that epsilon. A point of the frontier: the strongest attack's recovery against the
held-out perplexity's cost over the same training without the defence.

The devices' noise multiplier comes from their own accountant (`clients.privacy`): each block
is released about twice in a run this size (activations and returned gradient, once per
block: 4 clients x 3 rounds x 4 steps x 4 blocks out of about 8 000 per client), so the
epsilons that leave the model working are large.

Writes ``<out>/training.csv`` (a row per run), ``<out>/<model>.csv`` (the meter's rows),
``<out>/frontier.csv`` (a row per split and epsilon) and ``<out>/frontier.png``; each part
resumes from its CSV. Usage::

    python -m experiments.privacy_frontier                 # SmolLM2-135M, splits 1 4 15 (hours)
    python -m experiments.privacy_frontier --quick --out /tmp/frontier   # tiny-llama, minutes
"""

from __future__ import annotations

import argparse
import csv
import gc
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from edgesplit.blocks import IGNORE
from edgesplit.data import federated_text
from edgesplit.memory import release_free_memory
from edgesplit.privacy_report import ATTACKS
from edgesplit.settings import DataSettings
from edgesplit.split_model import SplitModel
from experiments import privacy
from experiments.plotting import save, subplots, write_csv
from harness.inprocess import run_in_process

#: The frontier's goal (issue 25): every attack at most this share of tokens ...
GOAL_RECOVERY = 0.20
#: ... at most this held-out perplexity cost over the same training without the defence.
GOAL_PPL_COST = 0.25


@dataclass(frozen=True)
class Plan:
    """One frontier: the model, splits, epsilons and training budget."""

    model: str
    splits: tuple[int, ...]
    epsilons: tuple[float, ...]  # 0 = off
    clients: int
    rounds: int
    local_steps: int
    batch_size: int
    eval_blocks: int  # held-out blocks the final adapters are scored on
    delta: float = 1e-5
    corpus: str = "shakespeare"


FULL = Plan("smollm2-135m", (1, 4, 15), (0.0, 1e6, 1e5, 1e4, 1e3, 8.0), clients=4, rounds=3,
            local_steps=4, batch_size=4, eval_blocks=64)
QUICK = Plan("tiny-llama", (1, 2), (0.0, 1e4), clients=2, rounds=1, local_steps=2,
             batch_size=4, eval_blocks=8)


def run_config(plan: Plan, split: int, epsilon: float, folder: str) -> dict:
    """The run config of one frontier point (everything else at the defaults)."""
    return {"model.name": plan.model, "data.corpus": plan.corpus, "privacy.device-tail-layers": 1,
            "allocation.method": "fixed", "allocation.fixed-split": split,
            "train.rounds": plan.rounds,
            "train.local-steps": plan.local_steps, "train.batch-size": plan.batch_size,
            "train.min-clients": plan.clients, "allocation.calibration": "none", "eval.every": 0,
            "eval.sample-prompts": "", "compute.server-device": "cpu", "compute.server-threads": 1,
            "compute.client-threads": 1, "privacy.epsilon": epsilon, "privacy.delta": plan.delta,
            "run.output-dir": folder, "run.name": f"split{split}-eps{epsilon:g}"}


def heldout_perplexity(model: SplitModel, lora: dict[str, torch.Tensor], ids: torch.Tensor,
                       mask: torch.Tensor) -> float:
    """Token-weighted perplexity of the whole model with `lora` on held-out blocks."""
    total, tokens = 0.0, 0
    labels = ids.masked_fill(mask == 0, IGNORE)
    with torch.no_grad(), model.using_lora(lora):
        for start in range(0, len(ids), 8):
            rows = slice(start, start + 8)
            count = int((labels[rows, 1:] != IGNORE).sum())
            total += float(model.full(ids[rows], mask[rows], labels[rows]).loss) * count
            tokens += count
    return math.exp(total / tokens)


def train(plan: Plan, out: Path) -> list[dict]:
    """A training run per (split, epsilon), resumed from ``out/training.csv``."""
    path = out / "training.csv"
    rows = list(csv.DictReader(path.open())) if path.exists() else []
    done = {(int(r["split"]), float(r["epsilon"])) for r in rows}
    heldout = federated_text(DataSettings(corpus=plan.corpus), plan.model, 1).heldout
    ids, mask = heldout.input_ids[:plan.eval_blocks], heldout.attention_mask[:plan.eval_blocks]
    scorer = SplitModel(plan.model)
    base_ppl = heldout_perplexity(scorer, {}, ids, mask)
    for split in plan.splits:
        for epsilon in plan.epsilons:
            if (split, epsilon) in done:
                continue
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as folder:
                _, final, metrics = run_in_process(run_config(plan, split, epsilon, folder),
                                                   plan.clients)
            gc.collect()  # the run's server model goes before the next one loads
            release_free_memory()
            clients = [c for m in metrics for c in m["clients"]]
            completed = sum(m["completed"] for m in metrics)
            if completed != plan.clients * plan.rounds:
                raise RuntimeError(f"split {split}, epsilon {epsilon:g}: {completed} of "
                                   f"{plan.clients * plan.rounds} client rounds completed: "
                                   f"{[m['failures'] for m in metrics]}")
            row = {"model": plan.model, "split": split, "epsilon": epsilon,
                   "noise_multiplier": min((c["privacy_noise_multiplier"] for c in clients
                                            if "privacy_noise_multiplier" in c), default=0.0),
                   "epsilon_spent": max((c["privacy_epsilon"] for c in clients
                                         if "privacy_epsilon" in c), default=0.0),
                   "heldout_ppl": round(heldout_perplexity(scorer, final, ids, mask), 4),
                   "base_ppl": round(base_ppl, 4),
                   "train_loss": round(metrics[-1]["train_loss"], 4),
                   "clients": plan.clients, "rounds": plan.rounds,
                   "local_steps": plan.local_steps, "batch_size": plan.batch_size,
                   "eval_tokens": int(mask[:, 1:].sum()),
                   "seconds": round(time.perf_counter() - started, 1)}
            rows.append(row)
            write_csv(rows, path)
            print(f"split {split:2d} epsilon {epsilon:g}: z {row['noise_multiplier']:.4g}, "
                  f"spent {row['epsilon_spent']:.4g}, held-out ppl {row['heldout_ppl']:.2f} "
                  f"(untrained {base_ppl:.2f}), {row['seconds']:.0f} s", flush=True)
    return rows


def frontier(training: list[dict], leakage: list[dict]) -> list[dict]:
    """Join each run with the meter's rows at its split and noise multiplier."""
    off = {int(r["split"]): float(r["heldout_ppl"]) for r in training
           if float(r["epsilon"]) == 0}
    rows = []
    for run in training:
        split, multiplier = int(run["split"]), float(run["noise_multiplier"])
        found = {r["attack"]: float(r["token_accuracy"]) for r in leakage
                 if int(r["split"]) == split and r["wire"] == "float32"
                 and float(r["noise_std"]) == 0 and float(r["noise_multiplier"]) == multiplier}
        loss_rows = [float(r["loss_row_accuracy"]) for r in leakage
                     if r["attack"] == "gradient" and int(r["split"]) == split
                     and float(r["noise_multiplier"]) == multiplier
                     and float(r["noise_std"]) == 0 and r["wire"] == "float32"]
        ppl = float(run["heldout_ppl"])
        rows.append({
            "model": run["model"], "split": split, "epsilon": float(run["epsilon"]),
            "noise_multiplier": multiplier, "epsilon_spent": float(run["epsilon_spent"]),
            **{f"{a.replace('-', '_')}_recovery": found.get(a, "") for a in ATTACKS},
            "strongest_attack": max(found, key=found.get) if found else "",
            "strongest_recovery": max(found.values()) if found else "",
            "loss_row_accuracy": loss_rows[0] if loss_rows else "",
            "heldout_ppl": ppl, "base_ppl": float(run["base_ppl"]),
            "ppl_cost": round(ppl / off[split] - 1, 4) if split in off else "",
            "goal_met": bool(found) and split in off
            and max(found.values()) <= GOAL_RECOVERY and ppl / off[split] - 1 <= GOAL_PPL_COST})
    return rows


def plot(rows: list[dict], path: Path) -> Path:
    """Strongest recovery against perplexity cost, a line per split, points labelled by epsilon;
    the goal's corner shaded."""
    fig, axes = subplots(1, 1, panel=(5.5, 4.0))
    ax = axes[0, 0]
    for split in sorted({r["split"] for r in rows}):
        mine = [r for r in rows if r["split"] == split and r["strongest_recovery"] != ""]
        mine.sort(key=lambda r: (r["epsilon"] == 0, r["epsilon"]), reverse=True)
        ax.plot([max(r["ppl_cost"], 1e-3) for r in mine],
                [r["strongest_recovery"] for r in mine], marker="o", label=f"split {split}")
        for r in mine:
            ax.annotate("off" if r["epsilon"] == 0 else f"ε={r['epsilon']:g}",
                        (max(r["ppl_cost"], 1e-3), r["strongest_recovery"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
    ax.axvspan(1e-3, GOAL_PPL_COST, ymax=GOAL_RECOVERY, color="tab:green", alpha=0.12,
               label="goal")
    ax.set_xscale("log")
    ax.set_ylim(0, 1)
    ax.set_xlabel("held-out perplexity cost over no defence (log; 'off' drawn at 0.001)")
    ax.set_ylabel("tokens recovered by the strongest attack")
    ax.legend(fontsize=7)
    ax.set_title(f"{rows[0]['model']}: DP frames, U-shaped split", fontsize=9)
    return save(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny-llama, two splits (CI)")
    parser.add_argument("--out", type=Path, default=Path("results/privacy/frontier"))
    parser.add_argument("--plot-only", action="store_true", help="redraw from the CSVs")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    meter_csv = args.out / f"{plan.model}.csv"
    if args.plot_only:
        training = list(csv.DictReader((args.out / "training.csv").open()))
        leakage = list(csv.DictReader(meter_csv.open()))
    else:
        torch.set_num_threads(1)  # client threads share the process (and a busy machine)
        training = train(plan, args.out)
        multipliers = sorted({float(r["noise_multiplier"]) for r in training} - {0.0})
        conditions = [privacy.Condition(), *(privacy.Condition(noise_multiplier=z)
                                             for z in multipliers)]
        done = list(csv.DictReader(meter_csv.open())) if meter_csv.exists() else []
        budget = privacy.QUICK if args.quick else privacy.FULL
        leakage = privacy.measure(plan.model, conditions, budget, corpus=plan.corpus,
                                  out=meter_csv, done=done, splits=plan.splits)
    rows = frontier(training, [{**r, "attack": r.get("attack") or "learned"} for r in leakage])
    write_csv(rows, args.out / "frontier.csv")
    print(f"frontier: {args.out / 'frontier.csv'}; figure: {plot(rows, args.out / 'frontier.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
