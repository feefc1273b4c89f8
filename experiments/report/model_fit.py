"""The makespan model's calibration against the clock, in process."""

from __future__ import annotations

from pathlib import Path

from .stats import num, pct, rows, table


def render(results: Path) -> str:
    folder = results / "model_fit"
    summary = rows(folder / "summary.csv")
    clients = rows(folder / "clients.csv")
    worth = {r["method"]: r for r in rows(folder / "splits_worth.csv")}
    fixed = [r for k, r in worth.items() if k.startswith("fixed-")]
    best = min(fixed, key=lambda r: float(r["makespan_s"]))
    fp, edge = float(worth["fp"]["makespan_s"]), float(worth["edge-only"]["makespan_s"])
    body = [[r["round"], r["splits"], num(float(r["modelled_makespan_s"])),
             num(float(r["median_modelled_over_measured"])), num(float(r["median_device"])),
             num(float(r["median_server"]))] for r in summary]
    return f"""## Modelled against measured (calibration)

`nice -n 10 python -m experiments.model_fit` runs the built-in job in-process (8 clients,
SmolLM2-135M, 2 rounds, fp on the makespan model with `allocation.calibration = "measure"`) and
writes `results/model_fit/`: every client's modelled seconds (device, transfer, server, queueing)
against measured ones (its own compute, the server's time on it, its round's wall time), the
speeds calibration measured, and round 1 rebuilt and costed under every single split. In-process
every device is a thread of one 2-core machine, devices take turns on one lock, and every link is
loopback; the compute comparisons are the meaningful ones. One run ({len(clients)} client-rounds).

Median modelled / measured over the clients of each round (`summary.csv`):

{table(["round", "splits", "modelled makespan per step (s)", "whole round", "device compute",
        "server compute"], body)}
This machine is shared by several sessions, and a calibration taken at one moment meets training
at another: the ratios move between runs of the same code by as much as the differences they
show, so rerun on a quiet machine before trusting either. What they do show: calibrated devices
are within a factor 2 (the model assumes devices in parallel; here they queue behind one lock and
share the cores with the server), and the server's tail is timed where it runs (a fresh worker
thread: torch's threading differs between threads).

Round 1 rebuilt under every single split (`splits_worth.csv`): fp chose {worth['fp']['splits']}
(modelled makespan {num(fp)} s per step) against {num(edge)} s for edge-only and
{num(float(best['makespan_s']))} s for the best single split ({best['method']}: everything on the
devices, where the "server" is one thread shared by 8 clients). fp keeps layers on the server for
energy (the catalogue's powers) and stability; with its weights it is {pct(1 - fp / edge)} below
edge-only and {num(fp / float(best['makespan_s']), 2)}x the best single split in makespan.
"""
