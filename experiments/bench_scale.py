"""Benchmark: round wall time, server and client-actor memory against the registered clients.

For each (registered N, sampled S) pair one Ray simulation runs through the real Flower runtime
(`flwr run` against a private simulation SuperLink, as the e2e tests start it), sampling S
clients per round (`train.client-fraction = S / N`). The ServerApp records its process's resident
and peak memory in every metrics row (`server_rss_mb`, `server_peak_rss_mb`); while the run goes,
this script also reads the resident memory of every Ray client actor (`ray::ClientAppActor`)
and of the simulation process from /proc every second and keeps the peaks. Nothing per
registered client should be built before it is sampled, so memory and round time should not
grow with N. Results: CSV + PNG in the output folder.

    python -m experiments.bench_scale [--registered 100 1000] [--sampled 10 20] [--rounds 3]
    python -m experiments.bench_scale --quick     # tiny-llama, 8 and 40 registered, 4 sampled

Shakespeare's natural split has 995 speaker groups after the hold-out, so runs above that use
`--partitioning iid` (the default here, for every N alike). The private runtime (temporary
FLWR_HOME, OS-chosen ports, every process stopped afterwards) comes from harness/runtime.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from experiments.plotting import save, subplots, write_csv
from experiments.records import make_portable
from harness.runtime import (
    FlowerHarness,
    command_line,
    flwr_bin,
    resident_mb,
    run_status,
    start_simulation_superlink,
    started_run_id,
)


class PeakMemory:
    """Polls the resident memory of a harness's processes whose command line names `groups`."""

    def __init__(self, harness: FlowerHarness, groups: dict[str, str], every_s: float = 1.0):
        self.harness, self.groups, self.every_s = harness, groups, every_s
        self.peak = dict.fromkeys(groups, 0.0)
        self.processes = dict.fromkeys(groups, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.wait(self.every_s):
            pids = self.harness.owned_pids()
            for group, name in self.groups.items():
                mine = [p for p in pids if name in command_line(p)]
                self.processes[group] = max(self.processes[group], len(mine))
                for pid in mine:
                    self.peak[group] = max(self.peak[group], resident_mb(pid))


def run_once(registered: int, sampled: int, rounds: int, model: str, out: Path,
             extra_config: str) -> dict:
    """One simulation with `registered` clients, `sampled` per round; returns its summary."""
    name = f"registered-{registered}-sampled-{sampled}"
    with tempfile.TemporaryDirectory(prefix="edgesplit-scale-") as home:
        harness = FlowerHarness(Path(home))
        try:
            start_simulation_superlink(harness, "scale")
            run_config = (f'model.name="{model}" train.rounds={rounds} '
                          f'train.client-fraction={sampled / registered} train.min-clients=2 '
                          f'run.output-dir="{out}" run.name="{name}" {extra_config}')
            started = time.perf_counter()
            with PeakMemory(harness, {"actor": "ClientAppActor",
                                      "simulation": "flwr-simulation"}) as memory:
                rc, log = harness.run("flwr-run", [
                    flwr_bin("flwr"), "run", ".", "scale", "--run-config", run_config,
                    "--federation-config",
                    f"num-supernodes={registered} client-resources-num-cpus=1",
                    "--stream"], timeout_s=3600)
            wall = time.perf_counter() - started
            status = run_status(harness, "scale", started_run_id(log))
        finally:
            harness.stop()
    if rc != 0 or status != "finished:completed":
        raise RuntimeError(f"run {name} ended {status} (rc {rc}):\n{log[-4000:]}")
    rows = [json.loads(line) for line in (out / name / "metrics.jsonl").open()]
    later = rows[1:] or rows  # round 1 also loads the model and warms every cache
    return {"registered": registered, "sampled": rows[-1]["sampled"],
            "completed_last_round": rows[-1]["completed"], "rounds": len(rows),
            "flwr_run_wall_s": round(wall, 1),
            "round_s_median": round(statistics.median(r["time_round_s"] for r in later), 2),
            "round1_s": round(rows[0]["time_round_s"], 2),
            # The round in units of its own median tail step: what is left of the round time
            # once the machine's load (which slows every step alike) is divided out.
            "round_over_tail_step": round(statistics.median(
                r["time_round_s"] / r["server_tail_step_s"] for r in later), 2),
            "server_rss_mb": round(rows[-1]["server_rss_mb"], 1),
            "server_peak_rss_mb": round(rows[-1]["server_peak_rss_mb"], 1),
            "simulation_peak_rss_mb_polled": round(memory.peak["simulation"], 1),
            "actor_peak_rss_mb": round(memory.peak["actor"], 1),
            "actors": memory.processes["actor"],
            "load_avg_1m": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registered", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--sampled", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--local-steps", type=int, default=1)
    parser.add_argument("--partitioning", default="iid")
    parser.add_argument("--extra", default="eval.every=0 allocation.calibration=\"none\"",
                        help="more run-config overrides for every run")
    parser.add_argument("--out", type=Path, default=Path("results/bench_scale"))
    parser.add_argument("--quick", action="store_true",
                        help="tiny-llama on a synthetic corpus, 8 and 40 registered, 4 sampled")
    args = parser.parse_args()
    # The SuperLink starts Flower's other executables by name: find them beside this Python.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    extra = (f'train.local-steps={args.local_steps} data.partitioning="{args.partitioning}" '
             f'{args.extra}')
    if args.quick:
        args.registered, args.sampled, args.model, args.rounds = [8, 40], [4], "tiny-llama", 2
        extra += ' data.corpus="synthetic" allocation.fixed-split=3 data.block-size=16'
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for sampled in args.sampled:
        for registered in args.registered:
            rows.append(run_once(registered, min(sampled, registered), args.rounds, args.model,
                                 (args.out / "runs").resolve(), extra))
            print(json.dumps(rows[-1]), flush=True)
    for row in rows:  # against the fewest registered at the same sampled count
        base = next(r for r in rows if r["sampled"] == row["sampled"])
        for key in ("server_peak_rss_mb", "round_s_median", "round_over_tail_step",
                    "actor_peak_rss_mb"):
            row[f"{key}_vs_fewest"] = round(row[key] / base[key], 3) if base[key] else None
    make_portable(args.out / "runs")
    write_csv(rows, args.out / "bench_scale.csv")

    fig, axes = subplots(1, 3)
    for sampled in args.sampled:
        mine = [r for r in rows if r["sampled"] == min(sampled, r["registered"])]
        totals = [r["registered"] for r in mine]
        for ax, key in zip(axes[0], ("server_peak_rss_mb", "actor_peak_rss_mb",
                                     "round_s_median"), strict=True):
            ax.plot(totals, [r[key] for r in mine], marker="o", label=f"{sampled} per round")
    for ax, label in zip(axes[0], ("server peak RSS (MB)", "client actor peak RSS (MB)",
                                   "round wall time (s, median)"), strict=True):
        ax.set(xlabel="registered clients", ylabel=label, ylim=(0, None), xscale="log")
        ax.legend()
    save(fig, args.out / "bench_scale.png")
    print(f"wrote {args.out / 'bench_scale.csv'} and bench_scale.png")


if __name__ == "__main__":
    main()
