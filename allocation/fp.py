"""Seed A optimiser: quadratic-transform FP for splits and shares, CCP for the association.

One outer iteration (seed note, Algorithm steps 1-4):

1. association fixed: relax the splits, apply the quadratic transform to the products
   ``a_n * A_n`` and ``(Y - a_n) * B_n(F_n)`` and alternate closed-form auxiliaries with the
   convex surrogate (solved exactly by ``resources`` or by cvxpy), a monotone descent;
2. round each split to floor or ceil, whichever is better, re-solve the shares with the split
   fixed, then alternate exact integer splits and exact shares until neither moves [D];
3. association: the objective, with server prices fixed, is linear in the relaxed association
   chi; with the exact penalty ``rho * sum chi (1 - chi)`` linearised at the current chi each
   concave-convex step is an LP whose constraints are one simplex per user, so its vertex
   solution is a per-user argmin. Several starts; a candidate is kept only if, with its
   resources re-solved, it beats the incumbent;
4. repeat until the objective gains less than ``tol`` relative.

The uplink (bandwidth, power) depends on the association only, so it is solved once per
association by ``resources.solve_uplink`` instead of through its own transform [D].
"""

from __future__ import annotations

import numpy as np

from .terms import Candidate, Terms
from .waterfilling import (
    kkt_server_freq,
    surrogate_server_freq_hz,
    surrogate_split,
    uplink_at_price,
)


def fp_relaxed(terms: Terms, association: np.ndarray, split0, *, solver: str = "fast",
               max_iter: int = 100, tol: float = 1e-9):
    """FP on the relaxed splits and server shares for a fixed association.

    Parameters
    ----------
    split0 : array-like, shape (N,)
        Starting (real) splits in [1, Y-1].
    solver : str (default: "fast")
        ``"fast"``: closed forms and water-filling; ``"cvxpy"``: the same convex surrogate
        through cvxpy (reference path).

    Returns
    -------
    (split, server_freq_hz, history) : the relaxed splits, shares, and the objective after each
        iteration (uplink included), which never increases.
    """
    sc, y = terms.scenario, terms.layers
    coef = terms.coef[terms.users, association]
    uplink_cost = terms.uplink(association)[2].sum()
    a = np.asarray(split0, float).copy()
    freq = terms.shares(a, association)[0]
    history = [float(terms.compute_cost(a, freq, association).sum() + uplink_cost)]
    for _ in range(max_iter):
        z = terms.device / (2.0 * a)
        q = terms.server_layer_cost(freq, association) / (2.0 * (y - a))
        if solver == "fast":
            a = surrogate_split(z, q, terms.stab, y)
            freq = surrogate_server_freq_hz(q, coef, association, sc.server_freq_hz,
                                            terms.unit_time, terms.kappa)
        elif solver == "cvxpy":
            from .cvx_reference import solve_surrogate

            a, freq = solve_surrogate(z, q, terms.stab, y, coef, association,
                                      sc.server_freq_hz, terms.unit_time, terms.kappa)
        else:
            raise ValueError(f"solver must be 'fast' or 'cvxpy', got {solver!r}")
        history.append(float(terms.compute_cost(a, freq, association).sum() + uplink_cost))
        if history[-2] - history[-1] <= tol * abs(history[-1]):
            break
    return a, freq, history


def round_split(terms: Terms, split: np.ndarray, freq: np.ndarray,
                association: np.ndarray) -> np.ndarray:
    """Per user, floor or ceil of a relaxed split, whichever costs less at the given shares."""
    lo = np.clip(np.floor(split), 1, terms.layers - 1)
    hi = np.clip(np.ceil(split), 1, terms.layers - 1)
    better_hi = (terms.compute_cost(hi, freq, association)
                 < terms.compute_cost(lo, freq, association))
    return np.where(better_hi, hi, lo).astype(int)


def split_step(terms: Terms, association: np.ndarray, split: np.ndarray, mode: str,
               solver: str = "fast") -> Candidate:
    """Best integer splits and exact resources for a fixed association.

    ``mode`` is ``"fp"`` (FP from the current and the equal-share splits, rounded and polished,
    plus the polished starts themselves), ``"ao"`` (the polished starts only) or ``"fixed"``.
    """
    if mode == "fixed":
        return terms.candidate(split, association)
    starts = [np.asarray(split, int), terms.equal_share_split(association)]
    cands = [terms.polish(s, association) for s in starts]
    if mode == "fp":
        for s in starts:
            a, freq, _ = fp_relaxed(terms, association, s, solver=solver)
            cands.append(terms.polish(round_split(terms, a, freq, association), association))
    return min(cands, key=lambda c: c.objective)


def association_costs(terms: Terms, cur: Candidate) -> np.ndarray:
    """Cost of each user on each server at the incumbent's server prices, shape (N, M).

    The Lagrangian cost: tail layers at the best share for the server's frequency price plus
    the priced share, and the uplink's best response to the server's bandwidth price.
    """
    sc, y = terms.scenario, terms.layers
    n, m = sc.n_users, sc.n_servers
    weight = np.repeat(y - cur.split.astype(float), m)
    coef = terms.coef.ravel()
    server = np.tile(np.arange(m), n)
    f_budget = sc.server_freq_hz[server]
    f_star = (terms.unit_time / (2 * terms.kappa)) ** (1 / 3) if terms.kappa > 0 else np.inf
    price = cur.server_price[server]
    with np.errstate(divide="ignore", invalid="ignore"):
        freq = np.where(price > 0,
                        kkt_server_freq(price, weight, coef, terms.unit_time, terms.kappa, f_star),
                        f_star)
    freq = np.minimum(freq, f_budget)
    compute = weight * coef * (terms.unit_time / freq + terms.kappa * freq**2) + price * freq
    uplink = uplink_at_price(terms.gamma.ravel(), np.repeat(terms.alpha, m),
                             np.repeat(terms.beta, m), np.repeat(terms.pmin, m),
                             np.repeat(sc.user_pmax_w, m), cur.bandwidth_price[server],
                             sc.server_bandwidth_hz[server])[2]
    return (compute + uplink).reshape(n, m)


def associate(terms: Terms, cur: Candidate, evaluate, rng: np.random.Generator,
              n_starts: int = 3, max_iter: int = 8) -> Candidate:
    """Penalised concave-convex LP iterations from several starts; the best candidate wins.

    ``evaluate(association, split)`` turns an association into a candidate (resources solved).
    Starts: the incumbent, the uniform relaxation and random relaxations (rows of a Dirichlet).
    ``rho`` starts at 1% of the median per-user cost [D] and doubles every iteration, so moves
    need ever larger gains and each run settles.
    """
    n, m = terms.scenario.n_users, terms.scenario.n_servers
    if m == 1:
        return cur
    eye = np.eye(m)
    starts = [eye[cur.association], np.full((n, m), 1.0 / m)]
    starts += [rng.dirichlet(np.ones(m), n) for _ in range(max(n_starts - 2, 0))]
    best = cur
    for chi in starts[:n_starts]:
        state = cur
        rho = None
        for _ in range(max_iter):
            cost = association_costs(terms, state)
            if rho is None:
                rho = 0.01 * float(np.median(cost.min(axis=1)))
            assoc = np.argmin(cost + rho * (1.0 - 2.0 * chi), axis=1)
            if np.array_equal(eye[assoc], chi):
                break
            chi = eye[assoc]
            state = evaluate(assoc, state.split)
            if state.objective < best.objective:
                best = state
            rho *= 2.0
    return best


def move_search(terms: Terms, cur: Candidate, evaluate, max_rounds: int = 20) -> Candidate:
    """Best single-user server change, repeated while one improves (exact, for small N*M)."""
    n, m = terms.scenario.n_users, terms.scenario.n_servers
    for _ in range(max_rounds):
        best = cur
        for user in range(n):
            for server in range(m):
                if server == cur.association[user]:
                    continue
                assoc = cur.association.copy()
                assoc[user] = server
                cand = evaluate(assoc, cur.split)
                if cand.objective < best.objective:
                    best = cand
        if best is cur:
            break
        cur = best
    return cur


def optimise(terms: Terms, mode: str = "fp", *, seed: int = 0, split=None, solver: str = "fast",
             n_starts: int = 3, max_outer: int = 20, tol: float = 1e-4, move_limit: int = 32,
             init: tuple[np.ndarray, np.ndarray] | None = None, warm_starts: int = 1):
    """Alternate the split/resource step and the association step (seed note step 4).

    Parameters
    ----------
    mode : str (default: "fp")
        Split step: ``"fp"``, ``"ao"`` or ``"fixed"`` (then ``split`` gives every user's split).
    seed : int (default: 0)
        Seeds the random association starts.
    move_limit : int (default: 32)
        After the LP iterations, try every single-user server change when there are at most
        this many (N * (M - 1)) [D]: cheap on small instances, where it closes most of the gap
        to the exhaustive search.
    init : (association, split), optional
        Warm start [D], e.g. the previous round's solution for the same users: its splits are
        polished for this scenario and, if that beats the cold first step (each user on its
        strongest server, FP splits), it becomes the incumbent; either way the association
        step runs ``warm_starts`` starts (the incumbent first) instead of ``n_starts``, the
        previous rounds having explored already. The result is never worse than ``init``
        with its resources solved on this scenario, nor than the cold first step (every step
        only accepts improvements). On small instances (``N * max(M - 1, 1) <= move_limit``)
        the cold search also runs in full and the better result wins, so it is never worse
        than a cold start's there.
    warm_starts : int (default: 1)
        Association starts with ``init`` (1: the incumbent only).

    Returns
    -------
    (Candidate, history, iterations) : the best allocation, the incumbent objective at the
        start (reference allocation) and after each outer iteration, and the outer iterations.
    """
    sc = terms.scenario
    options = {"seed": seed, "split": split, "solver": solver, "n_starts": n_starts,
               "max_outer": max_outer, "tol": tol, "move_limit": move_limit}
    if init is not None and sc.n_users * max(sc.n_servers - 1, 1) <= move_limit:
        # Small instance: the warm start adds to the cold search instead of replacing it, so
        # the result stays at least as good as a cold start (exact on exhaustive-sized cases).
        cold = optimise(terms, mode, **options)
        warm = _descend(terms, mode, **options, init=init, warm_starts=warm_starts)
        best = min(cold, warm, key=lambda r: r[0].objective)
        return best[0], best[1], cold[2] + warm[2]
    return _descend(terms, mode, init=init, warm_starts=warm_starts, **options)


def _descend(terms: Terms, mode: str, *, seed: int, split, solver: str, n_starts: int,
             max_outer: int, tol: float, move_limit: int,
             init: tuple[np.ndarray, np.ndarray] | None, warm_starts: int):
    """``optimise`` from one starting point (the cold one, or ``init``)."""
    sc = terms.scenario
    rng = np.random.default_rng(seed)
    assoc = np.argmax(sc.gain, axis=1)
    split0 = np.ones(sc.n_users, int) if split is None else np.asarray(split, int)

    def evaluate(association, s):
        return terms.candidate(split0, association) if mode == "fixed" else terms.polish(
            s, association)

    history = [sc.reference.objective]
    best = split_step(terms, assoc, split0, mode, solver)
    if init is not None:
        # The warm point replaces the cold one if it is better; either way the association
        # step runs ``warm_starts`` starts (the previous rounds explored already).
        warm = evaluate(np.asarray(init[0], int), np.clip(np.asarray(init[1], int), 1,
                                                          terms.layers - 1))
        best = min(best, warm, key=lambda c: c.objective)
        n_starts = warm_starts
    history.append(best.objective)
    iterations = 1
    while iterations < max_outer:
        iterations += 1
        cand = associate(terms, best, evaluate, rng, n_starts)
        if sc.n_users * (sc.n_servers - 1) <= move_limit:
            cand = move_search(terms, cand, evaluate)
        if cand is not best:
            cand = min(cand, split_step(terms, cand.association, cand.split, mode, solver),
                       key=lambda c: c.objective)
        gain = (best.objective - cand.objective) / abs(best.objective)
        if gain > 0:
            best = cand
        history.append(best.objective)
        if gain < tol:
            break
    return best, history, iterations
