"""Modelled against measured time per client: how well the cost model predicts a real run.

Runs the built-in job's shape in-process (the real ServerApp and ClientApp code on an
`InProcessGrid`: SmolLM2-135M on Shakespeare, 8 clients drawn from the device catalogue, the
makespan model with calibration, fp) for a few rounds, and tabulates every client's modelled
seconds (device, transfer, server, queueing) against what was measured (its own compute, the
server's time on it, its round's wall time). In-process every "device" is a thread of the same
machine and every link is loopback, so the comparison that means something here is of compute:
devices and server were calibrated on this machine. Writes ``clients.csv`` (one row per client
and round), ``summary.csv`` (median ratios per round), ``calibration.json`` (the measured
speeds) and ``splits_worth.csv``: round 1 rebuilt and costed under every single split for all and
edge-only beside fp (the split's worth on this job with measured speeds) to ``--out``. Usage::

    nice -n 10 python -m experiments.model_fit [--rounds 2] [--clients 8] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from allocation import solve
from clients.profile import simulated_profile
from edgesplit.data import federated_text
from experiments.plotting import write_csv
from harness.inprocess import run_in_process
from strategies.split_fed import SplitFedStrategy

PARTS = ("device", "transfer", "server", "queue")


def client_rows(rows: list[dict]) -> list[dict]:
    """One row per client and round: modelled and measured seconds and their ratios."""
    out = []
    for row in rows:
        for c in row["clients"]:
            entry = {"round": row["round"], "node": c["node"],
                     "device_class": c.get("device_class", ""), "split": c["split"],
                     "server_share": c.get("server_share"),
                     **{f"modelled_{p}_s": c[f"modelled_{p}_s"] for p in PARTS},
                     "modelled_s": c["modelled_s"]}
            for part in ("device_", "server_", "wait_", ""):
                entry[f"measured_{part}s"] = c.get(f"measured_{part}s")
            for part in ("device_", "server_", ""):
                measured = entry[f"measured_{part}s"]
                name = f"ratio_{part.rstrip('_')}" if part else "ratio"
                entry[name] = entry[f"modelled_{part}s"] / measured if measured else None
            out.append(entry)
    return out


def summary(rows: list[dict]) -> list[dict]:
    """Per round: the run's own median ratios (as in metrics.jsonl) and the splits."""
    return [{"round": r["round"], "splits": " ".join(map(str, sorted(c["split"]
                                                                    for c in r["clients"]))),
             "modelled_makespan_s": r["modelled_delay_s"],
             "median_modelled_over_measured": r["modelled_over_measured_median"],
             "median_device": r["modelled_over_measured_device_median"],
             "median_server": r["modelled_over_measured_server_median"],
             "time_round_s": r["time_round_s"], "time_calibrate_s": r["time_calibrate_s"]}
            for r in rows]


def counterfactual(strategy: SplitFedStrategy, rows: list[dict], clients: int) -> list[dict]:
    """Round 1 of the run, rebuilt (profiles are deterministic, calibrations are recorded), and
    costed under every single split for all and edge-only next to fp: the split's worth on the
    built-in job with measured speeds. The rebuild must give the run's own splits."""
    settings = strategy.settings
    shards = federated_text(settings.data, settings.model_name, clients)
    nodes = sorted(int(n) for n in rows[0]["calibration"]["devices"])
    profiles = [{**simulated_profile(n - 1, settings.seed).as_dict(),  # node n = partition n-1
                 "num-examples": len(shards.client(n - 1).train)} for n in nodes]
    measured = [strategy.calibrator.devices[n] for n in nodes]
    scenario = strategy.allocator.scenario(1, profiles, strategy.costs, measured,
                                           strategy.calibrator.server)
    fp = solve(scenario, "fp")
    ran = [c["split"] for c in sorted(rows[0]["clients"], key=lambda c: c["node"])]
    if fp.split.tolist() != ran:
        raise RuntimeError(f"round 1 rebuilt gives splits {fp.split.tolist()}, the run {ran}")
    out = [{"method": "fp", "splits": " ".join(map(str, fp.split)), "makespan_s": fp.delay,
            "objective": fp.objective}]
    for name, options in [("edge-only", {}), *((f"fixed-{k}", {"split": k})
                                              for k in range(1, scenario.layers))]:
        alloc = solve(scenario, "fixed" if options else name, **options)
        out.append({"method": name, "splits": " ".join(map(str, alloc.split)),
                    "makespan_s": alloc.delay, "objective": alloc.objective})
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", type=Path, default=Path("results/model_fit"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        config = {"model.name": args.model, "train.rounds": args.rounds,
                  "eval.every": 0, "run.output-dir": folder, "run.name": "model_fit"}
        if args.model.startswith("tiny-"):
            config["data.corpus"] = "synthetic"
        strategy, _, rows = run_in_process(config, args.clients)
    clients = client_rows(rows)
    splits_worth = counterfactual(strategy, rows, args.clients)
    table = summary(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(clients, args.out / "clients.csv")
    write_csv(table, args.out / "summary.csv")
    write_csv(splits_worth, args.out / "splits_worth.csv")
    # What calibration measured (round 1): the speeds the model ran on.
    (args.out / "calibration.json").write_text(json.dumps(rows[0].get("calibration"), indent=1))
    ratios = [c["ratio"] for c in clients if c["ratio"]]
    devices = [c["ratio_device"] for c in clients if c["ratio_device"]]
    servers = [c["ratio_server"] for c in clients if c["ratio_server"]]
    for t in table:
        print(t)
    fp, edge = splits_worth[0], splits_worth[1]
    best = min(splits_worth[2:], key=lambda r: r["makespan_s"])
    print(f"round 1 rebuilt: fp splits {fp['splits']}, makespan {fp['makespan_s']:.2f} s; best "
          f"single split {best['method']} {best['makespan_s']:.2f} s; edge-only "
          f"{edge['makespan_s']:.2f} s")
    print(f"over all rounds: median modelled/measured {np.median(ratios):.3g} (whole round), "
          f"{np.median(devices):.3g} (device compute), {np.median(servers):.3g} (server "
          f"compute); {time.perf_counter() - started:.0f} s; wrote {args.out}")
    return clients


if __name__ == "__main__":
    main()
