"""Reference path: the convex subproblems solved by cvxpy, to check the fast exact solvers."""

from __future__ import annotations

import cvxpy as cp
import numpy as np


def solve_surrogate(z, q, stab, layers, coef, group, budget_hz, unit_time, kappa):
    """Minimise the quadratic-transform surrogate for fixed auxiliaries z, q with cvxpy.

    ``sum a^2 z + (Y-a)^2 q + sigma Y / (Y-a) + B(F)^2 / (4q)`` with
    ``B(F) = coef (w_t/F + kappa F^2)``, ``1 <= a <= Y-1`` and each group's shares within its
    budget. Shares are in units of the group budget and the objective is scaled to order one,
    which the conic solver needs; ``B`` enters through an epigraph variable to stay DCP.

    Returns
    -------
    (split, server_freq_hz) : arrays of shape (N,).
    """
    n = z.size
    scale_hz = budget_hz[group]
    a = cp.Variable(n)
    share = cp.Variable(n, pos=True)
    epi = cp.Variable(n)
    b_lo = (cp.multiply(coef * unit_time / scale_hz, cp.inv_pos(share))
            + cp.multiply(coef * kappa * scale_hz**2, cp.square(share)))
    split_cost = (cp.multiply(z, cp.square(a)) + cp.multiply(q, cp.square(layers - a))
                  + cp.multiply(stab * layers, cp.inv_pos(layers - a)))
    norm = float(np.sum(z + q + stab)) or 1.0
    objective = (cp.sum(split_cost) + cp.sum(cp.multiply(1.0 / (4.0 * q), cp.square(epi)))) / norm
    members = np.eye(budget_hz.size)[:, group]
    constraints = [epi >= b_lo, a >= 1, a <= layers - 1, members @ share <= 1.0]
    cp.Problem(cp.Minimize(objective), constraints).solve(solver=cp.CLARABEL)
    return np.clip(a.value, 1, layers - 1), share.value * scale_hz


def solve_bandwidth(power_w, gamma, alpha, beta, group, budget_hz):
    """Bandwidth minimising ``sum (alpha p + beta) / r(b)`` for fixed power, with cvxpy.

    ``r = b log2(1 + gamma p / b) = -rel_entr(b, b + gamma p) / ln 2`` is concave, so the cost is
    DCP. Bandwidth is in units of the group budget.
    """
    scale_hz = budget_hz[group]
    share = cp.Variable(power_w.size, pos=True)
    snr = gamma * power_w / scale_hz  # SNR of the whole budget
    rate = -cp.rel_entr(share, share + snr) / np.log(2.0)  # bit/s per Hz of budget
    cost = cp.multiply((alpha * power_w + beta) / scale_hz, cp.inv_pos(rate))
    norm = float(np.sum((alpha * power_w + beta) / (scale_hz * np.log2(1 + snr))))
    members = np.eye(budget_hz.size)[:, group]
    cp.Problem(cp.Minimize(cp.sum(cost) / norm), [members @ share <= 1.0]).solve(
        solver=cp.CLARABEL)
    return share.value * scale_hz
