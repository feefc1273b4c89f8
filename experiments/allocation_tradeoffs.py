"""Does the split matter? fp against fixed splits and SflLLM's rule under the makespan
model, 8 to 200 clients, on their own links and in a shared cell.

The built-in job's shape (SmolLM2-135M as the run config builds it: batch 4 x 32 tokens,
float32 activations on the wire), clients drawn from the device catalogue, one server of a
catalogue class, catalogue speeds (no calibration). For every scenario: fp, edge-only (split 1),
local-only (each device's deepest split), every single split for all clients (the best one by
makespan is "best fixed"), random and sflllm (SflLLM's rule: greedy subchannels, each client's
fastest split; `makespan_methods.sflllm`). The objective's weights are swept from the paper's
(time, energy and stability alike) to time alone, since which split wins depends on what the
user pays for. Writes ``tradeoffs.csv`` (one row per scenario and method), ``summary.csv``
(means over scenarios, and whether fp has >= 3 distinct splits and a makespan >= 20% below
best fixed and edge-only) and ``tradeoffs.png`` to ``--out``.

The cell (SflLLM's and seed A's setting): the same clients all attached to one base station,
sharing its 20 MHz uplink in 100 subchannels, each at the spectral efficiency of its draw; fp
decides each client's subchannels with its split and server share, sflllm by its greedy rule,
edge-only and "equal" (split 1, the band and the server split evenly) are the references.
Writes ``cell.csv`` (one row per scenario and method) and ``cell_summary.csv`` (per point:
fp's and sflllm's makespan and objective, mean and 95% interval over the scenarios, and fp's
relative improvement on each). ``--part`` runs one of the two. Usage::

    nice -n 10 python -m experiments.allocation_tradeoffs [--quick] [--seeds N]
        [--part all|splits|cell] [--out DIR]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # must precede the numpy import to take effect

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from allocation import ModelCost, Weights, catalogue_scenario, evaluate, solve  # noqa: E402
from allocation.makespan_model import equal_channels  # noqa: E402
from allocation.makespan_result import MakespanAllocation  # noqa: E402
from allocation.makespan_solver import equal_shares, fastest_link  # noqa: E402
from edgesplit.hardware import DEFAULT_SERVER  # noqa: E402
from edgesplit.settings import Settings  # noqa: E402
from edgesplit.split_model import SplitModel  # noqa: E402
from experiments.plotting import save, subplots, write_csv  # noqa: E402
from strategies.split_fed import model_cost  # noqa: E402

#: Objective weights swept: (label, energy and stability weight; time weight 1).
WEIGHTS = (("paper (1,1,1)", 1.0), ("time x10", 0.1), ("time x100", 0.01), ("time only", 0.0))
MUST = {"distinct_splits": 3, "reduction": 0.2}  # issue 15's bar
#: The cell of the cell scenarios.
CELL = {"cell_links": ("wifi", "5g", "lte"), "cell_bandwidth_hz": 20e6,
        "cell_subchannels": 100}


def default_model() -> ModelCost:
    """The cost model's view of the built-in job, from the real model and settings."""
    settings = Settings()
    return model_cost(settings, SplitModel(settings.model_name, settings.lora))


def scenario_rows(model: ModelCost, n_users: int, seed: int, server: str, label: str,
                  other: float, time_limit_s: float) -> list[dict]:
    """Every method on one scenario; ``fixed-k`` rows for k = 1..Y-1."""
    weights = Weights(energy=other, stability=other)
    sc = catalogue_scenario(n_users, model, seed=seed, servers=(server,), weights=weights)
    keys = {"n_users": n_users, "server": server, "weights": label, "seed": seed}
    rows = []

    def add(name: str, alloc, seconds: float = float("nan")) -> None:
        rows.append({**keys, "method": name, "makespan_s": alloc.delay,
                     "energy_j": alloc.energy, "stability": alloc.stability,
                     "objective": alloc.objective,
                     "distinct_splits": int(np.unique(alloc.split).size),
                     "mean_split": float(np.mean(alloc.split)), "gap": alloc.gap,
                     "seconds": seconds})

    started = time.perf_counter()
    add("fp", solve(sc, "fp", time_limit_s=time_limit_s), time.perf_counter() - started)
    for method in ("edge-only", "local-only", "random", "sflllm"):
        add(method, solve(sc, method, seed=seed))
    for k in range(1, sc.layers):
        add(f"fixed-{k}", solve(sc, "fixed", split=k))
    return rows


def cell_rows(model: ModelCost, n_users: int, seed: int, server: str, label: str,
              other: float, time_limit_s: float) -> list[dict]:
    """fp, sflllm, edge-only and equal on one cell scenario (module docstring)."""
    weights = Weights(energy=other, stability=other)
    sc = catalogue_scenario(n_users, model, seed=seed, servers=(server,), weights=weights,
                            **CELL)
    keys = {"n_users": n_users, "server": server, "weights": label, "seed": seed,
            "cell_clients": int(sc.cell.sum())}
    assoc = fastest_link(sc)
    equal = MakespanAllocation(sc.min_split, assoc, equal_shares(sc, assoc), equal_channels(sc))
    rows = []
    for name, alloc in (("fp", solve(sc, "fp", time_limit_s=time_limit_s)),
                        ("sflllm", solve(sc, "sflllm")), ("edge-only", solve(sc, "edge-only")),
                        ("equal", equal)):
        costs = evaluate(sc, alloc)
        band = sc.bandwidth_hz(alloc.channels)[sc.cell]
        rows.append({**keys, "method": name, "makespan_s": costs.delay_s,
                     "energy_j": costs.energy_j, "stability": costs.stability,
                     "objective": costs.objective, "gap": getattr(alloc, "gap", float("nan")),
                     "mean_split": float(np.mean(alloc.split)),
                     "band_min_mhz": float(band.min() / 1e6) if band.size else float("nan"),
                     "band_max_mhz": float(band.max() / 1e6) if band.size else float("nan")})
    return rows


def summarise_cell(rows: list[dict]) -> list[dict]:
    """Per (users, server, weights): fp's and sflllm's makespan and objective over the
    scenarios (mean, 95% half-width) and fp's relative improvement on each."""
    from experiments.report.stats import mean_ci

    out = []
    groups = list(dict.fromkeys((r["n_users"], r["server"], r["weights"]) for r in rows))
    for n, server, label in groups:
        part = [r for r in rows if (r["n_users"], r["server"], r["weights"]) == (n, server,
                                                                                label)]
        seeds = sorted({r["seed"] for r in part})

        def of(method: str, key: str, part: list[dict] = part, seeds: list = seeds
               ) -> list[float]:
            return [next(r[key] for r in part if r["seed"] == s and r["method"] == method)
                    for s in seeds]

        row = {"n_users": n, "server": server, "weights": label, "scenarios": len(seeds),
               "cell_clients": float(np.mean([r["cell_clients"] for r in part]))}
        for key in ("makespan_s", "objective"):
            for method in ("fp", "sflllm", "edge-only", "equal"):
                mean, half = mean_ci(of(method, key))
                row[f"{method}_{key}"], row[f"{method}_{key}_ci"] = mean, half
            gain = [1 - f / o for f, o in zip(of("fp", key), of("sflllm", key), strict=True)]
            row[f"fp_vs_sflllm_{key}"], row[f"fp_vs_sflllm_{key}_ci"] = mean_ci(gain)
        row["fp_max_gap"] = max(of("fp", "gap"))
        out.append(row)
    return out


def summarise(rows: list[dict]) -> list[dict]:
    """Means over seeds per (users, server, weights); best fixed = smallest makespan per
    scenario among the single splits."""
    out = []
    groups = sorted({(r["n_users"], r["server"], r["weights"]) for r in rows},
                    key=lambda g: (g[0], g[1], [w for w, _ in WEIGHTS].index(g[2])))
    for n, server, label in groups:
        part = [r for r in rows if (r["n_users"], r["server"], r["weights"]) == (n, server, label)]
        seeds = sorted({r["seed"] for r in part})

        def of(method: str, seed: int, part: list[dict] = part) -> dict:
            return next(r for r in part if r["method"] == method and r["seed"] == seed)

        fp = [of("fp", s) for s in seeds]
        edge = [of("edge-only", s)["makespan_s"] for s in seeds]
        best = [min((r for r in part if r["seed"] == s and r["method"].startswith("fixed-")),
                    key=lambda r: r["makespan_s"]) for s in seeds]
        vs_best = [1 - f["makespan_s"] / b["makespan_s"] for f, b in zip(fp, best, strict=True)]
        vs_edge = [1 - f["makespan_s"] / e for f, e in zip(fp, edge, strict=True)]
        distinct = [f["distinct_splits"] for f in fp]
        out.append({
            "n_users": n, "server": server, "weights": label, "scenarios": len(seeds),
            "fp_makespan_s": np.mean([f["makespan_s"] for f in fp]),
            "best_fixed_makespan_s": np.mean([b["makespan_s"] for b in best]),
            "best_fixed_split": " ".join(b["method"][6:] for b in best),
            "edge_only_makespan_s": np.mean(edge),
            "fp_reduction_vs_best_fixed": np.mean(vs_best),
            "fp_reduction_vs_edge_only": np.mean(vs_edge),
            "fp_distinct_splits_min": min(distinct), "fp_mean_split":
                np.mean([f["mean_split"] for f in fp]),
            "fp_energy_j": np.mean([f["energy_j"] for f in fp]),
            "edge_only_energy_j": np.mean([of("edge-only", s)["energy_j"] for s in seeds]),
            "fp_max_gap": max(f["gap"] for f in fp),
            "meets_issue_bar": (min(distinct) >= MUST["distinct_splits"]
                                and min(vs_best) >= MUST["reduction"]
                                and min(vs_edge) >= MUST["reduction"]),
        })
    return out


def plot(summary: list[dict], path: Path) -> Path:
    servers = sorted({r["server"] for r in summary})
    fig, axes = subplots(len(servers), len(WEIGHTS), sharey="row")
    for i, server in enumerate(servers):
        for j, (label, _) in enumerate(WEIGHTS):
            part = [r for r in summary if r["server"] == server and r["weights"] == label]
            n = [r["n_users"] for r in part]
            ax = axes[i, j]
            for key, name, style in (("fp_makespan_s", "fp", "o-"),
                                     ("best_fixed_makespan_s", "best fixed split", "s--"),
                                     ("edge_only_makespan_s", "edge-only (split 1)", "^:")):
                ax.plot(n, [r[key] for r in part], style, label=name)
            ax.set(xscale="log", yscale="log", title=f"{server}, {label}",
                   xlabel="clients", ylabel="modelled makespan per step (s)")
    axes[0, 0].legend()
    return save(fig, path)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 scenario per point, 8 and 50 clients, fp's budget 2 s")
    parser.add_argument("--seeds", type=int, default=3, help="scenarios per point")
    parser.add_argument("--servers", nargs="+", default=[DEFAULT_SERVER, "cpu-epyc-9654"])
    parser.add_argument("--time-limit-s", type=float, default=10.0,
                        help="fp's budget (CPU s)")
    parser.add_argument("--part", choices=("all", "splits", "cell"), default="all")
    parser.add_argument("--out", type=Path, default=Path("results/allocation_tradeoffs"))
    args = parser.parse_args(argv)
    model = default_model()
    counts = (8, 50) if args.quick else (8, 50, 200)
    seeds = 1 if args.quick else args.seeds
    if args.quick:  # a smoke run: fp's certified gap says what the short budget cost
        args.time_limit_s = min(args.time_limit_s, 2.0)
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    summary: list[dict] = []
    if args.part in ("all", "splits"):
        rows = []
        for server in args.servers:
            for n in counts:
                for label, other in WEIGHTS:
                    for seed in range(seeds):
                        rows += scenario_rows(model, n, seed, server, label, other,
                                              args.time_limit_s)
                    print(f"{server} N={n} {label}: {time.perf_counter() - started:.0f} s",
                          flush=True)
        summary = summarise(rows)
        write_csv(rows, args.out / "tradeoffs.csv")
        write_csv(summary, args.out / "summary.csv")
        plot(summary, args.out / "tradeoffs.png")
        for r in summary:
            print(f"{r['server']:>14} N={r['n_users']:>3} {r['weights']:>13}: fp "
                  f"{r['fp_makespan_s'] * 1e3:8.1f} ms, best fixed "
                  f"{r['best_fixed_makespan_s'] * 1e3:8.1f} ms (split {r['best_fixed_split']}), "
                  f"edge-only {r['edge_only_makespan_s'] * 1e3:8.1f} ms | fp -"
                  f"{100 * r['fp_reduction_vs_best_fixed']:4.1f}% / -"
                  f"{100 * r['fp_reduction_vs_edge_only']:4.1f}%, >= "
                  f"{r['fp_distinct_splits_min']} splits, gap {r['fp_max_gap']:.1e}"
                  f"{'  MEETS BAR' if r['meets_issue_bar'] else ''}")
    if args.part in ("all", "cell"):
        cell = []
        for server in args.servers:
            for n in (8, 50):
                for label, other in WEIGHTS:
                    for seed in range(seeds):
                        cell += cell_rows(model, n, seed, server, label, other,
                                          args.time_limit_s)
                print(f"cell {server} N={n}: {time.perf_counter() - started:.0f} s",
                      flush=True)
        write_csv(cell, args.out / "cell.csv")
        cell_summary = summarise_cell(cell)
        write_csv(cell_summary, args.out / "cell_summary.csv")
        for r in cell_summary:
            print(f"cell {r['server']:>14} N={r['n_users']:>3} {r['weights']:>13}: makespan "
                  f"fp {r['fp_makespan_s']:.3f} s, sflllm {r['sflllm_makespan_s']:.3f} s "
                  f"(fp {-100 * r['fp_vs_sflllm_makespan_s']:+.1f}%), objective fp "
                  f"{-100 * r['fp_vs_sflllm_objective']:+.1f}% vs sflllm")
    print(f"{time.perf_counter() - started:.0f} s; wrote {args.out}")
    return summary


if __name__ == "__main__":
    main()
