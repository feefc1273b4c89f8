"""Seed A optimiser: monotone FP, agreement with cvxpy and exhaustive search, baselines."""

import numpy as np
import pytest

from allocation import METHODS, evaluate, random_scenario, solve
from allocation.fp import fp_relaxed
from allocation.result import Allocation
from allocation.terms import Terms
from allocation.waterfilling import surrogate_server_freq_hz, surrogate_split
from tests.allocation.instances import small_scenario


def test_fp_relaxed_history_never_increases():
    sc = random_scenario(12, 3, seed=5, layers=12, server_cores=(1, 2))
    t = Terms(sc)
    _, _, history = fp_relaxed(t, np.argmax(sc.gain, 1), np.full(12, 6.0))
    assert len(history) > 2
    assert np.all(np.diff(history) <= 1e-12 * abs(history[0]))


def test_fp_relaxed_limit_is_a_stationary_point():
    # At the limit the shares are the exact water-filling for the relaxed splits, and each
    # split has zero derivative (or is at 1 with a non-negative one): the KKT conditions.
    sc = random_scenario(12, 3, seed=5, layers=12, server_cores=(1, 2))
    t = Terms(sc)
    assoc = np.argmax(sc.gain, 1)
    a, freq, _ = fp_relaxed(t, assoc, np.full(12, 6.0), max_iter=2000, tol=1e-15)
    slope = (t.device - t.server_layer_cost(freq, assoc)
             + t.stab * t.layers / (t.layers - a) ** 2) / t.device
    interior = (a > 1 + 1e-6) & (a < t.layers - 1 - 1e-6)
    assert interior.sum() >= 2
    np.testing.assert_allclose(freq, t.shares(a, assoc)[0], rtol=1e-5)
    np.testing.assert_allclose(slope[interior], 0.0, atol=1e-4)
    assert np.all(slope[a <= 1 + 1e-6] >= -1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fp_history_never_increases_and_ends_at_objective(seed):
    alloc = solve(random_scenario(20, 4, seed=seed, layers=10, server_cores=(1, 4)), "fp")
    assert np.all(np.diff(alloc.history) <= 0)
    np.testing.assert_allclose(alloc.history[-1], alloc.objective, rtol=1e-9)


def test_fast_surrogate_step_agrees_with_cvxpy():
    from allocation.cvx_reference import solve_surrogate

    sc = random_scenario(6, 2, seed=8, layers=10, server_cores=(1, 2))
    t = Terms(sc)
    assoc = np.argmax(sc.gain, 1)
    a0 = np.full(6, 4.0)
    freq0 = t.shares(a0, assoc)[0]
    z = t.device / (2 * a0)
    q = t.server_layer_cost(freq0, assoc) / (2 * (t.layers - a0))
    coef = t.coef[t.users, assoc]
    fast_a = surrogate_split(z, q, t.stab, t.layers)
    fast_f = surrogate_server_freq_hz(q, coef, assoc, sc.server_freq_hz, t.unit_time, t.kappa)
    cvx_a, cvx_f = solve_surrogate(z, q, t.stab, t.layers, coef, assoc, sc.server_freq_hz,
                                   t.unit_time, t.kappa)
    np.testing.assert_allclose(fast_a, cvx_a, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fast_f, cvx_f, rtol=1e-3)


def test_fp_fast_and_cvxpy_paths_agree():
    sc = random_scenario(5, 2, seed=9, layers=8, server_cores=(1, 2))
    fast = solve(sc, "fp", seed=0)
    ref = solve(sc, "fp", seed=0, solver="cvxpy")
    np.testing.assert_allclose(fast.objective, ref.objective, rtol=1e-6)
    np.testing.assert_array_equal(fast.split, ref.split)


def test_fp_against_exhaustive_search_on_each_small_instance():
    """Seed A's fp is a heuristic (a stationary point of the relaxation, rounded): on these 40
    instances (most with an optimum above split 1) it is optimal on at least 36 and never more
    than 3% above the optimum (measured: 92 of 100 optimal, worst 2.5%)."""
    gaps, deeper = [], 0
    for seed in range(40):
        sc = small_scenario(seed)
        best = solve(sc, "exhaustive")
        deeper += np.any(best.split > 1)
        gaps.append((solve(sc, "fp", seed=seed).objective - best.objective) / best.objective)
    gaps = np.array(gaps)
    assert deeper >= 20  # the instances are not won by edge-only
    assert gaps.min() >= -1e-9  # never below the exhaustive optimum
    assert gaps.max() <= 0.03
    assert np.sum(gaps <= 1e-6) >= 36


def test_exhaustive_matches_naive_enumeration():
    import itertools

    sc = random_scenario(2, 2, seed=3, layers=5, server_cores=(1, 2), stability=8.0)
    t = Terms(sc)
    naive = min(t.candidate(np.array(a), np.array(m)).objective
                for a in itertools.product(range(1, 5), repeat=2)
                for m in itertools.product(range(2), repeat=2))
    np.testing.assert_allclose(solve(sc, "exhaustive").objective, naive, rtol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_fp_never_worse_than_baselines(seed):
    sc = random_scenario(10, 3, seed=seed, layers=12,
                         server_cores=(1, 4) if seed % 2 else (2560, 5120))
    fp = solve(sc, "fp", seed=seed).objective
    for baseline in ("alpha-only", "resource-only", "random"):
        assert fp <= solve(sc, baseline, seed=seed).objective * (1 + 1e-12), baseline


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_is_feasible_and_deterministic(method):
    sc = random_scenario(4, 2, seed=21, layers=6, server_cores=(1, 2))
    options = {"split": 3} if method == "fixed" else {}
    a, b = solve(sc, method, **options), solve(sc, method, **options)
    evaluate(sc, a)
    np.testing.assert_array_equal(a.split, b.split)
    np.testing.assert_array_equal(a.association, b.association)
    assert a.objective == b.objective and a.method == method


def test_fixed_edge_and_local_only_splits():
    sc = random_scenario(5, 2, seed=2, layers=9)
    assert np.all(solve(sc, "fixed", split=4).split == 4)
    assert np.all(solve(sc, "edge-only").split == 1)
    assert np.all(solve(sc, "local-only").split == 8)


def test_solve_rejects_unknown_method_and_option():
    sc = random_scenario(2, 1, seed=0, layers=4)
    with pytest.raises(ValueError, match="unknown method"):
        solve(sc, "nope")
    with pytest.raises(TypeError, match="unknown options"):
        solve(sc, "fp", split=2)


def test_zero_energy_weight_without_tx_delay_makes_the_uplink_free():
    # No weight on energy and no transmission delay: the uplink costs nothing, any share will do.
    sc = random_scenario(6, 2, seed=1, layers=6, energy=0.0, include_tx_delay=False)
    alloc = solve(sc, "fp")
    evaluate(sc, alloc)
    np.testing.assert_allclose(alloc.power, sc.user_pmax_w)


def test_u_shaped_optimiser_objective_matches_the_system_model_and_exhaustive():
    """The optimisers' internal objective (Terms) must equal the system model's evaluation in a
    U-shaped split too, and fp must stay at the exhaustive optimum."""
    for seed in range(10):
        sc = random_scenario(3, 2, seed=seed, layers=7, device_tail_layers=2,
                             server_cores=(1, 4), stability=4.0)
        assert sc.layers == 5
        t = Terms(sc)
        cand = t.candidate(np.array([1, 2, 4]), np.array([0, 1, 0]))
        result = evaluate(sc, Allocation(*cand.arrays(t.user_freq)))
        np.testing.assert_allclose(cand.objective, result.objective, rtol=1e-9)
        best = solve(sc, "exhaustive").objective
        assert solve(sc, "fp", seed=seed).objective <= best * (1 + 1e-6)


def test_sflllm_deals_each_servers_band_in_subchannels_and_takes_each_users_fastest_split():
    from allocation.system_model import step_times

    sc = random_scenario(12, 3, seed=4, layers=8, server_cores=(1, 3))
    alloc = solve(sc, "sflllm")
    evaluate(sc, alloc)
    used = np.bincount(alloc.association, alloc.bandwidth, sc.n_servers)
    np.testing.assert_allclose(used, sc.server_bandwidth_hz)  # every subchannel dealt
    width = sc.server_bandwidth_hz / 50
    channels = alloc.bandwidth / width[alloc.association]
    np.testing.assert_allclose(channels, np.round(channels))
    assert channels.min() >= 1
    # Given its bandwidth, each user's split is its own fastest iteration.
    delays = np.stack([sum(step_times(sc, np.full(12, a), alloc.association, alloc.bandwidth,
                                      alloc.power, alloc.user_freq, alloc.server_freq))
                       for a in range(1, sc.layers)])
    np.testing.assert_array_equal(alloc.split, 1 + delays.argmin(axis=0))
