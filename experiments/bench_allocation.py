"""Benchmark: the allocator's optimiser (fp) on each cost model at 10 to 1000 clients, CPU
seconds and certified gap; and the paper model's fp from 100 to 50,000 users, cold and
warm-started.

Runs on one core (BLAS/OpenMP threads pinned to 1 before numpy loads); time it under
``flock /tmp/edgesplit-clock.lock`` on a shared machine.

``--part models`` (issue 27): per cost model and size, ``--repeats`` seeded scenarios solved by
fp at its defaults (tolerance 1e-4, budget 10 CPU s), CPU and wall seconds and the gap fp
certifies (NaN where it certifies none: the paper model's fp is a heuristic). The makespan
scenarios are the built-in job's shape (SmolLM2-135M, 30 layers: 29 splits; batch 4 x 32
tokens, float32 on the wire), catalogue devices, one `cpu-epyc-9654` server (a slow one, so
that many optima train layers on devices) and time weighted 10x energy and stability;
"shares" is the sharing server, "fifo" the first-come-first-served one with start offsets
uniform over 60 s and 80 local steps (the testbed's); "fifo, 1 s" is the same with a 1 s
budget. The paper model is seed A's (`random_scenario`, 10 servers). Each row also has the
objective of edge-only (every client at split 1, the rest optimised) so the table shows
whether the instances are trivial. Writes ``models.csv`` (one row per solve),
``models_summary.csv`` (medians, the largest gap) and ``models.png`` to ``--out``.

``--part paper-warm``: the paper model from 100 to 50,000 users on 10 servers, a cold solve,
then the same scenario after one round of 0.1 dB gain drift solved cold and warm-started from
the first solution; peak memory is tracemalloc's (one traced run per size). Writes
``bench_allocation.csv``, ``summary.csv`` and ``bench_allocation.png``. Usage::

    flock /tmp/edgesplit-clock.lock python -m experiments.bench_allocation [--quick]
        [--part models|paper-warm|all] [--out results/bench_allocation]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # must precede the numpy import to take effect

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from allocation import ModelCost, Weights, catalogue_scenario, random_scenario, solve  # noqa: E402

SIZES = (100, 1000, 10_000, 50_000)
QUICK_SIZES = (100, 1000)
N_SERVERS = 10
DRIFT_DB = 0.1  # std of each link's gain change between the two rounds
LARGE = 50_000  # from here on, one scenario per size

#: (cost model, label, sizes, quick sizes, fp options) of the models part.
MODEL_CASES = (
    ("paper", "paper", (10, 100, 1000, 10_000, 50_000), (10, 100), {}),
    ("shares", "shares", (10, 100, 1000), (10, 100), {}),
    ("fifo", "fifo", (8, 10, 100, 1000), (8, 10), {}),
    ("fifo", "fifo, 1 s", (8,), (8,), {"time_limit_s": 1.0}),
)
#: The built-in job's shape (SmolLM2-135M-Instruct, batch 4 x 32 tokens, float32 activations).
SMOLLM2 = ModelCost(layers=30, hidden_size=576, batch_size=4, seq_len=32, activation_bits=32,
                    vocab_size=49152, attention_heads=9)
MAKESPAN_SERVER = "cpu-epyc-9654"
MAKESPAN_WEIGHTS = Weights(energy=0.1, stability=0.1)
#: "fifo": clients start uniformly over this many seconds, with this many local steps.
START_SPREAD_S, LOCAL_STEPS = 60.0, 80


def makespan_scenario(model: str, n_users: int, seed: int):
    """A makespan-model scenario of the models part (module docstring)."""
    sc = catalogue_scenario(n_users, SMOLLM2, seed=seed, servers=(MAKESPAN_SERVER,),
                            weights=MAKESPAN_WEIGHTS)
    if model == "fifo":
        start = np.random.default_rng([seed, 7]).uniform(0.0, START_SPREAD_S, n_users)
        sc = dataclasses.replace(sc, queue="fifo", start_s=start, local_steps=LOCAL_STEPS)
    return sc


def model_row(model: str, label: str, n_users: int, seed: int, options: dict) -> dict:
    """One fp solve of the models part, timed, with edge-only beside it."""
    sc = (random_scenario(n_users, N_SERVERS, seed=seed) if model == "paper"
          else makespan_scenario(model, n_users, seed))
    sc.reference  # noqa: B018  (built once, outside the timings: the scenario's own cost)
    alloc, wall, cpu = timed(sc, seed, **options)
    edge = solve(sc, "edge-only", **({"seed": seed} if model == "paper" else {}))
    return {"model": label, "n_users": n_users, "splits": sc.model.split_layers - 1,
            "repeat": seed, "cpu_seconds": cpu, "seconds": wall,
            "gap": getattr(alloc, "gap", float("nan")),
            "search": getattr(alloc, "search", "no bound"), "objective": alloc.objective,
            "edge_only_objective": edge.objective,
            "distinct_splits": int(np.unique(alloc.split).size),
            "mean_split": float(np.mean(alloc.split)), "load_1min": os.getloadavg()[0]}


def bench_models(quick: bool, repeats: int) -> list[dict]:
    rows = []
    print(f"{'model':>10} {'users':>6} {'cpu s':>7} {'wall s':>7} {'gap':>9} {'vs edge':>8}  "
          "search", flush=True)
    for model, label, sizes, quick_sizes, options in MODEL_CASES:
        for n in quick_sizes if quick else sizes:
            for seed in range(1 if quick or n >= LARGE else repeats):
                r = model_row(model, label, n, seed, options)
                rows.append(r)
                print(f"{label:>10} {n:>6} {r['cpu_seconds']:>7.3f} {r['seconds']:>7.2f} "
                      f"{r['gap']:>9.2e} {r['objective'] / r['edge_only_objective']:>8.4f}  "
                      f"{r['search']}", flush=True)
    return rows


def summarise_models(rows: list[dict]) -> list[dict]:
    """Per (model, users): median CPU and wall seconds, median and largest gap (NaN: none
    certified), how many solves ended exact, and fp's objective over edge-only's."""
    out = []
    keys = list(dict.fromkeys((r["model"], r["n_users"]) for r in rows))
    for model, n in keys:
        part = [r for r in rows if (r["model"], r["n_users"]) == (model, n)]
        gaps = [r["gap"] for r in part]
        out.append({
            "model": model, "n_users": n, "splits": part[0]["splits"], "repeats": len(part),
            "cpu_seconds": float(np.median([r["cpu_seconds"] for r in part])),
            "max_cpu_seconds": max(r["cpu_seconds"] for r in part),
            "seconds": float(np.median([r["seconds"] for r in part])),
            "gap": float(np.median(gaps)), "max_gap": float(np.max(gaps)),
            "exact": sum(r["search"].endswith("exact") for r in part),
            "fp_over_edge_only": float(np.median([r["objective"] / r["edge_only_objective"]
                                                  for r in part])),
            "load_1min": float(np.median([r["load_1min"] for r in part]))})
    return out


def plot_models(summary: list[dict], path: Path) -> None:
    from experiments.plotting import save, subplots

    fig, axes = subplots(1, 2, panel=(3.6, 2.8))
    for i, model in enumerate(dict.fromkeys(r["model"] for r in summary)):
        part = [r for r in summary if r["model"] == model]
        users = [r["n_users"] for r in part]
        axes[0, 0].plot(users, [r["cpu_seconds"] for r in part], "o-", color=f"C{i}",
                        label=model)
        gaps = [r["max_gap"] for r in part]
        if np.isfinite(gaps).any():
            axes[0, 1].plot(users, np.maximum(gaps, 1e-6), "o-", color=f"C{i}", label=model)
    axes[0, 0].axhline(1.0, color="k", lw=0.8, ls=":", label="goal: 1 s")
    axes[0, 1].axhline(0.01, color="k", lw=0.8, ls=":", label="goal: 1%")
    axes[0, 0].set(xscale="log", yscale="log", xlabel="clients", ylabel="CPU s (median)",
                   title="fp's time, one core")
    axes[0, 1].set(xscale="log", yscale="log", xlabel="clients",
                   ylabel="certified gap (largest; floor 1e-6)", title="fp's certificate")
    for ax in axes.ravel():
        ax.legend(fontsize=7)
    save(fig, path)


# --- the paper model from 100 to 50,000 users, cold and warm -------------------------------


def drifted(scenario, seed: int, db: float = DRIFT_DB):
    """The next round's scenario: every link gain moved by ``db`` dB (std)."""
    rng = np.random.default_rng([seed, 1])
    return dataclasses.replace(scenario, gain=scenario.gain * 10.0 ** (
        rng.normal(0.0, db / 10.0, scenario.gain.shape)))


def timed(scenario, seed: int, **options):
    """(allocation, wall s, CPU s) of one fp solve."""
    start, cpu_start = time.perf_counter(), time.process_time()
    alloc = solve(scenario, "fp", seed=seed, **options)
    return alloc, time.perf_counter() - start, time.process_time() - cpu_start


def peak_mb(scenario, seed: int, **options) -> float:
    """tracemalloc's peak during one fp solve, in MB (1e6 bytes)."""
    tracemalloc.start()
    try:
        solve(scenario, "fp", seed=seed, **options)
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def bench(n_users: int, repeats: int) -> list[dict]:
    """Cold and warm rows for ``repeats`` seeded scenarios of ``n_users`` users (one from
    ``LARGE`` users on: each solve there takes seconds)."""
    rows = []
    for rep in range(1 if n_users >= LARGE else repeats):
        first = random_scenario(n_users, N_SERVERS, seed=rep)
        first.reference  # noqa: B018  (built once, outside the timings: the scenario's own cost)
        previous, *_ = timed(first, rep)
        second = drifted(first, rep)
        second.reference  # noqa: B018
        for start, options in (("cold", {}), ("warm", {"warm_start": previous})):
            alloc, wall, cpu = timed(second, rep, **options)
            rows.append({
                "n_users": n_users, "n_servers": N_SERVERS, "repeat": rep, "start": start,
                "seconds": wall, "cpu_seconds": cpu,
                "peak_mb": peak_mb(second, rep, **options) if rep == 0 else float("nan"),
                "iterations": alloc.iterations, "evaluations": alloc.evaluations,
                "objective": alloc.objective, "mean_split": float(np.mean(alloc.split)),
                "load_1min": os.getloadavg()[0]})
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Median per (users, start)."""
    out = []
    for n in sorted({r["n_users"] for r in rows}):
        for start in ("cold", "warm"):
            part = [r for r in rows if r["n_users"] == n and r["start"] == start]
            med = {k: float(np.nanmedian([r[k] for r in part]))
                   for k in ("seconds", "cpu_seconds", "peak_mb", "iterations", "evaluations",
                             "objective", "load_1min")}
            out.append({"n_users": n, "n_servers": N_SERVERS, "start": start,
                        "repeats": len(part), **med,
                        "max_seconds": max(r["seconds"] for r in part),
                        "max_cpu_seconds": max(r["cpu_seconds"] for r in part)})
    return out


def plot(summary: list[dict], path: Path) -> None:
    from experiments.plotting import save, subplots

    fig, axes = subplots(1, 2, panel=(3.6, 2.8))
    for start, color in (("cold", "C0"), ("warm", "C1")):
        part = [r for r in summary if r["start"] == start]
        users = [r["n_users"] for r in part]
        axes[0, 0].plot(users, [r["cpu_seconds"] for r in part], "o-", color=color,
                        label=f"{start}, CPU")
        axes[0, 0].plot(users, [r["seconds"] for r in part], "x--", color=color,
                        label=f"{start}, wall")
        axes[0, 1].plot(users, [r["peak_mb"] for r in part], "o-", color=color, label=start)
    axes[0, 0].plot([10_000, 50_000], [2.0, 10.0], "k_", markersize=14, label="goal")
    axes[0, 0].set(xscale="log", yscale="log", xlabel="users (10 servers)", ylabel="seconds",
                   title="fp solve time, one core")
    axes[0, 1].set(xscale="log", yscale="log", xlabel="users (10 servers)",
                   ylabel="peak MB (tracemalloc)", title="fp peak memory")
    for ax in axes.ravel():
        ax.legend(fontsize=7)
    save(fig, path)


def bench_paper_warm(quick: bool, repeats: int, sizes, out: Path) -> list[dict]:
    from experiments.plotting import write_csv

    solve(random_scenario(10, N_SERVERS, seed=0), "fp")  # warm-up: imports and tables
    rows = []
    # Wall time is what the round waits for; CPU time is robust to other load on the machine.
    print(f"{'users':>6} {'start':>5} {'wall s':>7} {'cpu s':>6} {'peak MB':>8} {'iters':>5} "
          f"{'evals':>5} {'objective':>10} {'load':>5}", flush=True)
    for n_users in sizes or (QUICK_SIZES if quick else SIZES):
        part = bench(n_users, 1 if quick else repeats)
        rows += part
        for r in summarise(part):
            print(f"{n_users:>6} {r['start']:>5} {r['seconds']:>7.3f} {r['cpu_seconds']:>6.3f} "
                  f"{r['peak_mb']:>8.1f} {r['iterations']:>5.0f} {r['evaluations']:>5.0f} "
                  f"{r['objective']:>10.6f} {r['load_1min']:>5.1f}", flush=True)
    write_csv(rows, out / "bench_allocation.csv")
    summary = summarise(rows)
    write_csv(summary, out / "summary.csv")
    plot(summary, out / "bench_allocation.png")
    print(f"wrote {out}/bench_allocation.csv, summary.csv, bench_allocation.png")
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="the smaller sizes, one scenario each (seconds)")
    parser.add_argument("--part", choices=("models", "paper-warm", "all"), default="all")
    parser.add_argument("--repeats", type=int, default=3, help="scenarios per size (default 3)")
    parser.add_argument("--sizes", type=int, nargs="+",
                        help=f"paper-warm: users (default {SIZES})")
    parser.add_argument("--out", type=Path, default=Path("results/bench_allocation"),
                        help="output folder")
    args = parser.parse_args(argv)
    from experiments.plotting import write_csv

    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    if args.part in ("models", "all"):
        solve(makespan_scenario("fifo", 4, 0), "fp")  # warm-up: imports and tables
        rows = bench_models(args.quick, args.repeats)
        write_csv(rows, args.out / "models.csv")
        summary = summarise_models(rows)
        write_csv(summary, args.out / "models_summary.csv")
        plot_models(summary, args.out / "models.png")
        print(f"wrote {args.out}/models.csv, models_summary.csv, models.png")
    if args.part in ("paper-warm", "all"):
        rows += bench_paper_warm(args.quick, args.repeats, args.sizes, args.out)
    return rows


if __name__ == "__main__":
    main()
