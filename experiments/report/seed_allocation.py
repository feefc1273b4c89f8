"""Seed A: joint split and resource allocation, under the paper's and the physical cost model."""

from __future__ import annotations

from pathlib import Path

from .stats import column, mean, num, pct, rows, spread, table

FOLDER = "seed_allocation"


def method_mean(results: Path, experiment: str, variant: str, method: str, key: str,
                **where) -> float:
    data = rows(results / FOLDER / f"{experiment}_{variant}.csv")
    return mean(column(data, key, method=method, **where))


def claims_table(results: Path, variant: str) -> str:
    """The claims of one variant as ``claims.csv`` words them."""
    claims = [r for r in rows(results / FOLDER / "claims.csv") if r["variant"] == variant]
    return table(["claim", "reproduced", "evidence"],
                 [[c["claim"], f"**{c['reproduced']}**", c["evidence"]] for c in claims])


def users_spread(results: Path, variant: str, a: str, b: str, key: str) -> tuple[float, float]:
    """Smallest and largest ratio of method ``a`` over ``b`` (means over seeds) across the
    user counts."""
    data = rows(results / FOLDER / f"users_{variant}.csv")
    counts = sorted({int(r["n_users"]) for r in data})
    ratios = [mean(column(data, key, method=a, n_users=n)) / mean(column(data, key, method=b,
                                                                          n_users=n))
              for n in counts]
    return min(ratios), max(ratios)


def two(x: float) -> str:
    return num(x, 2)


def render(results: Path) -> str:
    p = "paper"
    fp_e = method_mean(results, "collaborative", p, "fp", "energy_j")
    edge_e = method_mean(results, "collaborative", p, "edge-only", "energy_j")
    local_e = method_mean(results, "collaborative", p, "local-only", "energy_j")
    fp_d = method_mean(results, "collaborative", p, "fp", "delay_s")
    local_d = method_mean(results, "collaborative", p, "local-only", "delay_s")
    fp_split = method_mean(results, "collaborative", p, "fp", "mean_split")
    sweep = rows(results / FOLDER / "weight_sweep_paper.csv")
    points = {(r["swept"], r["weight"]) for r in sweep}
    worst_delay = max(mean(column(sweep, "delay_s", method="fp", swept=s, weight=w))
                      / mean(column(sweep, "delay_s", method="alpha-only", swept=s, weight=w))
                      for s, w in points)
    iterations = max(column(rows(results / FOLDER / "convergence_paper.csv"), "iterations"))
    energy_paper = users_spread(results, p, "random-association", "fp", "energy_j")
    energy_phys = users_spread(results, "physical", "random-association", "fp", "energy_j")
    delay_phys = users_spread(results, "physical", "random-association", "fp", "delay_s")
    greedy_phys = users_spread(results, "physical", "fp", "greedy", "energy_j")
    oracle = rows(results / FOLDER / "oracle_paper.csv")
    best = {r["seed"]: float(r["objective"]) for r in oracle if r["method"] == "exhaustive"}
    fp_gap = max(float(r["objective"]) / best[r["seed"]] - 1 for r in oracle
                 if r["method"] == "fp")
    off = {m: mean(float(r["objective"]) / best[r["seed"]] for r in oracle if r["method"] == m)
           for m in ("local-only", "resource-only")}
    return f"""## Seed A: joint split and resource allocation

`python -m experiments.seed_allocation` (one core; `--quick` for CI) writes to
`results/seed_allocation/` one CSV (one row per scenario and method) and one PNG per experiment
and cost model, and `claims.csv`. Scenarios are `random_scenario` with the paper's settings
(50 users, 10 servers, 32 layers, all weights 1), 3 seeded scenarios per point. Two cost
models: `paper` (exchanged bits s = d and no transmission delay, as the paper writes it) and
`physical` (activations plus gradients, 2·B·d·h·16 bits, transmission delay counted).
The figures below are the `paper` model; the `physical` ones sit beside them (`*_physical.png`),
and the makespan model's (`*_makespan.png`) are discussed in "Seed A under the makespan model".
Every number is a mean over the seeded scenarios of a point: single runs of a deterministic
solver on 3 draws, not repeated measurements.

![collaborative](../results/seed_allocation/collaborative_paper.png)

Collaborative (fp) against edge-only (a = 1) and local-only (a = Y - 1). fp's mean split is
{num(fp_split)}: with the paper's constants a device layer costs orders of magnitude more time than
a server layer, so every user trains one layer on the device. The paper shows collaborative
strictly between the two; ours sits on the edge-only end (energy {num(fp_e)} J, edge-only
{num(edge_e)} J, local-only {num(local_e)} J; delay {pct(fp_d / local_d, 1)} of local-only's).

![weight sweep](../results/seed_allocation/weight_sweep_paper.png)

Each weight (energy, delay, stability) swept 1..10, the others at 1. fp has the lowest objective,
energy and stability at every point; alpha-only (full power and frequency) has a lower delay
because fp trades delay for energy, up to {num(worst_delay)}x. fp and ao tie: with every split
at 1 the quadratic transform has nothing to improve.

![convergence](../results/seed_allocation/convergence_paper.png)

fp's incumbent objective after each outer (association) iteration, 100 users and 5, 10 or 20
servers: at most {iterations:.0f} outer iterations, and it never increases.

![users](../results/seed_allocation/users_paper.png)

Energy and delay as users grow, fp against max-rate (greedy) and random association (with fp's
splits and resources). In the paper model the uplink carries d bits, so the association hardly
matters: random association's energy is {spread(energy_paper)}x fp's. In the physical model it
matters: random association costs {spread(energy_phys, two)}x fp's energy and
{spread(delay_phys, two)}x its delay, while fp's energy is {spread(greedy_phys)}x greedy's.

![oracle](../results/seed_allocation/oracle_paper.png)

Every method against the exhaustive search (3 users, 2 servers, 32 layers, 3 instances): fp's
largest gap is {pct(fp_gap, 2)}; local-only's objective is {num(off['local-only'])}x the
optimum's and resource-only's {num(off['resource-only'])}x (means). These instances are trivial
(the optimum is edge-only); the non-trivial exactness checks are in `tests/allocation`.

### Seed A claims, paper model

From `results/seed_allocation/claims.csv` (means over the scenarios of each point).

{claims_table(results, "paper")}
### Seed A claims, physical model

{claims_table(results, "physical")}
Why: with the paper's constants the split has no trade-off to resolve (the device is far slower
per layer, and the stability bound also grows with a_n), so every method that optimises the split
lands on a = 1 and the comparisons reduce to the resource allocation.
"""
