"""Exact solver of the makespan model (``makespan_model``), exhaustive search and baselines.

Write ``B_n(a) = a D_n + F_n + s / r_nm`` (device and transfer seconds) and ``W_m(a)`` (tail
seconds on the whole server) for user ``n`` on server ``m``, and ``h_n(a, m)`` for its weighted
energy and stability, which do not depend on the shares. The problem is

    min  w_T T + sum_n h_n(a_n, m_n)
    s.t. B_n(a_n) + W_m(a_n) / phi_n <= T,   sum_{n on m} phi_n <= c_m,   0 < phi_n <= 1,

over integer splits ``a_n`` in ``[min_split_n, max_split_n]`` (memory), the association and the
shares.

1. Fixed splits and association: the shares only move ``T``. At the optimum every user of a
   server finishes together: ``phi_n = W_n / (T_m - B_n)``, with ``T_m`` the root of
   ``f(T) = sum_n W_n / (T - B_n) - c_m`` on ``T >= max_n (B_n + W_n)`` (where every
   ``phi_n <= 1``); ``T_m`` is that lower end when ``f`` is already <= 0 there. ``f`` is convex
   and decreasing, so Newton from the lower end climbs monotonically to the root
   (``server_makespans``). The round's makespan is ``T = max_m T_m``.

2. A threshold ``tau`` on the makespan: ``T(a, m) <= tau`` holds iff every user has
   ``B_n + W_n <= tau`` and every server ``sum_n W_n / (tau - B_n) <= c_m``. So the cheapest
   vector within the threshold, ``H(tau) = min { sum_n h_n : T <= tau }``, is a multiple-choice
   knapsack: one (split, server) item per user, weight ``W / (tau - B)`` in the capacity of its
   server. We solve it exactly as a 0-1 integer program (HiGHS, through
   ``scipy.optimize.milp``).

3. ``H`` is non-increasing in ``tau`` and the objective of a vector is ``w_T T + H``, so the
   optimum is a vector ``a*`` that is the cheapest within its own makespan. Walk down: start
   with ``tau = inf`` (every user at its cheapest item); each step takes the cheapest vector
   within ``tau``, keeps it if it beats the incumbent ``J``, and lowers ``tau`` to just below
   ``min(T(found), (J - H(tau)) / w_T)``: a vector not yet seen has a makespan below ``tau`` and
   costs at least ``H(tau)``, so it can win only below the second term, and vectors in
   ``[T(found), tau]`` cost at least what ``found`` costs. Once ``w_T T_floor + H(tau)``
   reaches the incumbent nothing can beat it, where ``T_floor`` is a
   lower bound on any makespan (exact for one server: every user at its smallest share for a
   target, a bisection; several servers pool their capacity). Stepping breakpoint by
   breakpoint is slow where many vectors have nearly the same objective (hundreds of users),
   so ``walk`` searches intervals of thresholds best first and bisects the wide ones (an
   interval ``(lo, hi]`` cannot hold anything better than ``w_T lo + H(hi)``). The result is
   the exact optimum, up to a relative tolerance (1e-6 by default) and HiGHS' tolerances; a
   budget of integer programs bounds the work on large instances, the certified gap is
   reported, and an unfinished search ends with a one-user-at-a-time local search.

The baselines keep the paper's comparisons (``api.METHODS``) and fix or randomise part of the
decision; each solves the rest exactly with the same pieces.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import time

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array

from .makespan_model import (
    MakespanScenario,
    fifo_response_s,
    fifo_shares,
    reference_allocation,
    server_work_s,
    step_times,
    user_energy_j,
    user_stability,
)

#: Relative step below a visited makespan (the walk's resolution).
_STEP = 1e-9
#: Largest number of (association, split vector) combinations ``exhaustive`` searches.
MAX_COMBINATIONS = 2_000_000
#: Largest number of vectors the FIFO model's optimum is found among by trying each.
FIFO_ENUMERATION = 20_000


def server_makespans(base, work, group, capacity) -> np.ndarray:
    """Per group (server), the smallest T with ``sum W / (T - B) <= c`` and ``T >= B + W``.

    ``base``, ``work`` and ``group`` are per slot (a user on a server); ``capacity`` per
    group. Empty groups get ``-inf``.
    """
    n_groups = capacity.size
    t = np.full(n_groups, -np.inf)
    np.maximum.at(t, group, base + work)
    for _ in range(200):
        gap = t[group] - base
        f = np.bincount(group, work / gap, n_groups) - capacity
        slope = np.bincount(group, work / gap**2, n_groups)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(f > 0, f / slope, 0.0)
        t = t + step
        if np.all(step <= 1e-15 * np.abs(t)):
            break
    return t


class Tables:
    """Per (user, server, split) seconds and weighted costs of a scenario, shape (N, M, K)
    with split ``k + 1`` at index ``k``."""

    def __init__(self, scenario: MakespanScenario) -> None:
        sc = self.scenario = scenario
        n, m, y = sc.n_users, sc.n_servers, sc.layers
        self.splits = np.arange(1, y)
        unit_energy, self.unit_time, unit_stab = sc.unit_weights
        a = self.splits[None, None, :].astype(float)
        users = np.arange(n)[:, None, None]
        servers = np.arange(m)[None, :, None]
        device, transfer, _ = step_times(sc, a, servers, 1.0, users)
        self.base = device + transfer
        self.work = server_work_s(sc, a, servers)[0]  # (M, K)
        self.cost = (unit_energy * user_energy_j(sc, a, servers, users)
                     + unit_stab * user_stability(sc, a, users))
        lo, hi = sc.min_split[:, None], sc.max_split[:, None]
        self.allowed = (self.splits >= lo) & (self.splits <= hi)  # (N, K)

    def items(self, association=None, split=None) -> np.ndarray:
        """Mask (N, M, K) of the items a method may choose: optionally each user's server or
        split fixed."""
        sc = self.scenario
        mask = np.broadcast_to(self.allowed[:, None, :], self.base.shape).copy()
        if association is not None:
            mask &= (np.arange(sc.n_servers)[None, :] == np.asarray(association)[:, None]
                     )[:, :, None]
        if split is not None:
            mask &= (self.splits[None, :] == np.asarray(split)[:, None])[:, None, :]
        if not mask.any(axis=(1, 2)).all():
            raise ValueError("a user has no allowed split (memory cap below its smallest split)")
        return mask

    def makespans(self, split, association) -> np.ndarray:
        """Per-server makespans of split vectors, shape (V, M) for inputs of shape (V, N)."""
        sc = self.scenario
        split = np.atleast_2d(split)
        association = np.atleast_2d(association)
        v, n = split.shape
        k = split - 1
        users = np.broadcast_to(np.arange(n), (v, n))
        if sc.queue == "fifo":
            return self._fifo_makespans(self.base[users, association, k],
                                        self.work[association, k], association)
        group = (np.arange(v)[:, None] * sc.n_servers + association).ravel()
        t = server_makespans(self.base[users, association, k].ravel(),
                             self.work[association, k].ravel(), group,
                             np.tile(sc.concurrency, v))
        return t.reshape(v, sc.n_servers)

    def objective(self, split, association) -> tuple[np.ndarray, np.ndarray]:
        """(makespan, objective) of split vectors (V, N)."""
        split, association = np.atleast_2d(split), np.atleast_2d(association)
        makespan = self.makespans(split, association).max(axis=1)
        users = np.arange(split.shape[1])
        return makespan, self.unit_time * makespan + self.cost[users, association,
                                                               split - 1].sum(axis=1)

    def _fifo_makespans(self, base, work, association) -> np.ndarray:
        """Per-server makespans (V, M) under a first-come-first-served server: each user's
        device, transfer and response time (``fifo_response_s``), from the round's first
        start."""
        sc = self.scenario
        start = sc.start_step_s
        finish = base + fifo_response_s(base, work, association, sc.concurrency, start)
        if start is not None:
            finish = finish + start - start.min()
        v = base.shape[0]
        t = np.full((v, sc.n_servers), -np.inf)
        np.maximum.at(t, (np.arange(v)[:, None], association), finish)
        return t

    def shares(self, split, association) -> np.ndarray:
        """The equal-finish shares of one split vector (each user finishes with its server);
        under "fifo" each user's effective share ``W / R``."""
        if self.scenario.queue == "fifo":
            return fifo_shares(self.scenario, split, association)
        t = self.makespans(split, association)[0]
        users, k = np.arange(split.size), np.asarray(split) - 1
        return np.minimum(1.0, self.work[association, k]
                          / (t[association] - self.base[users, association, k]))

    # --- the threshold problem -------------------------------------------------------------

    def cheapest_within(self, tau: float, mask: np.ndarray, rel_gap: float = 1e-7,
                        time_limit_s: float | None = None):
        """The cheapest vector with makespan <= tau among the items of ``mask``.

        Returns (split, association, lower bound on the cheapest cost) or None when none fits
        (or the time limit ran out first). The vector is within ``rel_gap`` of the cheapest.
        """
        sc = self.scenario
        fits = mask & (self.base + self.work[None] <= tau)
        if not fits.any(axis=(1, 2)).all():
            return None
        n, m, k = np.nonzero(fits)
        cost = self.cost[n, m, k]
        if np.isinf(tau):  # no capacity binds: every user takes its cheapest item
            best = np.full(sc.n_users, -1)
            order = np.lexsort((cost, n))
            first = np.r_[True, n[order][1:] != n[order][:-1]]
            best[n[order][first]] = order[first]
            return self.splits[k[best]], m[best], float(cost[best].sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            weight_table = np.where(fits, self.work[None] / (tau - self.base), np.inf)
        fits &= ~_dominated(weight_table, np.where(fits, self.cost, np.inf))
        n, m, k = np.nonzero(fits)
        cost = self.cost[n, m, k]
        weight = weight_table[n, m, k]
        items = np.arange(n.size)
        one_each = coo_array((np.ones(n.size), (n, items)), shape=(sc.n_users, n.size))
        load = coo_array((weight, (m, items)), shape=(sc.n_servers, n.size))
        res = milp(cost, integrality=np.ones(n.size), bounds=Bounds(0, 1),
                   constraints=[LinearConstraint(one_each.tocsr(), 1, 1),
                                LinearConstraint(load.tocsr(), -np.inf, sc.concurrency)],
                   options={"mip_rel_gap": rel_gap, "time_limit": time_limit_s})
        if res.x is None:  # infeasible, or out of time before a first solution
            return None
        chosen = np.flatnonzero(res.x > 0.5)
        order = chosen[np.argsort(n[chosen])]
        return self.splits[k[order]], m[order], float(res.mip_dual_bound)

    def makespan_floor(self, mask: np.ndarray) -> float:
        """A lower bound on the makespan of any vector of ``mask``: exact with one server.

        At a target tau each user needs at least its smallest share over its items; tau is
        reachable only if those fit in the (pooled) capacity. Bisection on tau."""
        sc = self.scenario
        need_base = np.where(mask, self.base, np.inf)
        total = self.base + self.work[None]
        lo = float(np.where(mask, total, np.inf).min(axis=(1, 2)).max())

        def fits(tau: float) -> bool:
            with np.errstate(divide="ignore", invalid="ignore"):
                share = np.where(mask & (total <= tau), self.work[None] / (tau - need_base),
                                 np.inf)
            return share.min(axis=(1, 2)).sum() <= sc.concurrency.sum()

        hi = 2.0 * lo
        while not fits(hi):
            lo, hi = hi, 2.0 * hi
        if fits(lo):
            return lo
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if fits(mid):
                hi = mid
            else:
                lo = mid
            if hi - lo <= 1e-13 * hi:
                break
        return lo


def _dominated(weight: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Items (…, K) some other split of the same user and server beats: no heavier, no
    costlier, and strictly better in one (of equal twins the first is kept). Dropping them
    leaves the knapsack's optimum unchanged and its search much smaller."""
    k = weight.shape[-1]
    w_le = weight[..., :, None] <= weight[..., None, :]
    c_le = cost[..., :, None] <= cost[..., None, :]
    earlier = np.arange(k)[:, None] < np.arange(k)[None, :]
    strict = ((weight[..., :, None] < weight[..., None, :])
              | (cost[..., :, None] < cost[..., None, :]) | earlier)
    finite = np.isfinite(weight)[..., :, None]
    return (w_le & c_le & strict & finite).any(axis=-2)


# --- Methods ------------------------------------------------------------------------------


def walk(tables: Tables, mask: np.ndarray, starts=(), *, rtol: float = 1e-6,
         max_programs: int = 2000, time_limit_s: float = 60.0):
    """The exact search down the makespan thresholds (module docstring, step 3).

    Best first over intervals ``(lo, hi]`` of makespans not yet ruled out, each with a lower
    bound ``h`` on the cost of its vectors (the cheapest cost at a threshold above it): no
    vector in it beats ``w_T lo + h``. The most promising interval is queried at its top
    (one integer program), which settles ``[T(found), hi]``, lowers ``hi`` to
    ``(J - H(hi)) / w_T`` if that is smaller, and raises ``h`` to ``H(hi)``; an interval still
    wider than the tolerance is cut in two, so a long flat stretch is crossed by bisection
    rather than breakpoint by breakpoint. ``starts`` are (split, association) incumbents.

    Returns (split, association, history, programs, gap): ``gap`` is the certified relative
    optimality gap (below ``rtol`` when the search completed within its budget).
    """
    best_j, best = np.inf, None

    def offer(split, assoc) -> float:
        nonlocal best_j, best
        makespan, j = (float(x[0]) for x in tables.objective(split, assoc))
        if j < best_j:
            best_j, best = j, (np.asarray(split, int), np.asarray(assoc, int))
        return makespan

    for split, assoc in starts:
        offer(split, assoc)
    history = [best_j] if best is not None else []
    floor, w_t = tables.makespan_floor(mask), tables.unit_time
    heap = [(-np.inf, floor, np.inf, -np.inf)]  # (bound, lo, hi, h)
    programs, deadline = 0, time.monotonic() + time_limit_s
    while heap and programs < max_programs and time.monotonic() < deadline:
        bound, lo, hi, h = heapq.heappop(heap)
        if bound >= best_j * (1 - rtol):
            heapq.heappush(heap, (bound, lo, hi, h))
            break
        found = tables.cheapest_within(hi, mask, 0.1 * rtol, deadline - time.monotonic())
        programs += 1
        if found is None:  # no vector within hi at all
            continue
        split, assoc, h = found
        makespan = offer(split, assoc)
        history.append(best_j)
        # Vectors in [T(found), hi] cost at least `found`; below, only a makespan under
        # (J - h) / w_T can still win.
        hi = min(makespan, hi, (best_j - h) / w_t) * (1 - _STEP)
        if hi <= lo:
            continue
        if hi - lo > rtol * best_j / w_t:
            mid = 0.5 * (lo + hi)
            heapq.heappush(heap, (w_t * lo + h, lo, mid, h))
            heapq.heappush(heap, (w_t * mid + h, mid, hi, h))
        else:
            heapq.heappush(heap, (w_t * lo + h, lo, hi, h))
    bound = heap[0][0] if heap else best_j
    gap = max(0.0, (best_j - bound) / abs(best_j))
    return best[0], best[1], tuple(history), programs, gap


def fastest_link(scenario: MakespanScenario) -> np.ndarray:
    """Each user on the server of its fastest uplink (the max-rate association)."""
    return np.argmax(scenario.uplink_bps, axis=1)


def clip_splits(scenario: MakespanScenario, split) -> np.ndarray:
    """``split`` moved into each device's allowed range [min_split, max_split]."""
    return np.clip(np.broadcast_to(split, (scenario.n_users,)), scenario.min_split,
                   np.maximum(scenario.max_split, scenario.min_split)).astype(int)


def _fixed_starts(tables: Tables, association) -> list:
    """Incumbents the exact walk starts from: every single split for all (clipped), edge-only
    and local-only, on the given association."""
    sc = tables.scenario
    return [(clip_splits(sc, s), association) for s in range(1, sc.layers)]


def optimal(tables: Tables, *, association=None, split=None, rtol: float = 1e-6,
            max_programs: int = 2000, time_limit_s: float = 60.0):
    """Exact splits and association (either may be fixed) for the makespan model.

    Returns (split, association, history, programs, gap) as ``walk``; a search stopped by its
    budget is finished by ``coordinate_descent`` from its best vector."""
    sc = tables.scenario
    mask = tables.items(association, split)
    base_assoc = fastest_link(sc) if association is None else np.asarray(association)
    starts = ([(np.asarray(split), base_assoc)] if split is not None
              else _fixed_starts(tables, base_assoc))
    if sc.queue == "fifo":
        return _fifo_optimal(tables, mask, starts, association=association, split=split,
                             rtol=rtol, max_programs=max_programs, time_limit_s=time_limit_s)
    split, assoc, history, programs, gap = walk(tables, mask, starts, rtol=rtol,
                                                max_programs=max_programs,
                                                time_limit_s=time_limit_s)
    if gap > rtol:
        before = float(tables.objective(split, assoc)[1][0])
        split, assoc = coordinate_descent(tables, split, assoc, mask)
        after = float(tables.objective(split, assoc)[1][0])
        history = (*history, after)
        gap = max(0.0, gap - (before - after) / abs(before))
    return split, assoc, history, programs, gap


def _fifo_optimal(tables: Tables, mask: np.ndarray, starts, **share_problem):
    """``optimal`` under a first-come-first-served server, where a user's wait depends on
    every other user's split and start, so no knapsack describes the server: every vector of
    ``mask`` is tried when there are at most ``FIFO_ENUMERATION`` (exact, gap 0); else the share
    model's exact optimum (``share_problem``: its fixed parts and budget) and ``starts`` seed a
    one-user-at-a-time descent on the FIFO objective (gap unknown)."""
    sc = tables.scenario
    items = [np.argwhere(mask[n]) for n in range(sc.n_users)]  # (server, split index) each
    if np.prod([len(i) for i in items], dtype=float) <= FIFO_ENUMERATION:
        pick = np.array(list(itertools.product(*(range(len(i)) for i in items))), int)
        chosen = np.stack([items[n][pick[:, n]] for n in range(sc.n_users)], axis=1)
        assoc, split = chosen[..., 0], tables.splits[chosen[..., 1]]
        values = np.concatenate([tables.objective(split[i:i + 2000], assoc[i:i + 2000])[1]
                                 for i in range(0, len(split), 2000)])
        best = int(np.argmin(values))
        return split[best], assoc[best], (float(values[best]),), 0, 0.0
    shared = Tables(dataclasses.replace(sc, queue="shares"))
    s_split, s_assoc, _, programs, _ = optimal(shared, **share_problem)
    seeds = [*starts, (s_split, s_assoc)]
    values = [float(tables.objective(s, a)[1][0]) for s, a in seeds]
    split, assoc = coordinate_descent(tables, *seeds[int(np.argmin(values))], mask)
    history = (min(values), float(tables.objective(split, assoc)[1][0]))
    return split, assoc, history, programs, float("nan")


def exhaustive(tables: Tables):
    """Every allowed split vector and association, each with its exact shares."""
    sc = tables.scenario
    n, m = sc.n_users, sc.n_servers
    ranges = [range(int(lo), int(hi) + 1) for lo, hi in zip(sc.min_split, sc.max_split,
                                                            strict=True)]
    count = m ** n * int(np.prod([len(r) for r in ranges], dtype=float))
    if count > MAX_COMBINATIONS:
        raise ValueError(f"exhaustive search too large: {count} combinations")
    splits = np.array(list(itertools.product(*ranges)), int).reshape(-1, n)
    assocs = np.array(list(itertools.product(range(m), repeat=n)), int).reshape(-1, n)
    split = np.repeat(splits, len(assocs), axis=0)
    assoc = np.tile(assocs, (len(splits), 1))
    objective = np.concatenate([tables.objective(split[i:i + 20000], assoc[i:i + 20000])[1]
                                for i in range(0, len(split), 20000)])
    best = int(np.argmin(objective))
    return split[best], assoc[best]


def coordinate_descent(tables: Tables, split, association, mask=None, max_sweeps: int = 50):
    """Alternating optimisation without a relaxation: one user at a time moves to its best
    (server, split) among the items of ``mask`` (default: all allowed) with the others fixed
    and every share re-solved, until no move helps."""
    mask = tables.items() if mask is None else mask
    split, association = np.array(split, int), np.array(association, int)
    current = float(tables.objective(split, association)[1][0])
    for _ in range(max_sweeps):
        moved = False
        for user in range(tables.scenario.n_users):
            servers, k = np.nonzero(mask[user])
            trial_s = np.repeat(split[None], servers.size, axis=0)
            trial_a = np.repeat(association[None], servers.size, axis=0)
            trial_a[:, user], trial_s[:, user] = servers, tables.splits[k]
            values = tables.objective(trial_s, trial_a)[1]
            i = int(np.argmin(values))
            if values[i] < current * (1 - 1e-12):
                split, association, current, moved = trial_s[i], trial_a[i], values[i], True
        if not moved:
            break
    return split, association


def fixed_share_splits(tables: Tables, association, share) -> np.ndarray:
    """Exact splits when association and shares are fixed (the paper's "alpha only").

    Each user's step time ``t_n(a)`` is then known, so ``w_T max_n t_n + sum h_n`` is
    minimised by trying every makespan candidate ``tau`` in {t_n(a)}: each user takes its
    cheapest split finishing by ``tau``. A sweep over the sorted candidates keeps every user's
    running cheapest cost.
    """
    sc = tables.scenario
    users = np.arange(sc.n_users)
    t = (tables.base[users, association] + tables.work[association] / share[:, None])
    cost = np.where(tables.allowed, tables.cost[users, association], np.inf)
    t = np.where(tables.allowed, t, np.inf)
    order = np.argsort(t, axis=None, kind="stable")
    user_of, split_of = np.unravel_index(order, t.shape)
    current = np.full(sc.n_users, np.inf)
    best_value, best_tau = np.inf, np.inf
    total, ready = 0.0, 0
    for u, k in zip(user_of, split_of, strict=True):
        tau, c = t[u, k], cost[u, k]
        if not np.isfinite(tau):
            break
        if c < current[u]:
            if np.isinf(current[u]):
                ready += 1
                total += c
            else:
                total += c - current[u]
            current[u] = c
        if ready == sc.n_users:
            value = tables.unit_time * tau + total
            if value < best_value:
                best_value, best_tau = value, tau
    cheapest = np.where(t <= best_tau, cost, np.inf)
    return tables.splits[np.argmin(cheapest, axis=1)]


def random_shares(scenario: MakespanScenario, association, rng) -> np.ndarray:
    """Shares drawn uniformly on each server's capacity simplex, capped at 1."""
    u = rng.exponential(1.0, scenario.n_users)
    total = np.bincount(association, u, scenario.n_servers)[association]
    return np.minimum(1.0, u / total * scenario.concurrency[association])


def equal_shares(scenario: MakespanScenario, association) -> np.ndarray:
    """Each server's capacity split equally among its users (at most 1 each)."""
    count = np.bincount(association, minlength=scenario.n_servers)[association]
    return np.minimum(1.0, scenario.concurrency[association] / count)


def reference(scenario: MakespanScenario):
    """The reference allocation (split, association, share) that normalises the objective."""
    return reference_allocation(scenario)
