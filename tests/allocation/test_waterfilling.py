"""Fast exact resource solvers against brute force, KKT conditions and a general optimiser."""

import numpy as np
from scipy.optimize import minimize

from allocation.system_model import random_scenario
from allocation.terms import Terms
from allocation.waterfilling import (
    bandwidth_given_power,
    best_integer_split,
    comm_cost,
    server_freq_hz,
    solve_uplink,
    surrogate_split,
)


def test_best_integer_split_matches_brute_force():
    rng = np.random.default_rng(0)
    dev, srv, stab = rng.uniform(0.1, 2, 200), rng.uniform(0.1, 2, 200), rng.uniform(0, 1, 200)
    grid = np.arange(1, 12)[:, None]
    cost = grid * dev + (12 - grid) * srv + stab * 12 / (12 - grid)
    expected = grid[np.argmin(cost, 0), 0]
    np.testing.assert_array_equal(best_integer_split(dev, srv, stab, 12), expected)


def test_surrogate_split_matches_dense_grid():
    rng = np.random.default_rng(1)
    z, q, stab = rng.uniform(0.01, 1, 50), rng.uniform(0.01, 1, 50), rng.uniform(0, 5, 50)
    grid = np.linspace(1, 15, 140_001)[:, None]
    cost = grid**2 * z + (16 - grid) ** 2 * q + stab * 16 / (16 - grid)
    np.testing.assert_allclose(surrogate_split(z, q, stab, 16), grid[np.argmin(cost, 0), 0],
                               atol=1e-4)


def test_server_shares_satisfy_kkt_and_budget():
    # Two servers, five users: equal marginal cost per Hz on each busy server.
    rng = np.random.default_rng(2)
    weight, coef = rng.integers(1, 8, 5).astype(float), rng.uniform(1e8, 1e9, 5)
    group, budget = np.array([0, 0, 1, 1, 1]), np.array([2e9, 3e9])
    unit_time, kappa = 1.0, 1e-28
    freq, price = server_freq_hz(weight, coef, group, budget, unit_time, kappa)
    marginal = weight * coef * (unit_time / freq**2 - 2 * kappa * freq)
    np.testing.assert_allclose(np.bincount(group, freq), budget, rtol=1e-10)
    np.testing.assert_allclose(marginal, price[group], rtol=1e-8)


def test_server_shares_slack_budget_gives_unconstrained_optimum():
    freq, price = server_freq_hz(np.ones(2), np.ones(2), np.zeros(2, int), np.array([1e12]),
                                 2e-28, 1e-28)
    np.testing.assert_allclose(freq, 1.0, rtol=1e-12)  # (w_t / (2 kappa))^(1/3)
    np.testing.assert_allclose(price, 0.0)


def test_uplink_no_worse_than_general_optimiser():
    sc = random_scenario(5, 1, seed=4)
    t = Terms(sc)
    gamma, bw = t.gamma[:, 0], sc.server_bandwidth_hz[0]
    b, p, cost, _ = solve_uplink(gamma, t.alpha, t.beta, t.pmin, sc.user_pmax_w,
                                 np.zeros(5, int), sc.server_bandwidth_hz)

    def total(x):
        return comm_cost(x[:5] * bw, x[5:], gamma, t.alpha, t.beta).sum()

    rng = np.random.default_rng(0)
    best = min(
        minimize(total, np.r_[rng.dirichlet(np.ones(5)), rng.uniform(t.pmin, sc.user_pmax_w)],
                 method="SLSQP", bounds=[(1e-6, 1)] * 5 + list(zip(t.pmin, sc.user_pmax_w,
                                                                   strict=True)),
                 constraints=[{"type": "ineq", "fun": lambda x: 1 - x[:5].sum()}],
                 options={"ftol": 1e-14, "maxiter": 500}).fun
        for _ in range(5))
    assert b.sum() <= bw * (1 + 1e-9)
    assert np.all((p >= t.pmin) & (p <= sc.user_pmax_w))
    assert cost.sum() <= best * (1 + 1e-7)


def test_bandwidth_step_agrees_with_cvxpy():
    from allocation.cvx_reference import solve_bandwidth

    sc = random_scenario(7, 2, seed=6)
    t = Terms(sc)
    assoc = np.array([0, 0, 0, 1, 1, 1, 1])
    gamma, power = t.gamma[t.users, assoc], np.linspace(0.2, 1.0, 7)
    fast, _ = bandwidth_given_power(power, gamma, t.alpha, t.beta, assoc, sc.server_bandwidth_hz)
    ref = solve_bandwidth(power, gamma, t.alpha, t.beta, assoc, sc.server_bandwidth_hz)
    cost_fast = comm_cost(fast, power, gamma, t.alpha, t.beta).sum()
    cost_ref = comm_cost(ref, power, gamma, t.alpha, t.beta).sum()
    # The cost is flat near the optimum and the conic solver stops ~1e-3 away in b (its shares
    # leave the KKT prices unequal), so compare the costs tightly and the shares loosely.
    np.testing.assert_allclose(cost_fast, cost_ref, rtol=1e-6)
    assert cost_fast <= cost_ref * (1 + 1e-12)
    np.testing.assert_allclose(fast, ref, rtol=1e-2)
