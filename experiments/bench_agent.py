"""Benchmark: what a Flower message costs a deployed device, without and with its resident agent.

Flower starts a fresh `flwr-clientapp` process per message (flower-facts.md). Without an agent
that process imports torch and builds the model before it works; with one (`edgesplit-device`,
`clients.agent`) it only forwards the message over a Unix socket. This starts local deployments
on 127.0.0.1 (`harness.deployment`: a SuperLink, 2 SuperNodes), alternately without and with
agents, `--repeats` times in one invocation, and runs one round of tiny-llama through `flwr run`
on each (profile query with the calibration, stream training, evaluation; fixed split, so both
paths must give the same adapter, which is checked bit for bit). It records:

- every ClientApp process (its log line, `fl_app.client_app`): message type, CPU seconds and
  wall seconds from the process start to its reply -> `messages.csv`;
- every round: its wall time and phases (the ServerApp's metrics), each client's start offset
  (train message pushed -> first step on the stream) and `flwr run`'s wall -> `rounds.csv`;
- with `--rss-rounds N`: one run of N rounds of `--rss-model` (default SmolLM2-135M) through
  agents, each agent's resident memory after every round's training (its log) -> `rss.csv`;
- `summary.json`: the ratios and the machine's load averages.

    python -m experiments.bench_agent [--repeats 3] [--rss-rounds 20] [--out results/device_agent]
    python -m experiments.bench_agent --quick --out /tmp/quick/device_agent  # 1 repeat each
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from experiments.plotting import write_csv
from experiments.report.stats import mean_ci
from harness.configs import tiny_run_config
from harness.deployment import start_deployment
from harness.runtime import FlowerHarness, flwr_run_metrics, run_config_arg

RUN_TIMEOUT_S = 600  # per round (SmolLM2's rounds took about a minute on a loaded machine)
MODES = ("none", "agent")
CLIENTS = 2
CONFIG = tiny_run_config(allocator="fixed", local_steps=2, transport="stream",
                         calibration="measure", calibration_steps=1, eval_every=1,
                         min_train_clients=CLIENTS, sample_prompts="")
_CLIENTAPP = re.compile(r"clientapp pid (\d+): (\S+) (via agent \S+|in-process): ([\d.]+) "
                        r"CPU-s, ([\d.]+) s since the process started")
_AGENT_TRAINED = re.compile(r"train\.stream done in [\d.]+ s \(rss ([\d.]+) MB\)")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_once(mode: str, repeat: int, rounds: int, scratch: Path, model: str = "tiny-llama"
             ) -> tuple[list[dict], list[dict], FlowerHarness, Path]:
    """One deployment and one `flwr run`; returns (message rows, round rows, the harness, the
    run folder). The caller stops the harness."""
    harness = FlowerHarness(scratch / f"{mode}-{repeat}" / "flwr-home")
    out = scratch / f"{mode}-{repeat}" / "outputs"
    config = {**CONFIG, "model.name": model, "train.rounds": rounds,
              "run.output-dir": str(out), "run.name": mode}
    load = load_average()
    try:
        deployment = start_deployment(harness, CLIENTS, agents=mode == "agent")
        started = time.perf_counter()
        metrics = flwr_run_metrics(harness, mode, deployment.connection,
                                   run_config_arg(config), out / mode, RUN_TIMEOUT_S * rounds)
        wall = time.perf_counter() - started
    except BaseException:
        harness.stop()
        raise
    messages = []
    for node in range(CLIENTS):
        for found in _CLIENTAPP.finditer(harness.log(f"supernode-{node}")):
            pid, message_type, _, cpu_s, wall_s = found.groups()
            messages.append({"mode": mode, "repeat": repeat, "node": node, "pid": int(pid),
                             "message_type": message_type, "cpu_s": float(cpu_s),
                             "wall_s": float(wall_s)})
    rounds_ = []
    for row in metrics:
        if row["completed"] != CLIENTS:
            harness.stop()
            raise RuntimeError(f"{mode}: round {row['round']} lost clients: {row['failures']}")
        starts = [c["measured_start_s"] for c in row["clients"]]
        rounds_.append({"mode": mode, "repeat": repeat, "round": row["round"],
                        "time_round_s": row["time_round_s"],
                        "time_calibrate_s": row["time_calibrate_s"],
                        "time_train_s": row["time_train_s"], "time_eval_s": row["time_eval_s"],
                        "start_s_mean": float(np.mean(starts)), "start_s_max": max(starts),
                        "flwr_run_s": wall, "load_before": load, "load_after": load_average()})
    return messages, rounds_, harness, out / mode


def final_adapter(run_dir: Path, rounds: int) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / f"round-{rounds:04d}.pt",
                      weights_only=True)["lora"]


def rss_run(rounds: int, model: str, scratch: Path) -> list[dict]:
    """`rounds` rounds through agents; each agent's RSS after each round's training."""
    _, _, harness, _ = run_once("agent", 0, rounds, scratch / "rss", model)
    try:
        rows = []
        for node in range(CLIENTS):
            found = _AGENT_TRAINED.findall(harness.log(f"agent-{node}"))
            if len(found) != rounds:
                raise RuntimeError(f"agent-{node} trained {len(found)} of {rounds} rounds")
            rows += [{"model": model, "node": node, "round": r + 1, "rss_mb": float(mb)}
                     for r, mb in enumerate(found)]
        return rows
    finally:
        harness.stop()


def summarise(messages: list[dict], rounds: list[dict], rss: list[dict],
              identical: bool, loads: dict) -> dict:
    summary: dict = {"clients": CLIENTS, "config": CONFIG, "adapters_identical": identical,
                     "load_average": loads, "messages": {}, "rounds": {}}
    for mode in MODES:
        for kind in sorted({m["message_type"] for m in messages}):
            mine = [m for m in messages if m["mode"] == mode and m["message_type"] == kind]
            if mine:
                summary["messages"][f"{mode}/{kind}"] = {
                    "n": len(mine), "cpu_s": mean_ci([m["cpu_s"] for m in mine]),
                    "wall_s": mean_ci([m["wall_s"] for m in mine])}
        first = [r for r in rounds if r["mode"] == mode and r["round"] == 1]
        summary["rounds"][mode] = {
            key: mean_ci([r[key] for r in first])
            for key in ("time_round_s", "time_calibrate_s", "time_train_s", "time_eval_s",
                        "start_s_mean", "flwr_run_s")} | {"n": len(first)}
    before, after = summary["rounds"]["none"], summary["rounds"]["agent"]
    summary["round_speedup"] = before["time_round_s"][0] / after["time_round_s"][0]
    summary["max_agent_clientapp_cpu_s"] = max(
        m["cpu_s"] for m in messages if m["mode"] == "agent")
    if rss:
        growth = {}
        for node in sorted({r["node"] for r in rss}):
            mine = [r["rss_mb"] for r in rss if r["node"] == node]
            growth[str(node)] = (max(mine[2:]) - mine[2]) / mine[2]  # after round 3
        summary["rss_growth_after_round_3"] = growth
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each mode, alternating")
    parser.add_argument("--rss-rounds", type=int, default=20, help="0: skip the memory run")
    parser.add_argument("--rss-model", default="smollm2-135m")
    parser.add_argument("--quick", action="store_true", help="1 repeat, no memory run")
    parser.add_argument("--out", type=Path, default=Path("results/device_agent"))
    args = parser.parse_args(argv)
    if args.quick:  # one round each way; no memory run
        args.repeats, args.rss_rounds = 1, 0
    messages, rounds, rss = [], [], []
    loads = {"start": load_average()}
    identical = True
    with tempfile.TemporaryDirectory(prefix="edgesplit-bench-agent-") as tmp:
        for repeat in range(args.repeats):
            adapters = {}
            for mode in MODES:
                m, r, harness, run_dir = run_once(mode, repeat, 1, Path(tmp))
                try:
                    adapters[mode] = final_adapter(run_dir, 1)
                finally:
                    survivors = harness.stop()
                if survivors:
                    raise RuntimeError(f"processes survived: {survivors}")
                messages += m
                rounds += r
                print(json.dumps(r[-1]), flush=True)
            identical &= all(torch.equal(adapters["none"][k], adapters["agent"][k])
                             for k in adapters["none"])
        if args.rss_rounds:
            rss = rss_run(args.rss_rounds, args.rss_model, Path(tmp))
    loads["end"] = load_average()
    summary = summarise(messages, rounds, rss, identical, loads)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(messages, args.out / "messages.csv")
    write_csv(rounds, args.out / "rounds.csv")
    if rss:
        write_csv(rss, args.out / "rss.csv")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in summary if k not in ("config",)}, indent=1))
    return summary


if __name__ == "__main__":
    main()
