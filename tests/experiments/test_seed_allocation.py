"""Seed A figures: the quick run writes every file, and its numbers obey what the methods say."""

import csv

import numpy as np
import pytest

from experiments import seed_allocation as experiment


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("seed_allocation")
    return out, experiment.main(["--quick", "--out", str(out)])


def by_scenario(rows, keys=("variant", "n_users", "n_servers", "seed")):
    """Rows grouped by scenario (and sweep point, where there is one): {key: {method: row}}."""
    groups = {}
    for r in rows:
        key = tuple(r.get(k) for k in (*keys, "swept", "weight"))
        groups.setdefault(key, {})[r["method"]] = r
    return groups


def test_every_csv_and_png_is_written(quick):
    out, report = quick
    for variant in experiment.VARIANTS:
        for name in experiment.EXPERIMENTS:
            rows = list(csv.DictReader((out / f"{name}_{variant}.csv").open()))
            assert len(rows) == len(report["rows"][variant][name]) > 0
            assert (out / f"{name}_{variant}.png").stat().st_size > 10_000
    claims = list(csv.DictReader((out / "claims.csv").open()))
    assert len(claims) == len(report["claims"]) >= 2 * 10
    assert {c["reproduced"] for c in claims} <= {"yes", "no"}


@pytest.mark.parametrize("name", ["collaborative", "weight_sweep", "users"])
def test_fp_objective_is_at_most_every_baseline_on_the_same_scenario(quick, name):
    for variant, results in quick[1]["rows"].items():
        for methods in by_scenario(results[name]).values():
            fp = methods.pop("fp")
            # The makespan model's fp is exact to its tolerance (1e-6) and certified gap.
            slack = 1e-9 if np.isnan(fp["gap"]) else max(1e-6, fp["gap"])
            assert methods, variant
            for method, r in methods.items():
                assert fp["objective"] <= r["objective"] * (1 + slack), (variant, name, method)


def test_exhaustive_is_the_floor_and_fp_reaches_it(quick):
    for results in quick[1]["rows"].values():
        for methods in by_scenario(results["oracle"]).values():
            best = methods["exhaustive"]["objective"]
            assert all(r["objective"] >= best * (1 - 1e-9) for r in methods.values())
            assert methods["fp"]["objective"] == pytest.approx(best, rel=1e-6)
            assert methods["local-only"]["objective"] > 2 * best  # the oracle really searched


def test_objective_history_starts_at_the_reference_and_never_increases(quick):
    for results in quick[1]["rows"].values():
        rows = results["convergence"]
        for m in {r["n_servers"] for r in rows}:
            hist = experiment.padded_histories(rows, m)
            np.testing.assert_allclose(hist[:, 0], 3.0)  # w_e + w_t + w_s at the reference
            assert np.all(np.diff(hist, axis=1) <= 0)
            assert hist[:, -1].max() < 3.0


@pytest.mark.parametrize("swept,metric", [("energy", "energy_j"), ("delay", "delay_s")])
def test_raising_a_weight_raises_the_objective_and_lowers_its_own_cost(quick, swept, metric):
    for variant, results in quick[1]["rows"].items():
        cfg = experiment.config_of(variant, quick=True)
        lo, hi = cfg.weight_values[0], cfg.weight_values[-1]
        fp = {(r["seed"], r["weight"]): r for r in results["weight_sweep"]
              if r["method"] == "fp" and r["swept"] == swept}
        for seed in range(cfg.seeds):
            low, high = fp[(seed, lo)], fp[(seed, hi)]
            assert high["objective"] > low["objective"]
            assert high[metric] <= low[metric] * (1 + 1e-6)


def test_claims_name_their_numbers(quick):
    claims = {(c["variant"], c["claim"]): c for c in quick[1]["claims"]}
    for variant in experiment.VARIANTS:
        warning = claims[(variant, "(seed-note warning) the optimum puts a_n = 1 for most users")]
        assert "mean split" in warning["evidence"]
        exact = claims[(variant, "fp reaches the exhaustive optimum on small instances")]
        assert exact["reproduced"] == "yes"
    for variant in ("paper", "physical"):  # the paper's cost model: split 1 everywhere
        warning = claims[(variant, "(seed-note warning) the optimum puts a_n = 1 for most users")]
        assert warning["reproduced"] == "yes"
    certified = [c for c in quick[1]["claims"] if c["variant"] == "makespan"
                 and c["claim"].startswith("fp certified")]
    assert certified and certified[0]["reproduced"] == "yes"
