"""Training with the real apps under different allocators, and instability against split depth.

Every run is the ServerApp's `train` with the real ClientApp handlers and the stream transport,
driven in-process by `harness.inprocess.InProcessGrid` (one thread per device, no Ray: runs are
then bit-reproducible and fit 2 cores; the Flower runtime itself is covered by the e2e tests).

Two studies, same seeds for every configuration:

1. allocators `fp`, `rl-split` (when a policy is given), `fixed` at the shallowest and the
   deepest split, `random`: loss and perplexity per round, against the modelled wall clock and
   energy the allocator's system model charges for the rounds;
2. measured instability: the spread over seeds of the final training loss for fixed splits from
   shallow to deep, next to the seed-A stability bound 2 L^2 / (k (1 - a/Y)) the allocator
   minimises.

    python -m experiments.train_compare [--out results/train_compare] [--policy DIR/policy]
    python -m experiments.train_compare --quick       # tiny-llama, synthetic corpus (seconds)

Expect identical learning curves for every allocator with the same seed: split training is exact
(oracle 2), so the split only moves cost, never the trajectory.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from edgesplit.split_model import SplitModel
from experiments.plotting import save, subplots, write_csv
from harness.configs import tiny_run_config
from harness.inprocess import run_in_process

FULL = {"model.name": "smollm2-135m", "train.rounds": 3, "train.local-steps": 2,
        "train.batch-size": 4,
        "data.block-size": 32, "eval.batches": 1}
QUICK = tiny_run_config(num_server_rounds=2, local_steps=2, eval_batches=1, eval_every=1)


_RUNS: dict[str, list[dict]] = {}  # config -> rows: both studies share the fixed-split runs


def run_once(config: dict, clients: int) -> list[dict]:
    """One training run in-process (or its earlier result); returns its metrics rows."""
    key = json.dumps([config, clients], sort_keys=True)
    if key not in _RUNS:
        _RUNS[key] = _train(config, clients)
    return _RUNS[key]


def _train(config: dict, clients: int) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="edgesplit-compare-") as out:
        full = {**config, "run.output-dir": out, "run.name": "run", "train.min-clients": 2}
        return run_in_process(full, clients)[2]


def configurations(layers: int, policy: str) -> dict[str, dict]:
    """Allocator name -> run-config overrides."""
    found = {"fp": {"allocation.method": "fp"},
             "fixed-shallow": {"allocation.method": "fixed", "allocation.fixed-split": 1},
             "fixed-deep": {"allocation.method": "fixed", "allocation.fixed-split": layers - 1},
             "random": {"allocation.method": "random"}}
    if policy:
        found["rl-split"] = {"allocation.method": "rl-split", "allocation.rl-policy": policy}
    return found


def flatten(rows: list[dict], **keys) -> list[dict]:
    """Per-round CSV rows with the cumulative modelled delay and energy."""
    out, delay, energy = [], 0.0, 0.0
    for r in rows:
        delay += r.get("modelled_delay_s") or 0.0
        energy += r.get("modelled_energy_j") or 0.0
        out.append({**keys, "round": r["round"], "train_loss": r.get("train_loss"),
                    "val_ppl": r.get("val_ppl"), "heldout_ppl": r.get("heldout_ppl"),
                    "modelled_delay_s_cum": delay, "modelled_energy_j_cum": energy,
                    "mean_split": float(np.mean([c["split"] for c in r["clients"]])),
                    "time_round_s": r["time_round_s"]})
    return out


def stability_bound(split: float, layers: int, samples: float) -> float:
    """The seed-A penalty per client, 2 L^2 / (k (1 - a / Y)) with L = 1."""
    return 2.0 / (samples * (1.0 - split / layers))


def plot_allocators(rows: list[dict], path: Path) -> None:
    fig, axes = subplots(1, 3)
    first_seed = min(r["seed"] for r in rows)
    for index, name in enumerate(dict.fromkeys(r["allocator"] for r in rows)):
        mine = [r for r in rows if r["allocator"] == name and r["seed"] == first_seed]
        # Curves coincide by construction (exact split training): offset markers, not colours.
        style = {"color": f"C{index}", "marker": "os^vD"[index % 5], "label": name,
                 "markersize": 7 - index, "alpha": 0.8}
        axes[0, 0].plot([r["round"] for r in mine], [r["train_loss"] for r in mine], **style)
        axes[0, 1].plot([r["modelled_delay_s_cum"] for r in mine],
                        [r["heldout_ppl"] for r in mine], **style)
        axes[0, 2].plot([r["modelled_energy_j_cum"] for r in mine],
                        [r["heldout_ppl"] for r in mine], **style)
    axes[0, 0].set(xlabel="round", ylabel="training loss", title=f"seed {first_seed}")
    axes[0, 1].set(xlabel="modelled wall clock (s, cumulative)", ylabel="held-out perplexity")
    axes[0, 2].set(xlabel="modelled energy (J, cumulative)", ylabel="held-out perplexity")
    axes[0, 0].legend()
    save(fig, path)


def plot_instability(rows: list[dict], path: Path) -> None:
    fig, axes = subplots(1, 1, panel=(4.2, 2.8))
    ax = axes[0, 0]
    splits = [r["split"] for r in rows]
    ax.plot(splits, [r["final_loss_std"] for r in rows], marker="o", label="measured std")
    ax.set(xlabel="split (layers on the device)", ylabel="std of final loss over seeds",
           ylim=(0, None))
    twin = ax.twinx()
    twin.plot(splits, [r["stability_bound"] for r in rows], color="C3", linestyle="--",
              marker="s", label="seed-A bound")
    twin.set_ylabel("stability bound (per client)")
    fig.legend(loc="upper left")
    save(fig, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/train_compare"))
    parser.add_argument("--seeds", type=int, nargs="+", help="default: 0 1 2 (quick: 0 1)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--policy", default="", help="rl-split policy folder (split_rl --out)")
    parser.add_argument("--quick", action="store_true", help="tiny-llama on a synthetic corpus")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    args.seeds = args.seeds or ([0, 1] if args.quick else [0, 1, 2])
    layers = SplitModel(base["model.name"]).num_layers
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    per_round = []
    for name, overrides in configurations(layers, args.policy).items():
        for seed in args.seeds:
            rows = run_once({**base, **overrides, "run.seed": seed}, args.clients)
            per_round += flatten(rows, allocator=name, seed=seed)
            print(f"{name} seed {seed}: loss {[round(r['train_loss'], 4) for r in rows]}",
                  flush=True)
    write_csv(per_round, args.out / "allocators.csv")
    plot_allocators(per_round, args.out / "allocators.png")

    depths = sorted({1, layers // 2, layers - 1})
    instability = []
    for split in depths:
        finals, samples = [], []
        for seed in args.seeds:
            rows = run_once({**base, "allocation.method": "fixed",
                             "allocation.fixed-split": split, "run.seed": seed}, args.clients)
            finals.append(rows[-1]["train_loss"])
            samples += [c["examples"] for c in rows[-1]["clients"]]
        instability.append({"split": split, "final_loss_mean": float(np.mean(finals)),
                            "final_loss_std": float(np.std(finals)),
                            "stability_bound": stability_bound(split, layers, np.mean(samples))})
        print(f"split {split}: final loss {np.mean(finals):.4f} +- {np.std(finals):.4f}",
              flush=True)
    write_csv(instability, args.out / "instability.csv")
    plot_instability(instability, args.out / "instability.png")
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
