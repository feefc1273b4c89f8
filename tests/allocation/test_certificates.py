"""Honest certificates: the threshold walk's gap covers the true gap however its search
stops (budget, or an integer program that times out before a first solution), the
Lagrangian bound of a threshold is the knapsack's LP bound (HiGHS' LP as oracle), and the
threshold sweep equals trying every threshold."""

import itertools

import numpy as np
import pytest
from scipy.optimize import linprog

from allocation import ModelCost, catalogue_scenario, solve
from allocation.makespan_solver import Tables, Threshold, cheapest_by_threshold
from tests.allocation.instances import small_makespan

TWO_SERVERS = [s for s in range(60) if small_makespan(s).n_servers == 2][:12]


def true_gap(alloc, scenario) -> float:
    best = solve(scenario, "exhaustive").objective
    return (alloc.objective - best) / alloc.objective


@pytest.mark.parametrize("programs", [1, 2, 4])
def test_a_walk_stopped_by_its_budget_certifies_a_gap_that_covers_the_true_one(programs):
    for seed in TWO_SERVERS[:6]:
        sc = small_makespan(seed)
        fp = solve(sc, "fp", max_programs=programs)
        assert np.isnan(fp.gap) or true_gap(fp, sc) <= fp.gap + 1e-9


def _time_out_at(monkeypatch, call: int, read_as: str) -> None:
    """The `call`-th integer program (and every later one) runs out of time before a first
    solution; HiGHS then knows no bound (-inf). ``read_as``: what the walk is told."""
    original = Tables.cheapest_within
    count = itertools.count(1)

    def cheapest_within(self, tau, mask, rel_gap=1e-7, time_limit_s=None, known=None,
                        cutoff=np.inf):
        if next(count) >= call:
            return Threshold(None, -np.inf if read_as == "time-out" else np.inf, read_as)
        return original(self, tau, mask, rel_gap, time_limit_s, known, cutoff)

    monkeypatch.setattr(Tables, "cheapest_within", cheapest_within)


def test_a_time_out_keeps_its_interval_and_the_old_reading_understated_the_gap(monkeypatch):
    """A program that times out before a first solution leaves its interval open, so the
    reported gap still covers the true one (or is unknown). Reading it as "nothing fits" (as
    the solver did before) closes intervals that hold better vectors: on these instances the
    gap it reports is below the true gap."""
    understated = 0
    for seed in TWO_SERVERS:
        sc = small_makespan(seed)
        with monkeypatch.context() as patch:
            _time_out_at(patch, 2, "time-out")
            honest = solve(sc, "fp")
        assert np.isnan(honest.gap) or true_gap(honest, sc) <= honest.gap + 1e-9
        assert honest.search.startswith("threshold walk: time-out") or honest.search.startswith(
            "threshold walk: budget")
        with monkeypatch.context() as patch:
            _time_out_at(patch, 2, "infeasible")
            old = solve(sc, "fp")
        understated += true_gap(old, sc) > old.gap + 1e-9
    assert understated >= 2


@pytest.mark.parametrize("seed", range(5))
def test_the_lagrangian_bound_of_a_threshold_is_the_knapsacks_lp_bound(seed):
    model = ModelCost(layers=12, hidden_size=576, batch_size=4, seq_len=32,
                      activation_bits=32, vocab_size=49152)
    sc = catalogue_scenario(40, model, seed=seed, servers=("cpu-epyc-9654",))
    tables = Tables(sc)
    mask = tables.items()
    base, work, cost = tables.base[:, 0, :, 0], tables.work[0], tables.cost[:, 0, :]
    floor = tables.makespan_floor(mask)
    for tau in floor * np.array([1.001, 1.05, 1.3, 3.0]):
        found = tables.relaxed_within(tau, mask)
        fits = mask[:, 0, :, 0] & (base + work <= tau)
        n, k = np.nonzero(fits)
        weight = work[k] / (tau - base[n, k])
        one_each = np.zeros((sc.n_users, n.size))
        one_each[n, np.arange(n.size)] = 1.0
        lp = linprog(cost[n, k], A_ub=weight[None], b_ub=sc.concurrency,
                     A_eq=one_each, b_eq=np.ones(sc.n_users), bounds=(0, 1), method="highs")
        assert lp.status == 0
        assert found.lower_bound == pytest.approx(lp.fun, rel=1e-7)
        # The vector fits within tau (its makespan) and costs at least the bound.
        makespan, _ = tables.value(found.vector)
        assert makespan <= tau * (1 + 1e-12)
        assert cost[np.arange(sc.n_users), found.vector.split - 1].sum() >= lp.fun * (1 - 1e-9)


def test_the_threshold_sweep_equals_trying_every_threshold():
    rng = np.random.default_rng(3)
    for _ in range(20):
        finish = rng.uniform(0.0, 1.0, (5, 6))
        cost = rng.uniform(0.0, 1.0, (5, 6))
        cost[rng.random((5, 6)) < 0.2] = np.inf
        weight = float(rng.uniform(0.1, 5.0))
        tau, value = cheapest_by_threshold(finish, cost, weight)
        best = min(weight * t + np.where(finish <= t, cost, np.inf).min(axis=1).sum()
                   for t in np.unique(finish))
        assert value == pytest.approx(best)
        assert weight * tau + np.where(finish <= tau, cost, np.inf).min(axis=1).sum() == \
            pytest.approx(value)
