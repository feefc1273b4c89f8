"""Benchmark: round wall time and peak server memory against the total number of clients.

For each total N (default 10, 50, 100) one Ray simulation runs through the real Flower runtime
(`flwr run` against a private simulation SuperLink, as the e2e tests start it), sampling 10 clients
per round (`fraction-train = 10 / N`). The ServerApp records its process's peak resident memory in
every metrics row (`server_peak_rss_mb`); the server keeps state only for the sampled clients, so
the peak should not grow with N. Results: CSV + PNG in the output folder.

    python -m experiments.bench_scale [--clients 10 50 100] [--rounds 2] [--out results/bench_scale]
    python -m experiments.bench_scale --quick     # tiny-llama, 4 and 8 clients (about 2 min)

The private runtime (temporary FLWR_HOME, OS-chosen ports, every process stopped afterwards)
comes from harness/runtime.py, shared with the e2e tests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from experiments.plotting import save, subplots, write_csv
from harness.runtime import (
    FlowerHarness,
    flwr_bin,
    run_status,
    start_simulation_superlink,
    started_run_id,
)

SAMPLED = 10


def run_once(total: int, sampled: int, rounds: int, model: str, out: Path,
             extra_config: str) -> dict:
    """One simulation with `total` clients; returns its summary row."""
    with tempfile.TemporaryDirectory(prefix="edgesplit-scale-") as home:
        harness = FlowerHarness(Path(home))
        try:
            start_simulation_superlink(harness, "scale")
            name = f"clients-{total}"
            run_config = (f'model-name="{model}" num-server-rounds={rounds} '
                          f'fraction-train={sampled / total} min-train-clients=2 '
                          f'output-dir="{out}" run-name="{name}" {extra_config}')
            started = time.perf_counter()
            rc, log = harness.run("flwr-run", [
                flwr_bin("flwr"), "run", ".", "scale", "--run-config", run_config,
                "--federation-config", f"num-supernodes={total} client-resources-num-cpus=1",
                "--stream"], timeout_s=3600)
            wall = time.perf_counter() - started
            status = run_status(harness, "scale", started_run_id(log))
        finally:
            harness.stop()
    if rc != 0 or status != "finished:completed":
        raise RuntimeError(f"run with {total} clients ended {status} (rc {rc}):\n{log[-4000:]}")
    rows = [json.loads(line) for line in (out / name / "metrics.jsonl").open()]
    return {"total_clients": total, "sampled_per_round": rows[-1]["sampled"],
            "completed_last_round": rows[-1]["completed"], "rounds": len(rows),
            "flwr_run_wall_s": round(wall, 1),
            "round_s_median": round(sorted(r["time_round_s"] for r in rows)[len(rows) // 2], 2),
            "server_peak_rss_mb": round(rows[-1]["server_peak_rss_mb"], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--local-steps", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("results/bench_scale"))
    parser.add_argument("--quick", action="store_true",
                        help="tiny-llama on a synthetic corpus, 4 and 8 clients, 4 sampled")
    args = parser.parse_args()
    # The SuperLink starts Flower's other executables by name: find them beside this Python.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    sampled, extra = SAMPLED, f"local-steps={args.local_steps}"
    if args.quick:
        args.clients, args.model, sampled = [4, 8], "tiny-llama", 4
        extra += ' corpus="synthetic" split=3 block-size=16'
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for total in args.clients:
        rows.append(run_once(total, min(sampled, total), args.rounds, args.model,
                             (args.out / "runs").resolve(), extra))
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["server_peak_rss_mb"]
    for row in rows:
        row["rss_vs_smallest"] = round(row["server_peak_rss_mb"] / base, 3)
    write_csv(rows, args.out / "bench_scale.csv")

    fig, axes = subplots(1, 2)
    totals = [r["total_clients"] for r in rows]
    axes[0, 0].plot(totals, [r["server_peak_rss_mb"] for r in rows], marker="o")
    axes[0, 0].set(xlabel="total clients", ylabel="server peak RSS (MB)", ylim=(0, None),
                   title=f"{sampled} sampled per round")
    axes[0, 1].plot(totals, [r["round_s_median"] for r in rows], marker="o")
    axes[0, 1].set(xlabel="total clients", ylabel="round wall time (s, median)", ylim=(0, None))
    save(fig, args.out / "bench_scale.png")
    print(f"wrote {args.out / 'bench_scale.csv'} and bench_scale.png")


if __name__ == "__main__":
    main()
