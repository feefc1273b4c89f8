"""The default job with a cell: the 5G and LTE clients share one uplink band, which the
allocator divides among them every round with their splits and server shares, and pacing
holds each to its share.

The built-in job (SmolLM2-135M on Shakespeare, 8 clients; README's config) run in-process with
the real ServerApp and ClientApp code, plus ``allocation.cell-bandwidth-hz`` (20 MHz),
``stream.pace-links = true`` and ``allocation.calibration = "track"`` (speeds re-measured every
round, so the round's scenario, and its division of the band, moves with what the clients did).
Writes the run folder (``metrics.jsonl``, ``figures/clients.png`` with each client's bandwidth per
round) under ``--out`` and ``bandwidth.csv``: per round and client, its split, subchannels,
bandwidth, paced rate, and modelled and measured transfer seconds. ``--quick``: the tiny test model,
one round (seconds). Usage::

    nice -n 19 python -m experiments.cell_run [--quick] [--rounds 3] [--out results/cell_run]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from experiments.plotting import write_csv
from experiments.records import make_portable
from harness.configs import tiny_run_config
from harness.inprocess import run_in_process

CELL = {"allocation.cell-bandwidth-hz": 20e6, "allocation.cell-subchannels": 50,
        "stream.pace-links": True,
        "allocation.calibration": "track"}


def bandwidth_rows(metrics: list[dict]) -> list[dict]:
    """One row per round and cell client (those with a share of the band)."""
    return [{"round": row["round"], "node": c["node"], "device_class": c["device_class"],
             "split": c["split"], "subchannels": c["subchannels"],
             "bandwidth_mhz": c["bandwidth_hz"] / 1e6, "rate_mbit": c["rate_bps"] / 1e6,
             "modelled_transfer_s": c["modelled_transfer_s"],
             "measured_transfer_s": c.get("measured_transfer_s"),
             "allocation_gap": row.get("allocation_gap"),
             "allocation_search": row.get("allocation_search")}
            for row in metrics for c in row["clients"] if "bandwidth_hz" in c]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("results/cell_run"))
    args = parser.parse_args(argv)
    if args.out.exists():
        shutil.rmtree(args.out)
    where = {"run.output-dir": str(args.out.parent), "run.name": args.out.name}
    if args.quick:
        config = tiny_run_config(keys={**CELL, **where, "allocation.calibration": "none",
                                       "allocation.method": "fp"})
    else:
        config = {**CELL, **where, "train.rounds": args.rounds}
    _, _, metrics = run_in_process(config, args.clients)
    make_portable(args.out)
    rows = bandwidth_rows(metrics)
    write_csv(rows, args.out / "bandwidth.csv")
    for r in rows:
        print(f"round {r['round']} node {r['node']} ({r['device_class']}): split {r['split']}, "
              f"{r['subchannels']} subchannels = {r['bandwidth_mhz']:.1f} MHz, "
              f"{r['rate_mbit']:.2f} Mbit/s")
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
