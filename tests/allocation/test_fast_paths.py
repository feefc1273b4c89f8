"""The fast paths for many users against the computations they replaced, kept here as
independent references: the bracketed price search of the share water-filling, six fixed
Newton steps of the KKT cubic, and the plain table lookup of the uplink inverses."""

import numpy as np
import pytest
from scipy.optimize import brentq

from allocation import waterfilling as wf


def _bisect_price(level, budget, lo=1e-300, hi=1e300):
    """Price at which ``level(price).sum()`` meets ``budget``: Brent on log(price)."""
    def gap(x):
        with np.errstate(over="ignore", divide="ignore"):  # ends of the bracket
            return np.log(level(np.exp(x)).sum() / budget)

    return np.exp(brentq(gap, np.log(lo), np.log(hi), xtol=1e-15, rtol=1e-15, maxiter=500))


def _kkt_six_steps(price, weight, coef, unit_time, kappa, f_star):
    """The KKT root as before: six Newton steps from ``min(F*, sqrt(w_t / beta))``."""
    beta = price / (weight * coef)
    with np.errstate(divide="ignore"):
        f = np.minimum(f_star, np.sqrt(unit_time / beta))
    for _ in range(6):
        g = (2.0 * kappa * f + beta) * f * f - unit_time
        f = f - g / ((6.0 * kappa * f + 2.0 * beta) * f)
    return f


# Per case: slots per group and groups; the KKT regime goes from shares near F* (few slots)
# to shares a thousand times below it (many slots).
CASES = [(2, 3), (30, 4), (1000, 10)]


@pytest.mark.parametrize(("per_group", "groups"), CASES)
@pytest.mark.parametrize("kappa", [0.0, 1e-37, 1e-28])
def test_server_shares_match_independent_price_search(per_group, groups, kappa):
    rng = np.random.default_rng(per_group + groups)
    n = per_group * groups
    weight, coef = rng.integers(1, 32, n).astype(float), rng.uniform(1e8, 1e9, n)
    group = np.repeat(np.arange(groups), per_group)
    budget = rng.uniform(1e9, 3e9, groups)
    unit_time = 4.7e-10
    freq, price = wf.server_freq_hz(weight, coef, group, budget, unit_time, kappa)
    f_star = (unit_time / (2.0 * kappa)) ** (1.0 / 3.0) if kappa > 0 else np.inf
    for g in range(groups):
        on = group == g
        if kappa > 0 and f_star * on.sum() <= budget[g]:
            np.testing.assert_allclose(freq[on], f_star, rtol=1e-12)
            continue
        ref_price = _bisect_price(lambda p, on=on: _kkt_six_steps(
            p, weight[on], coef[on], unit_time, kappa, f_star), budget[g])
        np.testing.assert_allclose(price[g], ref_price, rtol=1e-10)
        np.testing.assert_allclose(
            freq[on], _kkt_six_steps(ref_price, weight[on], coef[on], unit_time, kappa, f_star),
            rtol=1e-10)
        assert freq[on].sum() <= budget[g] * (1 + 1e-12)


@pytest.mark.parametrize(("per_group", "groups"), CASES)
@pytest.mark.parametrize("kappa", [0.0, 1e-37, 1e-28])
def test_surrogate_shares_match_independent_price_search(per_group, groups, kappa):
    rng = np.random.default_rng(10 + per_group)
    n = per_group * groups
    q, coef = rng.uniform(1e-3, 1.0, n), rng.uniform(1e8, 1e9, n)
    group = np.repeat(np.arange(groups), per_group)
    budget = rng.uniform(1e9, 3e9, groups)
    unit_time = 4.7e-10

    def level(p, on):  # the closed-form KKT root of the surrogate, as documented
        b = kappa * unit_time + 2.0 * q[on] * p / coef[on] ** 2
        return np.cbrt(2.0 * unit_time**2 / (b + np.sqrt(b * b + 8 * (kappa * unit_time)**2)))

    freq = wf.surrogate_server_freq_hz(q, coef, group, budget, unit_time, kappa)
    for g in range(groups):
        on = group == g
        if kappa > 0 and level(0.0, on).sum() <= budget[g]:
            np.testing.assert_allclose(freq[on], level(0.0, on), rtol=1e-12)
            continue
        ref_price = _bisect_price(lambda p, on=on: level(p, on), budget[g])
        np.testing.assert_allclose(freq[on], level(ref_price, on), rtol=1e-10)
        assert freq[on].sum() <= budget[g] * (1 + 1e-12)


def test_kkt_newton_stops_early_at_the_same_root():
    rng = np.random.default_rng(3)
    weight, coef = rng.integers(1, 32, 5000).astype(float), rng.uniform(1e8, 1e9, 5000)
    unit_time, kappa = 4.7e-10, 1.2e-37
    f_star = (unit_time / (2.0 * kappa)) ** (1.0 / 3.0)
    for price in 10.0 ** rng.uniform(-26, -12, 20):
        np.testing.assert_allclose(
            wf.kkt_server_freq(np.full(5000, price), weight, coef, unit_time, kappa, f_star),
            _kkt_six_steps(price, weight, coef, unit_time, kappa, f_star), rtol=1e-14)


@pytest.mark.parametrize(("inverse", "func"), [(wf._CHI_INV, wf._chi), (wf._PSI_INV, wf._psi)])
def test_table_inverse_matches_plain_lookup(inverse, func):
    # The lookup as it was: two gathers, clip, and the small-value branch for every entry.
    def plain(value):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.clip((np.log(value) - inverse.start) / inverse.step, 0.0,
                        inverse.log_y.size - 1.0)
        i = np.minimum(t.astype(int), inverse.log_y.size - 2)
        y = np.exp(inverse.log_y[i] + (t - i) * (inverse.log_y[i + 1] - inverse.log_y[i]))
        return np.where(t <= 0.0, np.sqrt(value / inverse.small_scale), y)

    rng = np.random.default_rng(4)
    value = np.r_[0.0, 1e-300, 1e300, np.inf, np.exp(rng.uniform(-80, 80, 100_000))]
    np.testing.assert_allclose(inverse(value), plain(value), rtol=1e-13)
    y = 10.0 ** rng.uniform(-6, 6, 1000)  # and it inverts the function
    np.testing.assert_allclose(inverse(func(y)), y, rtol=1e-8)
