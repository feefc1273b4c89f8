"""The default job with a cell: the band each client got, per round.

Reads `results/cell_run/bandwidth.csv` (`python -m experiments.cell_run`).
"""

from __future__ import annotations

from pathlib import Path

from experiments import cell_run
from experiments.report import stats


def render(results: Path) -> str:
    rows = stats.rows(results / "cell_run" / "bandwidth.csv")
    rounds = sorted({int(r["round"]) for r in rows})
    nodes = list(dict.fromkeys(r["node"] for r in rows))
    by = {(r["node"], int(r["round"])): r for r in rows}

    def cell(node: str, rnd: int) -> str:
        r = by.get((node, rnd))
        if r is None:
            return "-"
        return (f"{float(r['bandwidth_mhz']):.1f} MHz = {float(r['rate_mbit']):.2f} Mbit/s "
                f"(split {r['split']})")

    body = [[node, next(r["device_class"] for r in rows if r["node"] == node),
             *(cell(node, rnd) for rnd in rounds)] for node in nodes]
    changed = sum(len({by[(n, k)]["subchannels"] for k in rounds if (n, k) in by}) > 1
                  for n in nodes)
    gaps = [float(r["allocation_gap"]) for r in rows if r["allocation_gap"]]
    searches = sorted({r["allocation_search"] for r in rows})
    certified = (f"gaps up to {100 * max(gaps):.3g}%" if gaps else "no certified gap")
    keys = " ".join(f"{k}={v}" for k, v in cell_run.CELL.items())
    return (
        "## The default job in a cell\n\n"
        "`python -m experiments.cell_run` (`results/cell_run/bandwidth.csv`, the run folder "
        "beside it): the built-in job in-process with the real ServerApp and ClientApp code "
        f"and `{keys}`. The simulated 5G and LTE clients share the cell; the allocator gives "
        "each its subchannels every round, jointly with its split and server share, and the "
        "stream paces it at that rate. Per round, each cell client's band, the rate it was "
        f"paced at and its split; {changed} of the {len(nodes)} cell clients got different "
        "shares in different rounds (speeds re-measured every round). The allocator's "
        f"certificate: {', '.join(searches)}, {certified}.\n\n"
        + stats.table(["client", "device", *(f"round {k}" for k in rounds)], body)
        + "\n![clients](../results/cell_run/figures/clients.png)\n")
