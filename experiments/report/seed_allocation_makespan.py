"""Seed A's experiments under the makespan model."""

from __future__ import annotations

from pathlib import Path

from .seed_allocation import FOLDER, claims_table, method_mean
from .stats import column, num, rows


def render(results: Path) -> str:
    m = "makespan"
    energy = {k: method_mean(results, "collaborative", m, k, "energy_j")
              for k in ("fp", "edge-only", "local-only")}
    collaborative = rows(results / FOLDER / "collaborative_makespan.csv")
    distinct = [int(v) for v in column(collaborative, "distinct_splits", method="fp")]
    mean_split = method_mean(results, "collaborative", m, "fp", "mean_split")
    return f"""## Seed A under the makespan model

The seed-A experiments (`python -m experiments.seed_allocation`, 8 minutes) also run under the
makespan model (`*_makespan.csv/png`, claims with variant `makespan` in `claims.csv`, beside the
paper-model rows): catalogue devices, the built-in job's model, servers cycling through the
catalogue's L4, A100, H100 and CPU server; 20 users on 4 servers (40 on 4 and 8 for convergence,
10-40 for the users sweep; the exact search costs more than FP at the paper's 50 x 10).

Collaborative is no longer edge-only: fp's energy ({num(energy['fp'])} J) is below edge-only's
({num(energy['edge-only'])} J; local-only {num(energy['local-only'])} J): phones and boards spend
fewer joules per FLOP than the CPU server, so some clients take a few layers (fp's distinct splits
per scenario: {", ".join(map(str, distinct))}; mean split {num(mean_split)}). The claims, worded as
for the paper model (a "no" on "between edge-only and local-only" means fp is below both):

{claims_table(results, m)}"""
