"""The first-come-first-served server: its mean-value equations checked by hand (so a wrong
response function fails here, not only against itself), the branch and bound's bounds below
the enumerated optimum, fp within its tolerance of exhaustive search on each instance, and a
certified gap that covers the true one however early the search stops."""

import dataclasses

import numpy as np
import pytest

from allocation import METHODS, ModelCost, Weights, catalogue_scenario, solve
from allocation.fifo_search import ItemLists, node_bound, response_lower_bound
from allocation.makespan_methods import TOLERANCE
from allocation.makespan_model import fifo_response_s, server_work_s, step_times
from allocation.makespan_solver import Tables
from tests.allocation.instances import small_makespan

FIFO = {"queue": "fifo", "max_layers": 6, "max_servers": 1}


def by_hand_residual(base, work, association, capacity, start, response) -> float:
    """Largest relative residual of ``R_n = W_n + sum_k o_nk Q_k W_k / c`` (Q_k = R_k /
    (B_k + R_k); o_nk the share of n's window [s_n, s_n + B_n + R_n] that k's overlaps, 1
    without starts), over the users k on n's server, in plain Python."""
    n = len(base)
    worst = 0.0
    for i in range(n):
        total = work[i]
        for k in range(n):
            if k == i or association[k] != association[i]:
                continue
            overlap = 1.0
            if start is not None:
                lo = max(start[i], start[k])
                hi = min(start[i] + base[i] + response[i], start[k] + base[k] + response[k])
                overlap = max(0.0, hi - lo) / (base[i] + response[i])
            queued = response[k] / (base[k] + response[k])
            total += overlap * queued * work[k] / capacity[association[i]]
        worst = max(worst, abs(total - response[i]) / response[i])
    return worst


@pytest.mark.parametrize("offsets", [False, True])
def test_the_response_solves_the_mean_value_equations(offsets):
    """At low, mid and high load, with and without start offsets and on several servers."""
    rng = np.random.default_rng(7)
    for load in (0.1, 1.0, 10.0):
        for _ in range(5):
            n = int(rng.integers(2, 7))
            base, work = rng.uniform(0.1, 1.0, n), load * rng.uniform(0.01, 0.1, n)
            association = rng.integers(0, 2, n)
            capacity = rng.choice([1.0, 2.0], 2)
            start = rng.uniform(0.0, 2.0, n) if offsets else None
            response = fifo_response_s(base, work, association, capacity, start)
            assert np.all(response >= work)
            assert by_hand_residual(base, work, association, capacity, start,
                                    response) <= 1e-6


@pytest.mark.parametrize("seed", range(30))
def test_fifo_bounds_stay_below_the_enumerated_optimum(seed):
    """The root bound is below the optimum, and the bound's least response at any vector is
    below the model's."""
    sc = small_makespan(seed, **FIFO)
    best = solve(sc, "exhaustive").objective
    tables = Tables(sc)
    items = ItemLists(tables, tables.items())
    root = node_bound(items, items.valid.copy(), np.inf, 0.0)
    assert root.value <= best * (1 + 1e-9)
    rng = np.random.default_rng(seed)
    for _ in range(5):
        pick = np.array([rng.choice(np.flatnonzero(v)) for v in items.valid])
        vector = items.vector(pick)
        device, transfer, _ = step_times(sc, vector.split, vector.association, 1.0)
        work = server_work_s(sc, vector.split, vector.association)
        response = fifo_response_s(device + transfer, work, vector.association,
                                   sc.concurrency, sc.start_step_s)
        assert np.all(response_lower_bound(items, pick) <= response * (1 + 1e-9))


def test_the_fifo_instances_are_mostly_not_edge_only():
    optima = [solve(small_makespan(seed, **FIFO), "exhaustive") for seed in range(30)]
    floors = [small_makespan(seed, **FIFO).min_split for seed in range(30)]
    deeper = sum(np.any(o.split > f) for o, f in zip(optima, floors, strict=True))
    assert deeper >= 15


@pytest.mark.parametrize("seed", range(30))
def test_fp_under_a_fifo_server_is_within_its_tolerance_of_exhaustive_search(seed):
    sc = small_makespan(seed, **FIFO)
    fp, best = solve(sc, "fp"), solve(sc, "exhaustive")
    true_gap = (fp.objective - best.objective) / fp.objective
    assert fp.search == "branch and bound: exact" and fp.gap <= TOLERANCE * (1 + 1e-9)
    assert -1e-9 <= true_gap <= fp.gap + 1e-9


def test_a_search_stopped_at_once_still_certifies_a_gap_that_covers_the_true_one():
    """No time at all: the root's bound against the first incumbent (some instances are
    settled by the root alone)."""
    stopped = 0
    for seed in range(12):
        sc = small_makespan(seed, **FIFO)
        fp, best = solve(sc, "fp", time_limit_s=0.0), solve(sc, "exhaustive")
        stopped += fp.search == "branch and bound: budget"
        assert np.isfinite(fp.gap)
        assert (fp.objective - best.objective) / fp.objective <= fp.gap + 1e-9
    assert stopped >= 4


def test_fp_under_a_fifo_server_certifies_a_gap_beyond_enumeration():
    """12 users x 7 splits (7^12 vectors): a finite certified gap, and never worse than a
    baseline."""
    model = ModelCost(layers=8, hidden_size=64, batch_size=8, seq_len=64, activation_bits=32)
    sc = dataclasses.replace(
        catalogue_scenario(12, model, seed=2, servers=("cpu-epyc-9654",),
                           weights=Weights(energy=0.1, stability=0.1)),
        queue="fifo", start_s=np.random.default_rng(2).uniform(0.0, 30.0, 12), local_steps=20)
    fp = solve(sc, "fp", time_limit_s=20.0)
    assert np.isfinite(fp.gap) and fp.gap < 0.05
    others = [solve(sc, m) for m in sorted(METHODS) if m not in ("fp", "exhaustive", "fixed")]
    others += [solve(sc, "fixed", split=k) for k in range(1, sc.layers)]
    assert all(fp.objective <= o.objective * (1 + 1e-9) for o in others)
