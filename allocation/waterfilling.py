"""Fast exact solvers for the continuous resources: closed forms and KKT water-filling.

Every solver works on flat "slots" (one user on one server) with a group id per slot (the
server, or a copy of it when many candidate problems are solved in one batch) and a budget per
group. Water-filling finds one multiplier per group by a bracketed search on its logarithm
(false position with bisection as the fallback); the work is
vectorised over all slots and groups, so a batch of small problems costs about as much as one.
"""

from __future__ import annotations

import numpy as np

from .system_model import LN2

#: Most bracketing steps of a price search (bisection alone would reach float precision).
_MAX_STEPS = 64
#: Most Newton steps of the server-share KKT cubic (six reach float precision from its start).
_NEWTON_STEPS = 6


def group_sum(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Sum of ``values`` per group, shape (n_groups,)."""
    return np.bincount(group, weights=values, minlength=n_groups)


def _solve_price(level, group, budget, lo, hi, need=None):
    """Per-group price in [lo, hi] at which ``sum level(price)`` meets the budget.

    ``level(price_per_slot)`` is decreasing in the price; at ``lo`` a group's levels sum above its
    budget, at ``hi`` at most to it. Illinois false position on ``log(sum / budget)`` against
    ``log(price)``, nearly linear for these power-law levels, so a handful of steps reach float
    precision. Groups stop independently (a group's answer does not depend on the others), and
    the answer is the upper end of the bracket: the feasible side.
    """
    n_groups = budget.size

    def gap(x):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(group_sum(level(np.exp(x)[group]), group, n_groups) / budget)

    x_lo, x_hi = np.log(lo), np.log(hi)
    f_lo, f_hi = gap(x_lo), gap(x_hi)
    done = np.zeros(n_groups, bool) if need is None else ~need
    last = np.zeros(n_groups)  # +1: hi moved last, -1: lo moved last (Illinois bookkeeping)
    for _ in range(_MAX_STEPS):
        done |= (f_hi >= -1e-13) | (x_hi - x_lo <= 1e-13 * np.maximum(1.0, np.abs(x_hi)))
        if done.all():
            break
        with np.errstate(invalid="ignore", divide="ignore"):
            x = x_hi - f_hi * (x_hi - x_lo) / (f_hi - f_lo)
        inside = (x > x_lo) & (x < x_hi)
        x = np.where(inside, x, 0.5 * (x_lo + x_hi))
        f = gap(x)
        to_hi = ~done & (f <= 0)
        to_lo = ~done & (f > 0)
        f_lo = np.where(to_hi & (last > 0), 0.5 * f_lo, f_lo)
        f_hi = np.where(to_lo & (last < 0), 0.5 * f_hi, f_hi)
        x_hi, f_hi = np.where(to_hi, x, x_hi), np.where(to_hi, f, f_hi)
        x_lo, f_lo = np.where(to_lo, x, x_lo), np.where(to_lo, f, f_lo)
        last = np.where(to_hi, 1.0, np.where(to_lo, -1.0, last))
    return np.exp(x_hi)


def _solve_price_newton(level, group, budget, hi, need):
    """Per-group price at which ``sum level(price)`` meets the budget, and the levels there.

    Like ``_solve_price`` but with the slope: ``level(price_per_slot)`` returns the levels and
    their elasticities ``d log level / d log price`` (<= 0). Newton on ``log(sum / budget)``
    against ``log(price)`` (nearly linear: exactly so for the kappa = 0 shares) from ``hi``, a
    price at which every group fits its budget, aiming just inside the budget; a step that leaves
    the bracket known so far is replaced by bisection (or, with no lower end yet, by a step down
    of e). Three or four evaluations reach float precision where the bracketed search takes
    twelve to sixteen. The stopping rule and the answer (the feasible end of the bracket) are
    ``_solve_price``'s.

    Returns
    -------
    (price, levels) : per group, and per slot at that price.
    """
    n_groups = budget.size

    def gap(x):
        f, elasticity = level(np.exp(x)[group])
        total = group_sum(f, group, n_groups)
        with np.errstate(divide="ignore", invalid="ignore"):
            return (f, np.log(total / budget),
                    group_sum(f * elasticity, group, n_groups) / total)

    x_hi = np.log(hi)
    f_hi, g_hi, slope = gap(x_hi)
    x, g = x_hi, g_hi
    x_lo = np.full(n_groups, -np.inf)
    done = ~need
    for _ in range(_MAX_STEPS):
        done |= (g_hi >= -1e-13) | (x_hi - x_lo <= 1e-13 * np.maximum(1.0, np.abs(x_hi)))
        if done.all():
            break
        with np.errstate(divide="ignore", invalid="ignore"):
            step = x - (g + 5e-14) / slope
        inside = np.isfinite(step) & (step > x_lo) & (step < x_hi)
        fallback = np.where(np.isfinite(x_lo), 0.5 * (x_lo + x_hi), x_hi - 1.0)
        x = np.where(done, x_hi, np.where(inside, step, fallback))
        f, g, slope = gap(x)
        to_hi = ~done & (g <= 0)
        to_lo = ~done & (g > 0)
        x_hi, g_hi = np.where(to_hi, x, x_hi), np.where(to_hi, g, g_hi)
        f_hi = np.where(to_hi[group], f, f_hi)
        x_lo = np.where(to_lo, x, x_lo)
    return np.exp(x_hi), f_hi


# --- Device frequency ------------------------------------------------------------------------


def device_freq_hz(fmax_hz: np.ndarray, unit_time: float, unit_energy_k1: float) -> np.ndarray:
    """Optimal device frequency ``(w_t / (2 k1 w_e))^(1/3)`` clipped to ``fmax``.

    It minimises ``w_t/f + w_e k1 f^2`` (per-layer weighted delay plus energy), which does not
    depend on the split, so it is also the optimum of every surrogate.
    """
    if unit_energy_k1 <= 0:
        return fmax_hz.copy()
    return np.minimum((unit_time / (2.0 * unit_energy_k1)) ** (1.0 / 3.0), fmax_hz)


# --- Server frequency shares -----------------------------------------------------------------


def kkt_server_freq(price, weight, coef, unit_time, kappa, f_star):
    """Root F of ``2 kappa F^3 + (price / (weight coef)) F^2 = w_t``: KKT of the server share.

    Newton from ``min(F*, sqrt(w_t / beta))``, an upper bound within a factor sqrt(2) of the root;
    the cubic is increasing and convex for F > 0, so Newton descends monotonically to it.
    """
    beta = price / (weight * coef)
    with np.errstate(divide="ignore"):
        f = np.minimum(f_star, np.sqrt(unit_time / beta))
    if kappa == 0:  # the root is the start
        return f
    for _ in range(_NEWTON_STEPS):
        g = (2.0 * kappa * f + beta) * f * f - unit_time
        step = g / ((6.0 * kappa * f + 2.0 * beta) * f)
        f = f - step
        # Quadratic convergence: once every step is below 1e-9 relative, the next would be
        # below float precision. Far above f_star (many users per server) the start is already
        # within 1e-8, so one step suffices instead of six.
        with np.errstate(invalid="ignore"):
            if not np.any(np.abs(step) > 1e-9 * f):
                break
    return f


def server_freq_hz(weight, coef, group, budget_hz, unit_time, kappa):
    """Exact server frequency shares for fixed splits.

    Minimises ``sum weight*coef*(w_t/F + kappa F^2)`` subject to each group's shares summing to at
    most its budget, where ``weight = Y - a`` (tail layers), ``coef = psi / (C D)`` (cycles per
    layer) and ``kappa = w_e k2``. Convex and separable but for the budget: water-filling.

    Returns
    -------
    (F, price) : per-slot shares in Hz and per-group multiplier (0 where the budget is slack).
    """
    f_star = (unit_time / (2.0 * kappa)) ** (1.0 / 3.0) if kappa > 0 else np.inf
    free = np.full(weight.shape, f_star)
    free_total = group_sum(np.minimum(free, 1e300), group, budget_hz.size)
    active = free_total > budget_hz
    price = np.zeros(budget_hz.size)
    if not active.any():
        return free, price

    def level(p):
        # F solves 2 kappa F^3 + beta F^2 = w_t with beta = p / (weight coef), so
        # d log F / d log p = -beta / (6 kappa F + 2 beta).
        f = kkt_server_freq(p, weight, coef, unit_time, kappa, f_star)
        beta = p / (weight * coef)
        return f, -beta / (6.0 * kappa * f + 2.0 * beta)

    root = group_sum(np.sqrt(weight * coef), group, budget_hz.size)
    # Price of the kappa = 0 problem: shares are smaller with kappa > 0, so it is feasible.
    hi = np.maximum(unit_time * root**2 / budget_hz**2, 1e-300)
    price, freq = _solve_price_newton(level, group, budget_hz, hi, active)
    price = np.where(active, price, 0.0)
    return np.where(active[group], freq, free), price


def surrogate_server_freq_hz(q, coef, group, budget_hz, unit_time, kappa):
    """Server shares minimising the quadratic-transform surrogate ``sum B(F)^2 / (4 q)``.

    ``B(F) = coef (w_t/F + kappa F^2)``. Its KKT condition ``B B' / (2q) = -price`` is a quadratic
    in ``u = F^3`` with the closed-form positive root used here; the price by bracketed search.
    """
    def level(p):
        # F^3 = 2 w_t^2 / (b + R), R = sqrt(b^2 + c^2), so d log F / d log p
        # = -(b - kappa w_t) / (3 R).
        b = kappa * unit_time + 2.0 * q * p / coef**2
        r = np.sqrt(b * b + 8.0 * (kappa * unit_time) ** 2)
        with np.errstate(divide="ignore", invalid="ignore"):  # kappa = 0, price 0: unbounded
            return (np.cbrt(2.0 * unit_time**2 / (b + r)),
                    -(b - kappa * unit_time) / (3.0 * r))

    f_free = level(np.zeros_like(q))[0]
    active = group_sum(np.minimum(f_free, 1e300), group, budget_hz.size) > budget_hz
    if not active.any():
        return f_free
    # Price of the kappa = 0 problem, where F = (w_t^2 coef^2 / (2 q p))^(1/3): an upper bound.
    root = group_sum((unit_time**2 * coef**2 / (2.0 * q)) ** (1.0 / 3.0), group, budget_hz.size)
    hi = np.maximum((root / budget_hz) ** 3, 1e-300)
    freq = _solve_price_newton(level, group, budget_hz, hi, active)[1]
    return np.where(active[group], freq, f_free)


# --- Splits ------------------------------------------------------------------------------------


def best_integer_split(device_cost, server_cost, stab, layers):
    """Per-user optimal integer split for fixed per-layer costs.

    Minimises ``a*A + (Y-a)*B + sigma / (1 - a/Y)`` over a in {1..Y-1}: convex in a, with the
    continuous minimiser ``Y - sqrt(sigma Y / (B - A))`` when B > A; the better neighbour wins.
    """
    gap = server_cost - device_cost
    with np.errstate(divide="ignore", invalid="ignore"):
        cont = np.where(gap > 0, layers - np.sqrt(stab * layers / gap), 1.0)
    lo = np.clip(np.floor(cont), 1, layers - 1)
    hi = np.clip(lo + 1, 1, layers - 1)

    def cost(a):
        return a * device_cost + (layers - a) * server_cost + stab * layers / (layers - a)

    return np.where(cost(hi) < cost(lo), hi, lo).astype(int)


def surrogate_split(z, q, stab, layers):
    """Relaxed split minimising ``a^2 z + (Y-a)^2 q + sigma Y / (Y - a)`` on [1, Y-1].

    With ``u = Y - a`` the stationarity condition is the cubic
    ``2 (z+q) u^3 - 2 Y z u^2 - sigma Y = 0``, with one positive root, convex beyond
    ``c = Y z / (z+q)``. Newton from the upper bound ``c + (sigma Y / (2 (z+q)))^(1/3)`` descends
    monotonically to it; the objective is convex, so clipping to [1, Y-1] is exact.
    """
    s = z + q
    u = layers * z / s + np.cbrt(stab * layers / (2.0 * s))
    for _ in range(8):
        g = (2.0 * s * u - 2.0 * layers * z) * u * u - stab * layers
        u = u - g / ((6.0 * s * u - 4.0 * layers * z) * u)
    return np.clip(layers - u, 1.0, layers - 1.0)


# --- Uplink: bandwidth and power ---------------------------------------------------------------
# With SNR y = gamma p / b, the rate is r = b L(y), L(y) = log2(1 + y). Two stationarity conditions
# reduce to scalar functions of y only; their inverses are read from a fine log-log table.



def _chi(y):
    """(1+y) ln(1+y) - y. Best power at fixed bandwidth: chi(y) = beta gamma / (alpha b)."""
    return np.where(y < 1e-4, y**2 / 2 - y**3 / 6, (1 + y) * np.log1p(y) - y)


def _psi(y):
    """y^2 (ln(1+y) - y/(1+y)) ln 2 / ln(1+y)^2. Best bandwidth at fixed power and price mu:
    psi(y) = mu gamma^2 p^2 / (alpha p + beta)."""
    return y**2 * np.where(y < 1e-4, y**2 / 2 - 2 * y**3 / 3,
                           np.log1p(y) - y / (1 + y)) * LN2 / np.log1p(y) ** 2


class _Inverse:
    """Inverse of an increasing function on SNRs in [1e-12, 1e12], read from a table uniform in
    the log of the value (O(1) lookup, ~1e-9 relative error); below the table f ~ scale*y^2."""

    def __init__(self, func, small_scale: float, size: int = 2**18) -> None:
        y = np.logspace(-12, 12, 4 * size)
        log_f = np.log(func(y))
        self.start, self.step = log_f[0], (log_f[-1] - log_f[0]) / (size - 1)
        self.log_y = np.interp(self.start + self.step * np.arange(size), log_f, np.log(y))
        # Slope of each cell; the last entry (t at the top of the table) is never scaled.
        self.slope = np.append(np.diff(self.log_y), 0.0)
        self.small_scale = small_scale

    def __call__(self, value):
        value = np.asarray(value, float)
        t = np.empty_like(value)
        with np.errstate(divide="ignore", invalid="ignore"):
            np.log(value, out=t)
        t -= self.start
        t *= 1.0 / self.step
        np.clip(t, 0.0, self.log_y.size - 1.0, out=t)
        low = t <= 0.0  # below the table
        i = t.astype(np.intp)
        t -= i
        t *= self.slope[i]
        t += self.log_y[i]
        y = np.exp(t, out=t)
        if low.any():
            y = np.where(low, np.sqrt(value / self.small_scale), y)
        return y


_CHI_INV = _Inverse(_chi, 0.5)
_PSI_INV = _Inverse(_psi, LN2 / 2)


def comm_cost(bandwidth_hz, power_w, gamma, alpha, beta):
    """Weighted uplink cost ``(alpha p + beta) / r``: energy ``s p / r`` and delay ``s / r``."""
    rate = bandwidth_hz * np.log1p(gamma * power_w / bandwidth_hz) / LN2
    return (alpha * power_w + beta) / rate


def _power_step(b, gamma, alpha, beta, pmin, pmax):
    """Optimal power for fixed bandwidth: the cost is quasi-convex in p, the root is exact."""
    with np.errstate(divide="ignore"):
        y = _CHI_INV(beta * gamma / (alpha * b))
    return np.clip(y * b / gamma, pmin, pmax)


def bandwidth_given_power(p, gamma, alpha, beta, group, budget, need=None):
    """Optimal bandwidth for fixed power: convex, water-filling on ``X r_b / r^2 = mu``.

    Returns
    -------
    (bandwidth_hz, price) : per slot, and per group the cost decrease per extra Hz (only the
        groups in the optional mask ``need`` are solved).
    """
    x = alpha * p + beta
    scale = gamma**2 * p**2 / x

    def level(mu):
        return gamma * p / _PSI_INV(mu * scale)

    def slope(b):  # X r_b / r^2 at bandwidth b: the price at which b is the slot's choice
        return _psi(gamma * p / b) / scale

    count = np.bincount(group, minlength=budget.size)
    lo = np.full(budget.size, np.inf)
    hi = np.zeros(budget.size)
    np.minimum.at(lo, group, slope(budget[group]))
    np.maximum.at(hi, group, slope(budget[group] / count[group]))
    need = count > 0 if need is None else need & (count > 0)
    mu = _solve_price(level, group, budget, lo, np.maximum(hi, lo), need)
    return np.minimum(level(mu[group]), budget[group]), mu


def _bandwidth_given_snr(b, p, gamma, beta, group, budget, pmin, pmax, need):
    """Optimal bandwidth with the SNR y = gamma p / b fixed (power scales with it).

    Then the cost is ``alpha y / (gamma L) + (beta / L) / b``: water-filling ``b = sqrt(K / mu)``
    within the power box. This moves along rays (b, p) that the other two steps cannot follow.
    """
    y = gamma * p / b
    k = beta / np.log2(1 + y)
    lo_b, hi_b = gamma * pmin / y, np.minimum(gamma * pmax / y, budget[group])

    def level(mu):
        return np.clip(np.sqrt(k / mu), lo_b, hi_b)

    count = np.bincount(group, minlength=budget.size)
    full = group_sum(hi_b, group, budget.size) <= budget
    mu_lo = np.full(budget.size, np.inf)
    mu_hi = np.zeros(budget.size)
    np.minimum.at(mu_lo, group, k / hi_b**2)
    np.maximum.at(mu_hi, group, k / lo_b**2)
    mu_lo = np.maximum(mu_lo, 1e-300)
    mu = _solve_price(level, group, budget, mu_lo * 0.5, np.maximum(mu_hi, mu_lo) * 2.0,
                      need & ~full & (count > 0))
    nb = np.where(full[group], hi_b, level(mu[group]))
    return nb, y * nb / gamma


def uplink_at_price(gamma, alpha, beta, pmin, pmax, price, budget_hz, rounds: int = 4):
    """Each slot's best (b, p) when bandwidth costs ``price`` per Hz, capped at ``budget_hz``.

    Used to price a user on a server it is not on: ``cost + price * b`` is the Lagrangian
    cost of joining. A free server (price 0) gives the whole band.
    """
    b = budget_hz.copy()
    if not np.any(alpha + beta > 0):  # the uplink is free (see solve_uplink)
        return b, pmax.copy(), np.zeros_like(b)
    for _ in range(rounds):
        p = _power_step(b, gamma, alpha, beta, pmin, pmax)
        scale = gamma**2 * p**2 / (alpha * p + beta)
        with np.errstate(divide="ignore", invalid="ignore"):
            b = np.where(price > 0,
                         np.minimum(gamma * p / _PSI_INV(price * scale),
                                    budget_hz), budget_hz)
    p = _power_step(b, gamma, alpha, beta, pmin, pmax)
    return b, p, comm_cost(b, p, gamma, alpha, beta) + price * b


def solve_uplink(gamma, alpha, beta, pmin, pmax, group, budget_hz, *, rounds: int = 200,
                 tol: float = 1e-10):
    """Bandwidth and power minimising ``sum (alpha p + beta) / r`` per group.

    The cost is not jointly convex in (b, p), so this is block-coordinate descent with exact
    blocks: power for fixed bandwidth (closed form), bandwidth for fixed power (water-filling) and
    bandwidth for fixed SNR (water-filling, power follows). It starts from equal shares at full
    power, never accepts a step that raises a group's cost, and stops a group when a round gains
    less than ``tol`` relative; groups are independent, so a group's result does not depend on
    what else is in the batch.

    Returns
    -------
    (bandwidth_hz, power_w, cost, price) : per slot, per slot, per slot, per group.
    """
    n_groups = budget_hz.size
    count = np.bincount(group, minlength=n_groups)
    b = budget_hz[group] / count[group]
    p = pmax.copy()
    if not np.any(alpha + beta > 0):  # no energy weight, no transmission delay: uplink is free
        return b, p, np.zeros_like(b), np.zeros(n_groups)
    cost = comm_cost(b, p, gamma, alpha, beta)
    total = group_sum(cost, group, n_groups)
    active = count > 0
    steps = [lambda b, p: (b, _power_step(b, gamma, alpha, beta, pmin, pmax)),
             lambda b, p: (bandwidth_given_power(p, gamma, alpha, beta, group, budget_hz,
                                                 active)[0], p)]
    if np.any(beta > 0):
        steps.append(lambda b, p: _bandwidth_given_snr(b, p, gamma, beta, group, budget_hz,
                                                       pmin, pmax, active))
    for _ in range(rounds):
        start = total.copy()
        for step in steps:
            with np.errstate(all="ignore"):
                nb, npw = step(b, p)
                ncost = comm_cost(nb, npw, gamma, alpha, beta)
            ntotal = group_sum(ncost, group, n_groups)
            take = active & (ntotal < total)
            b, p = np.where(take[group], nb, b), np.where(take[group], npw, p)
            cost = np.where(take[group], ncost, cost)
            total = np.where(take, ntotal, total)
        active &= start - total > tol * np.abs(start)
        if not active.any():
            break
    y = gamma * p / b
    mu = group_sum(_psi(y) * (alpha * p + beta)
                   / (gamma * p) ** 2, group, n_groups) / np.maximum(count, 1)
    return b, p, cost, mu
