"""Benchmark: the server's tail step for a group of clients, batched vs one client after another.

Every client of a group is cut at the same split and sends a batch of real text activations (its
head's output); the sequential variant runs `TailSession.step` per client, the batched variant
`batched_tail_step` once for the group. Both variants have their own sessions, start from the same
adapter and see the same batches; they are timed interleaved (alternating which goes first) so
that machine noise hits both alike, and their adapters are compared at the end (they should be
bit-identical). Writes results/bench_tails/bench_tails.csv and bench_tails.png.

    python -m experiments.bench_tails [--models tiny-llama smollm2-135m] [--clients 1 4 16]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from edgesplit.data import federated_text
from edgesplit.protocol import RoundTask
from edgesplit.settings import Settings
from edgesplit.split_model import SplitModel
from experiments.plotting import save, subplots, write_csv
from strategies.batched_tail import serve_requests
from strategies.tail import TailSession

SPLITS = {"smollm2-135m": 4}  # as in the main job; tiny models (4 layers) split at 1


def bench_group(model: SplitModel, settings: Settings, split: int, clients: int,
                repeats: int, budget_s: float) -> dict:
    """Median seconds per step of both variants for `clients` clients; at least 2 repeats, more
    up to `repeats` while the group has used less than `budget_s`."""
    data = federated_text(settings.data, settings.model_name, 1).client(0).train
    with torch.no_grad():
        acts = {}
        for node in range(clients):
            batch = data.batch(node, settings.batch_size)
            hidden = model.head(batch["input_ids"], batch["attention_mask"], split)
            acts[node] = {"hidden": hidden, "attention_mask": batch["attention_mask"],
                          "labels": batch["labels"]}
    task = RoundTask(server_round=1, split=split, local_steps=repeats,
                     batch_size=settings.batch_size, learning_rate=settings.learning_rate,
                     optimizer=settings.optimizer, seed=settings.seed)
    start = model.lora_state(range(split, model.num_layers))
    sessions = {v: {n: TailSession(model, start, task) for n in range(clients)}
                for v in ("sequential", "batched")}
    steps = {"sequential": lambda: [s.step(acts[n]) for n, s in sessions["sequential"].items()],
             "batched": lambda: serve_requests(sessions["batched"], acts)}
    times: dict[str, list[float]] = {v: [] for v in steps}
    began = time.perf_counter()
    for i in range(repeats):
        if i >= 2 and time.perf_counter() - began > budget_s:
            break
        for variant in (list(steps) if i % 2 == 0 else list(reversed(steps))):
            tic = time.perf_counter()
            steps[variant]()
            times[variant].append(time.perf_counter() - tic)
    diff = max((sessions["batched"][n].params[k] - p).abs().max().item()
               for n, s in sessions["sequential"].items() for k, p in s.params.items())
    medians = {v: statistics.median(t) for v, t in times.items()}
    return {"model": settings.model_name, "split": split, "clients": clients,
            "batch": settings.batch_size, "tokens": settings.block_size,
            "sequential_s": medians["sequential"], "batched_s": medians["batched"],
            "ratio": medians["batched"] / medians["sequential"],
            "repeats": len(times["batched"]), "max_adapter_diff": diff}


def plot(rows: list[dict], path: Path) -> None:
    """Step time of both variants (left) and their ratio (right) against the group size."""
    fig, axes = subplots(1, 2)
    ax_time, ax_ratio = axes[0]
    for i, name in enumerate(dict.fromkeys(r["model"] for r in rows)):
        mine = [r for r in rows if r["model"] == name]
        clients = [r["clients"] for r in mine]
        ax_time.plot(clients, [r["sequential_s"] for r in mine], f"C{i}--o",
                     label=f"{name} sequential")
        ax_time.plot(clients, [r["batched_s"] for r in mine], f"C{i}-s", label=f"{name} batched")
        ax_ratio.plot(clients, [r["ratio"] for r in mine], f"C{i}-s", label=name)
    ax_time.set(xscale="log", yscale="log", xlabel="clients at one split",
                ylabel="server tail time per step (s)")
    ax_ratio.axhline(1.0, color="0.5", lw=0.8)
    ax_ratio.set(xscale="log", xlabel="clients at one split", ylabel="batched / sequential")
    for ax in (ax_time, ax_ratio):
        ax.set_xticks(clients, [str(c) for c in clients])
        ax.legend()
    save(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny-llama", "smollm2-135m"])
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--corpus", default="shakespeare")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per group (max)")
    parser.add_argument("--budget-s", type=float, default=40.0,
                        help="stop repeating a group after this long (2 repeats at least)")
    # One thread: on a shared 2-core machine, two OpenMP threads spin against each other.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="results/bench_tails")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for name in args.models:
        settings = Settings(model_name=name, corpus=args.corpus, batch_size=args.batch_size,
                            block_size=args.block_size)
        model = SplitModel(name, settings.lora)
        split = SPLITS.get(name, 1)
        bench_group(model, settings, split, 1, repeats=1, budget_s=0)  # warm-up
        for clients in args.clients:
            row = bench_group(model, settings, split, clients, args.repeats, args.budget_s)
            rows.append(row)
            print(f"{name:>14} {clients:3d} clients: sequential {row['sequential_s'] * 1e3:8.1f}"
                  f" ms, batched {row['batched_s'] * 1e3:8.1f} ms, ratio {row['ratio']:.3f}"
                  f" ({row['repeats']} steps, max adapter diff {row['max_adapter_diff']:.1e})",
                  flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "bench_tails.csv")
    plot(rows, out / "bench_tails.png")


if __name__ == "__main__":
    main()
