"""Modelled against measured time per client: how well the cost model predicts a real run.

Runs the built-in job's shape in-process (the real ServerApp and ClientApp code on an
`InProcessGrid`: SmolLM2-135M on Shakespeare, 8 clients drawn from the device catalogue, the
makespan model with calibration, fp) for a few rounds, and tabulates every client's modelled
seconds (device, transfer, server, queueing) against what was measured (its own compute, the
server's time on it, its round's wall time). In-process every "device" is a thread of the same
machine and every link is loopback, so the comparison that means something here is of compute:
devices and server were calibrated on this machine. Writes ``clients.csv`` (one row per client
and round) and ``summary.csv`` (median ratios per round) to ``--out``. Usage::

    nice -n 10 python -m experiments.model_fit [--rounds 2] [--clients 8] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from experiments.plotting import write_csv
from harness.inprocess import run_in_process

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


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", type=Path, default=Path("results/model_fit"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        config = {"model-name": args.model, "num-server-rounds": args.rounds,
                  "eval-every": 0, "output-dir": folder, "run-name": "model_fit"}
        if args.model.startswith("tiny-"):
            config["corpus"] = "synthetic"
        _, _, rows = run_in_process(config, args.clients)
    clients = client_rows(rows)
    table = summary(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(clients, args.out / "clients.csv")
    write_csv(table, args.out / "summary.csv")
    # What calibration measured (round 1): the speeds the model ran on.
    (args.out / "calibration.json").write_text(json.dumps(rows[0].get("calibration"), indent=1))
    ratios = [c["ratio"] for c in clients if c["ratio"]]
    devices = [c["ratio_device"] for c in clients if c["ratio_device"]]
    servers = [c["ratio_server"] for c in clients if c["ratio_server"]]
    for t in table:
        print(t)
    print(f"over all rounds: median modelled/measured {np.median(ratios):.3g} (whole round), "
          f"{np.median(devices):.3g} (device compute), {np.median(servers):.3g} (server "
          f"compute); {time.perf_counter() - started:.0f} s; wrote {args.out}")
    return clients


if __name__ == "__main__":
    main()
