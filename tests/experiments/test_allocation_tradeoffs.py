"""The trade-off table and the model-fit table: their summaries say what their rows say."""

import pytest

from allocation import ModelCost
from allocation.makespan_methods import TOLERANCE
from experiments import allocation_tradeoffs as tradeoffs
from experiments.model_fit import client_rows

SMALL = ModelCost(layers=8, hidden_size=576, batch_size=4, seq_len=32, activation_bits=32,
                  vocab_size=49152)


def test_every_method_of_a_scenario_is_costed_and_fp_is_the_best_objective():
    rows = tradeoffs.scenario_rows(SMALL, 4, 0, "cpu-epyc-9654", "time only", 0.0, 10.0)
    methods = [r["method"] for r in rows]
    assert methods == ["fp", "edge-only", "local-only", "random", "sflllm",
                       *(f"fixed-{k}" for k in range(1, 8))]
    fp = rows[0]
    assert all(fp["objective"] <= r["objective"] * (1 + TOLERANCE) for r in rows)
    assert fp["gap"] <= TOLERANCE * (1 + 1e-9)


def test_a_cell_scenario_costs_fp_sflllm_and_the_references_and_summarises_them():
    rows = [r for seed in range(2)
            for r in tradeoffs.cell_rows(SMALL, 8, seed, "cpu-epyc-9654", "time only", 0.0,
                                         10.0)]
    assert [r["method"] for r in rows[:4]] == ["fp", "sflllm", "edge-only", "equal"]
    for seed in range(2):
        fp, *others = [r for r in rows if r["seed"] == seed]
        assert fp["cell_clients"] >= 1
        assert all(fp["objective"] <= o["objective"] * (1 + TOLERANCE) for o in others)
    (summary,) = tradeoffs.summarise_cell(rows)
    fp = [r["makespan_s"] for r in rows if r["method"] == "fp"]
    sfl = [r["makespan_s"] for r in rows if r["method"] == "sflllm"]
    assert summary["scenarios"] == 2
    assert summary["fp_makespan_s"] == pytest.approx(sum(fp) / 2)
    assert summary["fp_vs_sflllm_makespan_s"] == pytest.approx(
        sum(1 - f / s for f, s in zip(fp, sfl, strict=True)) / 2)


def test_summary_picks_the_best_fixed_split_per_scenario_and_checks_the_bar():
    def row(seed, method, makespan, splits=1):
        return {"n_users": 8, "server": "l4", "weights": "time only", "seed": seed,
                "method": method, "makespan_s": makespan, "energy_j": 1.0, "stability": 1.0,
                "objective": makespan, "distinct_splits": splits, "mean_split": 2.0, "gap": 0.0,
                "seconds": 0.0}

    rows = [row(0, "fp", 0.6, 3), row(0, "edge-only", 1.0), row(0, "fixed-1", 1.0),
            row(0, "fixed-2", 0.8), row(1, "fp", 0.7, 4), row(1, "edge-only", 1.0),
            row(1, "fixed-1", 1.0), row(1, "fixed-2", 0.9)]
    (summary,) = tradeoffs.summarise(rows)
    assert summary["best_fixed_split"] == "2 2"
    assert summary["fp_reduction_vs_best_fixed"] == pytest.approx((0.25 + 1 - 0.7 / 0.9) / 2)
    assert summary["fp_reduction_vs_edge_only"] == pytest.approx(0.35)
    assert summary["meets_issue_bar"]  # 3+ splits and >= 20% below both, in every scenario
    rows[4]["makespan_s"] = 0.8  # seed 1: only 11% below its best fixed split
    assert not tradeoffs.summarise(rows)[0]["meets_issue_bar"]


def test_model_fit_rows_divide_modelled_by_measured():
    client = {"node": 1, "device_class": "raspberry-pi-5", "split": 3, "server_share": 0.5,
              "modelled_device_s": 2.0, "modelled_transfer_s": 0.5, "modelled_server_s": 1.0,
              "modelled_queue_s": 1.0, "modelled_s": 4.5, "measured_device_s": 4.0,
              "measured_server_s": 0.5, "measured_wait_s": 4.5, "measured_s": 9.0}
    (entry,) = client_rows([{"round": 1, "clients": [client]}])
    assert (entry["ratio"], entry["ratio_device"], entry["ratio_server"]) == (0.5, 0.5, 2.0)
    failed = {k: v for k, v in client.items() if not k.startswith("measured")}
    (entry,) = client_rows([{"round": 2, "clients": [failed]}])
    assert entry["ratio"] is None and entry["measured_s"] is None
