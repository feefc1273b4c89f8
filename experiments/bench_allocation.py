"""Benchmark: time and peak memory of the seed-A optimiser (fp) for 100 to 50,000 users on 10
servers, from a cold start and warm-started from the previous round.

Runs on one core (BLAS/OpenMP threads pinned to 1 before numpy loads). Per size and scenario:
a cold solve, then the same scenario after one round of 0.1 dB gain drift solved cold and
warm-started from the first solution. Wall and CPU seconds come from untraced runs; peak
memory is tracemalloc's peak of the solve (numpy's arrays included, the interpreter and the
scenario excluded), from one more traced run of the first scenario per size. The 1-minute load
average is recorded beside each timing (the machine is shared). Writes
``bench_allocation.csv`` (one row per run), ``summary.csv`` (medians) and
``bench_allocation.png`` to ``--out``. Usage::

    python -m experiments.bench_allocation [--quick] [--out results/bench_allocation]
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

from allocation import random_scenario, solve  # noqa: E402

SIZES = (100, 1000, 10_000, 50_000)
QUICK_SIZES = (100, 1000)
N_SERVERS = 10
DRIFT_DB = 0.1  # std of each link's gain change between the two rounds
LARGE = 50_000  # from here on, one scenario per size


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


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"users {QUICK_SIZES}, one scenario each (seconds)")
    parser.add_argument("--repeats", type=int, default=3, help="scenarios per size (default 3)")
    parser.add_argument("--sizes", type=int, nargs="+", help=f"users (default {SIZES})")
    parser.add_argument("--out", type=Path, default=Path("results/bench_allocation"),
                        help="output folder")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    solve(random_scenario(10, N_SERVERS, seed=0), "fp")  # warm-up: imports and tables

    rows = []
    # Wall time is what the round waits for; CPU time is robust to other load on the machine.
    print(f"{'users':>6} {'start':>5} {'wall s':>7} {'cpu s':>6} {'peak MB':>8} {'iters':>5} "
          f"{'evals':>5} {'objective':>10} {'load':>5}", flush=True)
    for n_users in sizes:
        part = bench(n_users, repeats)
        rows += part
        for r in summarise(part):
            print(f"{n_users:>6} {r['start']:>5} {r['seconds']:>7.3f} {r['cpu_seconds']:>6.3f} "
                  f"{r['peak_mb']:>8.1f} {r['iterations']:>5.0f} {r['evaluations']:>5.0f} "
                  f"{r['objective']:>10.6f} {r['load_1min']:>5.1f}", flush=True)
    from experiments.plotting import write_csv

    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.out / "bench_allocation.csv")
    summary = summarise(rows)
    write_csv(summary, args.out / "summary.csv")
    plot(summary, args.out / "bench_allocation.png")
    print(f"wrote {args.out}/bench_allocation.csv, summary.csv, bench_allocation.png")
    return rows


if __name__ == "__main__":
    main()
