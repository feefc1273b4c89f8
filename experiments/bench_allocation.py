"""Benchmark: wall time of the seed-A optimiser (fp) for 10, 100 and 1000 users on 10 servers.

Runs on one core (BLAS/OpenMP threads pinned to 1 before numpy loads) and writes
``bench_allocation.csv`` to ``--out``. Usage::

    python -m experiments.bench_allocation [--quick] [--out results/]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # must precede the numpy import to take effect

import argparse  # noqa: E402
import csv  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from allocation import random_scenario, solve  # noqa: E402

FIELDS = ["n_users", "n_servers", "repeat", "seconds", "cpu_seconds", "iterations", "objective",
          "energy_j", "delay_s", "stability", "mean_split"]


def bench(n_users: int, n_servers: int, repeats: int) -> list[dict]:
    """Time ``solve(..., "fp")`` on ``repeats`` seeded scenarios with the paper's defaults."""
    rows = []
    for rep in range(repeats):
        scenario = random_scenario(n_users, n_servers, seed=rep)
        start, cpu_start = time.perf_counter(), time.process_time()
        alloc = solve(scenario, "fp", seed=rep)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        rows.append({"n_users": n_users, "n_servers": n_servers, "repeat": rep,
                     "seconds": seconds, "cpu_seconds": cpu, "iterations": alloc.iterations,
                     "objective": alloc.objective, "energy_j": alloc.energy,
                     "delay_s": alloc.delay, "stability": alloc.stability,
                     "mean_split": float(np.mean(alloc.split))})
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat per size")
    parser.add_argument("--repeats", type=int, default=5, help="scenarios per size (default 5)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="CSV folder")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    solve(random_scenario(10, 10, seed=0), "fp")  # warm-up: imports and tables

    rows = []
    # Wall time is what the round waits for; CPU time is robust to other load on the machine.
    print(f"{'users':>6} {'servers':>7} {'median s':>9} {'max s':>7} {'cpu s':>7} {'iters':>5} "
          f"{'objective':>9}")
    for n_users in (10, 100, 1000):
        part = bench(n_users, 10, repeats)
        rows += part
        secs = [r["seconds"] for r in part]
        print(f"{n_users:>6} {10:>7} {np.median(secs):>9.3f} {max(secs):>7.3f} "
              f"{np.median([r['cpu_seconds'] for r in part]):>7.3f} "
              f"{int(np.median([r['iterations'] for r in part])):>5} "
              f"{np.median([r['objective'] for r in part]):>9.4f}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_allocation.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
