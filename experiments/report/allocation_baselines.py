"""fp against SflLLM's allocation rule (Zhao et al., GLOBECOM 2025) in the makespan model, on
the catalogue clients' own links and in a shared cell.

Reads `results/allocation_tradeoffs/tradeoffs.csv` and `cell.csv` (`python -m
experiments.allocation_tradeoffs`).
"""

from __future__ import annotations

from pathlib import Path

from experiments import allocation_tradeoffs as tradeoffs
from experiments.report import stats


def _relative(rows: list[dict], key: str, group: dict, better: str, worse: str) -> list[float]:
    """Per scenario of the group: 1 - better / worse of column ``key``."""
    mine = [r for r in rows if all(r[k] == str(v) for k, v in group.items())]
    by_seed = {}
    for r in mine:
        by_seed.setdefault(r["seed"], {})[r["method"]] = float(r[key])
    return [1 - m[better] / m[worse] for m in by_seed.values() if better in m and worse in m]


def _pct(values: list[float]) -> str:
    return stats.fmt_ci([100 * v for v in values], digits=1, unit="%")


def render(results: Path) -> str:
    folder = results / "allocation_tradeoffs"
    cell = stats.rows(folder / "cell.csv")
    groups = list(dict.fromkeys((r["server"], r["n_users"], r["weights"]) for r in cell))
    body = []
    for server, n, weights in groups:
        group = {"server": server, "n_users": n, "weights": weights}
        cells = stats.column(cell, "cell_clients", method="fp", **group)
        body.append([server, n, f"{sum(cells) / len(cells):.1f}", weights,
                     stats.fmt_ci(stats.column(cell, "makespan_s", method="fp", **group), 3),
                     stats.fmt_ci(stats.column(cell, "makespan_s", method="sflllm", **group), 3),
                     _pct(_relative(cell, "makespan_s", group, "fp", "sflllm")),
                     _pct(_relative(cell, "objective", group, "fp", "sflllm")),
                     _pct(_relative(cell, "makespan_s", group, "fp", "equal"))])
    own = stats.rows(folder / "tradeoffs.csv")
    own_groups = list(dict.fromkeys((r["server"], r["n_users"], r["weights"]) for r in own
                                    if r["method"] == "sflllm"))
    own_body = []
    for server, n, weights in own_groups:
        group = {"server": server, "n_users": n, "weights": weights}
        own_body.append([server, n, weights,
                         _pct(_relative(own, "makespan_s", group, "fp", "sflllm")),
                         _pct(_relative(own, "objective", group, "fp", "sflllm"))])
    return (
        "## fp against SflLLM's rule\n\n"
        "`python -m experiments.allocation_tradeoffs` (`results/allocation_tradeoffs/cell.csv`, "
        "`tradeoffs.csv`). SflLLM (Zhao et al., GLOBECOM 2025) allocates by alternating a "
        "greedy subchannel assignment (one each, then every other to the client whose step is "
        "slowest) with each client's fastest split given its subchannels; its LoRA rank and "
        "power control are not decisions in our model, and its server shares are solved "
        "exactly for its splits, as every baseline's are (`allocation.makespan_methods."
        "sflllm`). The built-in job's shape, catalogue clients; in the cell, the clients on "
        + ", ".join(tradeoffs.CELL["cell_links"])
        + f" links share one base station's {tradeoffs.CELL['cell_bandwidth_hz'] / 1e6:g} MHz "
        f"uplink of {tradeoffs.CELL['cell_subchannels']} subchannels, each at the spectral "
        "efficiency of its draw. Improvements are fp's relative to the "
        "other method on the same scenario (positive: fp lower), mean and 95% interval over "
        "the scenarios. \"equal\": split 1 with the server and the band split evenly.\n\n"
        + stats.table(["server", "clients", "in the cell", "weights", "fp makespan s",
                       "SflLLM makespan s", "fp makespan vs SflLLM",
                       "fp objective vs SflLLM", "fp makespan vs equal"], body)
        + "\nOn their own links (no band to divide, so SflLLM's rule is each client's fastest "
        "split at an equal server share):\n\n"
        + stats.table(["server", "clients", "weights", "fp makespan vs SflLLM",
                       "fp objective vs SflLLM"], own_body))
