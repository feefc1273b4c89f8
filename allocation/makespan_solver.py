"""Exact solver of the makespan model (``makespan_model``) under a sharing server, exhaustive
search and the pieces the baselines reuse.

Write ``B_n(a, c) = a D_n + F_n + s / r_nm(c) + a L / (r_nm(c) S)`` (device, transfer and
adapter-upload seconds; ``c`` the user's subchannels of the cell, the rate fixed on its own
link) and ``W_m(a)`` (tail seconds on the
whole server) for user ``n`` on server ``m``, and ``h_n(a, m)`` for its weighted energy and
stability, which depend on neither share (``makespan_model``). The problem is

    min  w_T T + sum_n h_n(a_n, m_n)
    s.t. B_n(a_n, c_n) + W_m(a_n) / phi_n <= T,   sum_{n on m} phi_n <= c_m,   0 < phi_n <= 1,
         sum_{n in the cell} c_n <= J,   c_n >= 1 integer,

over integer splits ``a_n`` in ``[min_split_n, max_split_n]`` (memory), the association, the
shares and the subchannels.

1. Fixed splits, subchannels and association: the shares only move ``T``. At the optimum every
   user of a server finishes together: ``phi_n = W_n / (T_m - B_n)``, with ``T_m`` the root of
   ``f(T) = sum_n W_n / (T - B_n) - c_m`` on ``T >= max_n (B_n + W_n)`` (where every
   ``phi_n <= 1``); ``T_m`` is that lower end when ``f`` is already <= 0 there. ``f`` is convex
   and decreasing, so Newton from the lower end climbs monotonically to the root
   (``server_makespans``). The round's makespan is ``T = max_m T_m``.

2. A threshold ``tau`` on the makespan: ``T <= tau`` holds iff every user has
   ``B_n + W_n <= tau`` and every server ``sum_n W_n / (tau - B_n) <= c_m``. So the cheapest
   vector within the threshold, ``H(tau) = min { sum_n h_n : T <= tau }``, is a multiple-choice
   knapsack: one (split, server, subchannels) item per user, weight ``W / (tau - B)`` in the
   capacity of its server and ``c`` in the cell's ``J``. We solve it exactly as a 0-1 integer
   program (HiGHS, through ``scipy.optimize.milp``). With one server and no cell, a Lagrangian
   relaxation of the capacity answers first (``Tables.relaxed_within``): one multiplier found by
   bisection gives a lower bound on ``H`` (the knapsack's LP bound) and a feasible vector that
   differs from the relaxed optimum in about one user, so with many users it is within a hair
   of ``H`` at a tiny fraction of the integer program's cost; the integer program is called only
   where that hair still matters.

3. ``H`` is non-increasing in ``tau`` and the objective of a vector is ``w_T T + H``, so the
   optimum is a vector ``a*`` that is the cheapest within its own makespan. ``walk`` searches
   intervals ``(lo, hi]`` of makespans best first, each with a lower bound ``h`` on the cost of
   its vectors: no vector in it beats ``w_T lo + h``. Querying ``hi`` returns a vector
   (makespan ``T_f``) and a lower bound ``lb`` on ``H(hi)``: vectors with makespans in
   ``[T_f, hi]`` score at least ``w_T T_f + lb`` (the vector's own score when the query was
   exact, so that part is settled), and below ``T_f`` only a makespan under
   ``(J - lb) / w_T`` can still win (J the incumbent). A wide interval is cut in two, so a long
   flat stretch is crossed by bisection. Every part of the threshold axis is either still
   queued or was dropped with its bound, so the certified gap ``(J - min bound) / J`` holds
   whenever the search stops: at its tolerance (1e-6 by default, plus HiGHS' tolerances), or at
   its budget of integer programs or time. A query that runs out of time keeps its interval and
   its bound (never read as "nothing fits"). An unfinished search ends with a
   one-user-at-a-time local search, which can only lower ``J`` against the same bound.

The FIFO server's solver is ``fifo_search``; the baselines (``makespan_methods``) fix or
randomise part of the decision and solve the rest with the same pieces.
"""

from __future__ import annotations

import heapq
import itertools
import time
from typing import NamedTuple

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array

from .makespan_model import (
    MakespanScenario,
    equal_channels,
    exchange_s,
    fifo_response_s,
    fifo_shares,
    link_slowdown,
    reference_allocation,
    server_work_s,
    user_energy_j,
    user_stability,
)

#: Relative step below a visited makespan (the walk's resolution).
_STEP = 1e-9
#: Largest number of (association, split, subchannel) vectors ``exhaustive`` searches.
MAX_COMBINATIONS = 2_000_000


class Vector(NamedTuple):
    """One decision per user, each shape (N,): split, server and subchannels (0 on an own
    link)."""

    split: np.ndarray
    association: np.ndarray
    channels: np.ndarray


class Threshold(NamedTuple):
    """What a query at a makespan threshold ``tau`` learnt.

    vector : the vector found within ``tau`` (None when none fits or none was found in time).
    lower_bound : on ``H(tau)``, the cheapest cost within ``tau`` (inf when none fits).
    status : "optimal" (vector within the query's tolerance of ``H``), "bound" (a bound, and
        a feasible vector if one was found, that may be apart), "infeasible" (proved: nothing
        fits), "time-out" (neither: the interval keeps what was known).
    items : a relaxation's mask of the items that can still beat its vector (None: all);
        without a vector, the items' reduced costs (what each adds to the bound at least).
    """

    vector: Vector | None
    lower_bound: float
    status: str
    items: np.ndarray | None = None


class Search(NamedTuple):
    """A search's answer: its best vector, the incumbent's objective after each step, the
    integer programs it solved, its certified relative gap (NaN: no bound) and how it ended."""

    vector: Vector
    history: tuple
    programs: int
    gap: float
    search: str


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
    """Per (user, server, split, channel) seconds and weighted costs of a scenario.

    ``base`` has shape (N, M, K, C), split ``k + 1`` at index ``k`` and channel index ``c``
    = subchannels of the cell (0: the user's own link; C = 1 without a cell): a step's seconds
    off the server that a user's finish counts, ``cycle + exchange`` (same shape): device and
    transfer, the cycle a "fifo" server's queue sees, and the adapter's upload after the last
    step. ``work`` (M, K); ``cost`` (N, M, K) (energy and stability depend on neither
    share)."""

    def __init__(self, scenario: MakespanScenario) -> None:
        sc = self.scenario = scenario
        n, m, y = sc.n_users, sc.n_servers, sc.layers
        self.splits = np.arange(1, y)
        unit_energy, self.unit_time, unit_stab = sc.unit_weights
        a = self.splits[None, None, :].astype(float)
        users = np.arange(n)[:, None, None]
        servers = np.arange(m)[None, :, None]
        chan = np.arange(sc.channel_options)
        device = a * sc.device_layer_s[:, None, None] + sc.device_fixed_s[:, None, None]
        self.channels_allowed = ((chan[None, :] == 0) != sc.cell[:, None])  # (N, C)
        allowed = self.channels_allowed[:, None, None, :]
        slowdown = np.where(self.channels_allowed,
                            link_slowdown(sc, chan[None, :], np.arange(n)[:, None]),
                            1.0)[:, None, None, :]
        # Channels a user may not take cost inf seconds of transfer (and no upload: 0 x inf
        # would be NaN).
        self.cycle = device[..., None] + np.where(
            allowed, sc.transfer_s[:, :, None, None] * slowdown, np.inf)
        self.exchange = np.where(allowed, exchange_s(sc, a, servers, users=users)[..., None]
                                 * slowdown, 0.0)
        self.base = self.cycle + self.exchange
        self.work = server_work_s(sc, a, servers)[0]  # (M, K)
        self.cost = (unit_energy * user_energy_j(sc, a, servers, users)
                     + unit_stab * user_stability(sc, a, users))
        lo, hi = sc.min_split[:, None], sc.max_split[:, None]
        self.allowed = (self.splits >= lo) & (self.splits <= hi)  # (N, K)

    @property
    def relaxable(self) -> bool:
        """One server: the threshold knapsack has one capacity (and the cell's band), which
        Lagrange multipliers relax (``relaxed_within``)."""
        return self.scenario.n_servers == 1

    def items(self, association=None, split=None, channels=None) -> np.ndarray:
        """Mask (N, M, K, C) of the items a method may choose: optionally each user's server,
        split or subchannels fixed."""
        sc = self.scenario
        mask = (self.allowed[:, None, :, None] & self.channels_allowed[:, None, None, :]
                & np.ones(self.base.shape, bool))
        if association is not None:
            mask &= (np.arange(sc.n_servers)[None, :] == np.asarray(association)[:, None]
                     )[:, :, None, None]
        if split is not None:
            mask &= (self.splits[None, :] == np.asarray(split)[:, None])[:, None, :, None]
        if channels is not None:
            mask &= (np.arange(sc.channel_options)[None, :] == np.asarray(channels)[:, None]
                     )[:, None, None, :]
        if not mask.any(axis=(1, 2, 3)).all():
            raise ValueError("a user has no allowed split (memory cap below its smallest split)")
        return mask

    def vector_base(self, split, association, channels, table: str = "base") -> np.ndarray:
        """Seconds off the server of vectors (V, N) (or one vector (N,)); ``table``: "cycle"
        or "exchange" for that part alone."""
        split, association, channels = np.broadcast_arrays(split, association, channels)
        users = np.broadcast_to(np.arange(split.shape[-1]), split.shape)
        return getattr(self, table)[users, association, split - 1, channels]

    def makespans(self, split, association, channels, initial=None) -> np.ndarray:
        """Per-server makespans of vectors, shape (V, M) for inputs of shape (V, N)
        (``initial``: "fifo" responses to start the iteration from, see
        ``fifo_response_s``)."""
        sc = self.scenario
        split, association, channels = np.broadcast_arrays(
            np.atleast_2d(split), np.atleast_2d(association), np.atleast_2d(channels))
        v = split.shape[0]
        base = self.vector_base(split, association, channels)
        work = self.work[association, split - 1]
        if sc.queue == "fifo":
            return self._fifo_makespans(self.vector_base(split, association, channels, "cycle"),
                                        base, work, association, initial)
        group = (np.arange(v)[:, None] * sc.n_servers + association).ravel()
        t = server_makespans(base.ravel(), work.ravel(), group, np.tile(sc.concurrency, v))
        return t.reshape(v, sc.n_servers)

    def objective(self, split, association, channels, initial=None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """(makespan, objective) of vectors (V, N)."""
        split, association, channels = np.broadcast_arrays(
            np.atleast_2d(split), np.atleast_2d(association), np.atleast_2d(channels))
        makespan = self.makespans(split, association, channels, initial).max(axis=1)
        users = np.arange(split.shape[1])
        return makespan, self.unit_time * makespan + self.cost[users, association,
                                                               split - 1].sum(axis=1)

    def value(self, vector: Vector) -> tuple[float, float]:
        """(makespan, objective) of one vector."""
        makespan, objective = self.objective(*vector)
        return float(makespan[0]), float(objective[0])

    def _fifo_makespans(self, cycle, base, work, association, initial=None) -> np.ndarray:
        """Per-server makespans (V, M) under a first-come-first-served server: each user's
        ``base`` (device, transfer and adapter upload) and response time (``fifo_response_s``
        over its ``cycle``, device and transfer), from the round's first start."""
        sc = self.scenario
        start = sc.start_step_s
        # The mean-value analysis holds (V, N, N) arrays: a few million numbers at a time.
        chunk = max(1, int(4e6 // sc.n_users**2))
        initial = None if initial is None else np.broadcast_to(initial, cycle.shape)
        finish = base + np.concatenate([
            fifo_response_s(cycle[i:i + chunk], work[i:i + chunk], association[i:i + chunk],
                            sc.concurrency, start,
                            initial=None if initial is None else initial[i:i + chunk])
            for i in range(0, cycle.shape[0], chunk)])
        if start is not None:
            finish = finish + start - start.min()
        v = cycle.shape[0]
        t = np.full((v, sc.n_servers), -np.inf)
        np.maximum.at(t, (np.arange(v)[:, None], association), finish)
        return t

    def shares(self, vector: Vector) -> np.ndarray:
        """The equal-finish shares of one vector (each user finishes with its server); under
        "fifo" each user's effective share ``W / R``."""
        split, association, channels = vector
        if self.scenario.queue == "fifo":
            return fifo_shares(self.scenario, split, association,
                               channels if self.scenario.has_cell else None)
        t = self.makespans(split, association, channels)[0]
        k = np.asarray(split) - 1
        return np.minimum(1.0, self.work[association, k]
                          / (t[association] - self.vector_base(split, association, channels)))

    # --- the threshold problem -------------------------------------------------------------

    def _cheapest(self, mask: np.ndarray) -> Threshold:
        """No capacity binds (tau = inf): every user takes its cheapest item, on the fastest
        of its channels (its own link, or the whole band)."""
        sc = self.scenario
        cost = np.where(mask.any(axis=3), self.cost, np.inf)  # (N, M, K)
        flat = cost.reshape(sc.n_users, -1).argmin(axis=1)
        m, k = np.unravel_index(flat, cost.shape[1:])
        users = np.arange(sc.n_users)
        allowed = mask[users, m, k]  # (N, C)
        even = equal_channels(sc)
        # The cost does not depend on the subchannels: the even division where allowed, else
        # each user's fewest (feasible whenever any division is).
        chan = (even if allowed[users, even].all() else
                np.where(allowed, np.arange(sc.channel_options), sc.channel_options).min(axis=1))
        return Threshold(Vector(self.splits[k], m, chan), float(cost[users, m, k].sum()),
                         "optimal")

    def cheapest_within(self, tau: float, mask: np.ndarray, rel_gap: float = 1e-7,
                        time_limit_s: float | None = None, known: Threshold | None = None,
                        cutoff: float = np.inf) -> Threshold:
        """The cheapest vector with makespan <= tau among the items of ``mask``, by the
        0-1 integer program (HiGHS), to ``rel_gap``. ``known``: a relaxation's answer at the
        same tau, whose vector bounds the cheapest from above: the program then searches
        only the items that could beat it (``known.items``). ``cutoff``: only vectors cheaper
        than it matter (the caller's incumbent); with a relaxation's reduced costs the items
        that cannot be in one are left out, and if nothing is left the answer's status is
        "cutoff": every vector within tau costs at least ``cutoff``."""
        sc = self.scenario
        fits = mask & (self.base + self.work[None, :, :, None] <= tau)
        if not fits.any(axis=(1, 2, 3)).all():
            return Threshold(None, np.inf, "infeasible")
        if (known is not None and known.vector is None and known.items is not None
                and np.isfinite(cutoff) and np.isfinite(known.lower_bound)):
            inside = fits & (known.items <= cutoff - known.lower_bound)
            if not inside.any(axis=(1, 2, 3)).all():
                return Threshold(None, cutoff, "cutoff")
            found = self.cheapest_within(tau, inside, rel_gap, time_limit_s)
            if found.status == "infeasible":
                return Threshold(None, cutoff, "cutoff")
            return found._replace(lower_bound=min(cutoff, max(found.lower_bound,
                                                              known.lower_bound)))
        if known is not None and known.vector is not None and known.items is not None:
            inside = fits & known.items
            if inside.any(axis=(1, 2, 3)).all():
                found = self.cheapest_within(tau, inside, rel_gap, time_limit_s)
            else:
                found = Threshold(None, np.inf, "infeasible")
            upper = float(self.cost[np.arange(sc.n_users), known.vector.association,
                                    known.vector.split - 1].sum())
            if found.status == "infeasible" or (found.vector is not None and upper <= float(
                    self.cost[np.arange(sc.n_users), found.vector.association,
                              found.vector.split - 1].sum())):
                # Nothing beats the relaxation's vector: it is the cheapest.
                bound = upper if found.status == "infeasible" else min(upper, found.lower_bound)
                return Threshold(known.vector, bound,
                                 "optimal" if found.status in ("infeasible", "optimal")
                                 else "bound")
            return found._replace(lower_bound=min(upper, found.lower_bound))
        if np.isinf(tau):  # no capacity binds
            return self._cheapest(mask)
        with np.errstate(divide="ignore", invalid="ignore"):
            weight_table = np.where(fits, self.work[None, :, :, None] / (tau - self.base),
                                    np.inf)
        cost_table = np.where(fits, self.cost[..., None], np.inf)
        fits &= ~np.moveaxis(_dominated(np.moveaxis(weight_table, 2, 3),
                                        np.moveaxis(cost_table, 2, 3)), 3, 2)
        n, m, k, c = np.nonzero(fits)
        cost = self.cost[n, m, k]
        weight = weight_table[n, m, k, c]
        items = np.arange(n.size)
        rows = [LinearConstraint(coo_array((np.ones(n.size), (n, items)),
                                           shape=(sc.n_users, n.size)).tocsr(), 1, 1),
                LinearConstraint(coo_array((weight, (m, items)),
                                           shape=(sc.n_servers, n.size)).tocsr(),
                                 -np.inf, sc.concurrency)]
        if sc.has_cell:
            rows.append(LinearConstraint(c.astype(float)[None, :], -np.inf,
                                         sc.cell_subchannels))
        res = milp(cost, integrality=np.ones(n.size), bounds=Bounds(0, 1), constraints=rows,
                   options={"mip_rel_gap": rel_gap, "time_limit": time_limit_s})
        bound = getattr(res, "mip_dual_bound", None)
        bound = float(bound) if bound is not None and np.isfinite(bound) else -np.inf
        if res.status == 2:  # proved infeasible
            return Threshold(None, np.inf, "infeasible")
        if res.x is None:  # out of time before a first solution: only the bound is known
            return Threshold(None, bound, "time-out")
        chosen = np.flatnonzero(res.x > 0.5)
        order = chosen[np.argsort(n[chosen])]
        vector = Vector(self.splits[k[order]], m[order], c[order])
        return Threshold(vector, bound, "optimal" if res.status == 0 else "bound")

    def relaxed_within(self, tau: float, mask: np.ndarray) -> Threshold:
        """One server: a lower bound on ``H(tau)`` from the Lagrangian relaxation of the
        server's capacity and, with a cell, of its band (``max_{lambda, mu} sum_n min_i
        (h + lambda w + mu c) - lambda cap - mu J``; with the capacity alone it equals the
        knapsack's LP bound), and a feasible vector near the relaxed optimum: its splits,
        with the band dealt greedily (each next subchannel where it frees the most server
        capacity, exact for given splits since the load is convex in the subchannels),
        improved toward cheaper choices while everything fits. The vector is None when the
        repair fails; ``keep`` (in ``Threshold.items``) marks the items whose reduced cost
        leaves them a chance to beat it, for the integer program."""
        sc = self.scenario
        fits = mask[:, 0] & (self.base[:, 0] + self.work[0][None, :, None] <= tau)  # (N,K,C)
        if not fits.any(axis=(1, 2)).all():
            return Threshold(None, np.inf, "infeasible")
        if np.isinf(tau):
            return self._cheapest(mask)
        n_users, n_k, n_c = fits.shape
        capacity, band_cap = float(sc.concurrency[0]), float(sc.cell_subchannels)
        with np.errstate(divide="ignore", invalid="ignore"):
            weight = np.where(fits, self.work[0][None, :, None] / (tau - self.base[:, 0]), 0.0)
        flat = fits.reshape(n_users, -1)
        w = weight.reshape(n_users, -1)
        h = np.where(flat, np.repeat(self.cost[:, 0, :], n_c, axis=1), np.inf)
        band = np.tile(np.arange(n_c, dtype=float), n_k)[None, :] * np.ones((n_users, 1))
        users = np.arange(n_users)
        if (np.where(flat, w, np.inf).min(axis=1).sum() > capacity
                or np.where(flat, band, np.inf).min(axis=1).sum() > band_cap):
            return Threshold(None, np.inf, "infeasible")  # even the lightest items overflow

        def pick(lam: float, mu: float) -> tuple[np.ndarray, float]:
            """Each user's item minimising h + lam w + mu c (ties to the lighter), and the
            dual function's value."""
            value = h + lam * w + mu * band
            low = value.min(axis=1)
            ties = value <= low[:, None] + 1e-12 * np.abs(low[:, None])
            i = np.where(ties, w + 1e-9 * band, np.inf).argmin(axis=1)
            return i, float(low.sum()) - lam * capacity - mu * band_cap

        def best_lambda(mu: float) -> tuple[float, float, np.ndarray, float, np.ndarray]:
            """Bisection on lambda for this mu: (dual, lambda_lo, picks there, lambda_hi,
            picks there); the server fits the picks at lambda_hi."""
            i_lo, d_lo = pick(0.0, mu)
            if w[users, i_lo].sum() <= capacity:
                return d_lo, 0.0, i_lo, 0.0, i_lo
            finite = np.isfinite(h)
            lo, hi = 0.0, max(float(np.ptp(h[finite]) / max(w[finite].max(), 1e-300)), 1e-12)
            i_hi, d_hi = pick(hi, mu)
            while w[users, i_hi].sum() > capacity:
                lo, i_lo, d_lo = hi, i_hi, d_hi
                hi *= 4.0
                i_hi, d_hi = pick(hi, mu)
            for _ in range(60):
                if np.count_nonzero(i_lo != i_hi) <= 1 or hi - lo <= 1e-7 * hi:
                    break
                mid = 0.5 * (lo + hi)
                i_mid, d_mid = pick(mid, mu)
                if w[users, i_mid].sum() > capacity:
                    lo, i_lo, d_lo = mid, i_mid, d_mid
                else:
                    hi, i_hi, d_hi = mid, i_mid, d_mid
            dual = max(d_lo, d_hi)
            differ = np.flatnonzero(i_lo != i_hi)
            if differ.size == 1:
                j = differ[0]
                extra = w[j, i_lo[j]] - w[j, i_hi[j]]
                if extra > 0:
                    star = (h[j, i_hi[j]] - h[j, i_lo[j]]
                            + mu * (band[j, i_hi[j]] - band[j, i_lo[j]])) / extra
                    if lo <= star <= hi:
                        dual = max(dual, pick(star, mu)[1])
            return dual, lo, i_lo, hi, i_hi

        result = best_lambda(0.0)
        mu_best = 0.0
        if sc.has_cell and band[users, result[4]].sum() > band_cap:
            # The band binds: a ternary search over its multiplier (the dual is concave).
            mu_lo, mu_hi = 0.0, 1e-12 + float(np.ptp(h[np.isfinite(h)]))
            for _ in range(60):
                if band[users, best_lambda(mu_hi)[4]].sum() <= band_cap:
                    break
                mu_lo, mu_hi = mu_hi, mu_hi * 16.0
            for _ in range(16):
                m1, m2 = mu_lo + (mu_hi - mu_lo) / 3, mu_hi - (mu_hi - mu_lo) / 3
                r1, r2 = best_lambda(m1), best_lambda(m2)
                for mu, r in ((m1, r1), (m2, r2)):
                    if r[0] > result[0]:
                        result, mu_best = r, mu
                if r1[0] < r2[0]:
                    mu_lo = m1
                else:
                    mu_hi = m2
            if band[users, result[4]].sum() > band_cap:  # take the band-feasible side
                result, mu_best = best_lambda(mu_hi), mu_hi
        bound, lam, i_lo, lam_hi, i_hi = result
        chosen = self._repair(i_hi, i_lo, flat, w, h, band, capacity, band_cap, n_c)
        value = h + lam_hi * w + mu_best * band
        # An item's reduced cost: what choosing it adds at least to the dual at these
        # multipliers, ``at_hi``. ``bound`` (the best dual found) may lie above it, so the
        # costs are stored less that excess: ``bound + reduced`` then bounds every vector with
        # the item, as its readers (the pruning below, ``cheapest_within``) take it.
        at_hi = float(value.min(axis=1).sum()) - lam_hi * capacity - mu_best * band_cap
        reduced = (value - value.min(axis=1, keepdims=True) - (bound - at_hi)
                   ).reshape(n_users, 1, n_k, n_c)
        if chosen is None:
            return Threshold(None, bound, "bound", reduced)
        found = float(h[users, chosen].sum())
        keep = (reduced <= found - bound + 1e-9 * abs(found)) & fits[:, None]
        status = "optimal" if found <= bound + 1e-12 * abs(found) else "bound"
        k, c = np.divmod(chosen, n_c)
        vector = Vector(self.splits[k], np.zeros(n_users, int), c)
        return Threshold(vector, min(bound, found), status, keep)

    def _repair(self, i_hi, i_lo, flat, w, h, band, capacity, band_cap, n_c):
        """A feasible choice from the relaxation's picks: their splits with the band dealt
        greedily; then users moved to their cheaper ``i_lo`` choices (their own subchannel
        count kept) while both capacities hold. None if the splits cannot fit."""
        sc = self.scenario
        users = np.arange(flat.shape[0])

        def deal(chosen: np.ndarray) -> np.ndarray | None:
            if not sc.has_cell:
                return chosen if w[users, chosen].sum() <= capacity else None
            k = chosen // n_c
            rows = flat.reshape(flat.shape[0], -1, n_c)[users, k]  # (N, C) allowed channels
            loads = w.reshape(w.shape[0], -1, n_c)[users, k]
            c = np.where(rows, np.arange(n_c), n_c).min(axis=1)  # the fewest that fit
            if np.any(c >= n_c) or c.sum() > band_cap:
                return None
            cell = np.flatnonzero(sc.cell)
            for _ in range(int(band_cap - c.sum())):
                nxt = np.minimum(c[cell] + 1, n_c - 1)
                gain = np.where((c[cell] + 1 < n_c) & rows[cell, nxt],
                                loads[cell, c[cell]] - loads[cell, nxt], -np.inf)
                if not np.isfinite(gain).any() or gain.max() <= 0:
                    break
                c[cell[int(np.argmax(gain))]] += 1
            out = k * n_c + c
            return out if w[users, out].sum() <= capacity else None

        chosen = deal(i_hi)
        if chosen is None:
            return None
        if not sc.has_cell:  # one capacity: most cost saved per weight added first
            room = capacity - w[users, chosen].sum()
            movers = np.flatnonzero(i_lo != chosen)
            saving = h[movers, chosen[movers]] - h[movers, i_lo[movers]]
            extra = w[movers, i_lo[movers]] - w[movers, chosen[movers]]
            for i in np.argsort(-saving / np.maximum(extra, 1e-300)):
                if saving[i] > 0 and extra[i] <= room:
                    chosen[movers[i]] = i_lo[movers[i]]
                    room -= extra[i]
            return chosen
        saving = h[users, chosen] - h[users, i_lo]
        for u in np.argsort(-saving):
            if saving[u] <= 0:
                break
            trial = chosen.copy()
            trial[u] = i_lo[u]
            trial = deal(trial)
            if trial is not None and h[users, trial].sum() < h[users, chosen].sum():
                chosen = trial
        return chosen

    def makespan_floor(self, mask: np.ndarray) -> float:
        """A lower bound on the makespan of any vector of ``mask``: exact with one server and
        no cell.

        At a target tau each user needs at least its smallest share over its items, and a cell
        user at least its fewest subchannels; tau is reachable only if both fit in the
        (pooled) capacity and the cell. Bisection on tau."""
        sc = self.scenario
        total = self.base + self.work[None, :, :, None]
        lo = float(np.where(mask, total, np.inf).min(axis=(1, 2, 3)).max())
        chan = np.arange(sc.channel_options)

        def fits(tau: float) -> bool:
            inside = mask & (total <= tau)
            with np.errstate(divide="ignore", invalid="ignore"):
                share = np.where(inside, self.work[None, :, :, None] / (tau - self.base), np.inf)
            if share.min(axis=(1, 2, 3)).sum() > sc.concurrency.sum():
                return False
            fewest = np.where(inside.any(axis=(1, 2)), chan, np.inf).min(axis=1)
            return fewest.sum() <= sc.cell_subchannels or not sc.has_cell

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
    """Items (…, K) some other split of the same user, server and channel beats: no heavier,
    no costlier, and strictly better in one (of equal twins the first is kept). Dropping them
    leaves the knapsack's optimum unchanged and its search much smaller."""
    k = weight.shape[-1]
    w_le = weight[..., :, None] <= weight[..., None, :]
    c_le = cost[..., :, None] <= cost[..., None, :]
    earlier = np.arange(k)[:, None] < np.arange(k)[None, :]
    strict = ((weight[..., :, None] < weight[..., None, :])
              | (cost[..., :, None] < cost[..., None, :]) | earlier)
    finite = np.isfinite(weight)[..., :, None]
    return (w_le & c_le & strict & finite).any(axis=-2)


# --- Searches -----------------------------------------------------------------------------


def walk(tables: Tables, mask: np.ndarray, starts=(), *, rtol: float = 1e-6,
         max_programs: int = 2000, time_limit_s: float = 60.0) -> tuple[Search, float]:
    """The search down the makespan thresholds (module docstring, step 3).

    ``starts`` are incumbent vectors. Returns the ``Search`` and the lower bound it certified
    on the optimum (``-inf`` when it stopped before bounding every threshold)."""
    best_j, best = np.inf, None

    def offer(vector: Vector) -> float:
        nonlocal best_j, best
        makespan, j = tables.value(vector)
        if j < best_j:
            best_j, best = j, vector
        return makespan

    for vector in starts:
        offer(vector)
    history = [best_j] if best is not None else []
    w_t = tables.unit_time
    # Heap of (bound, lo, hi, h, relaxed): makespans in (lo, hi], costs >= h, so nothing in
    # it scores below the bound; `relaxed`: hi was queried by the relaxation only.
    heap = [(-np.inf, tables.makespan_floor(mask), np.inf, -np.inf, False)]
    dropped = np.inf  # the lowest bound of any part of the axis taken off the heap
    known: dict[float, Threshold] = {}  # the relaxation's answer at each threshold queried
    programs, deadline = 0, time.process_time() + time_limit_s
    stopped = False
    while heap:
        bound, lo, hi, h, relaxed = heap[0]
        if bound >= best_j * (1 - rtol):
            break
        if programs >= max_programs or time.process_time() >= deadline:
            stopped = True
            break
        heapq.heappop(heap)
        if tables.relaxable and not relaxed:
            found = tables.relaxed_within(hi, mask)
            known[hi] = found
        if not (tables.relaxable and not relaxed) or (found.vector is None
                                                      and found.status == "bound"):
            # Only vectors costing below J - w_T lo can still win in this interval.
            found = tables.cheapest_within(hi, mask, 0.1 * rtol,
                                           max(0.0, deadline - time.process_time()),
                                           known.get(hi), best_j - w_t * lo)
            programs += 1
        if found.status == "infeasible":  # nothing within hi: the interval is empty
            continue
        if found.status == "cutoff":  # nothing in the interval beats the incumbent
            dropped = min(dropped, w_t * lo + found.lower_bound)
            continue
        lb = max(h, found.lower_bound)
        if found.vector is None:  # out of time: the interval keeps what was known
            heapq.heappush(heap, (max(bound, w_t * lo + lb), lo, hi, lb, relaxed))
            stopped = True
            break
        makespan = offer(found.vector)
        history.append(best_j)
        # Makespans in [T_f, hi] score at least w_T T_f + lb: settled by an exact query, else
        # kept for the integer program unless the bound already settles it.
        top = max(lo, makespan)
        if (found.status != "optimal" and w_t * top + lb < best_j * (1 - rtol)
                and top < hi):
            heapq.heappush(heap, (w_t * top + lb, top, hi, lb, True))
        else:
            dropped = min(dropped, w_t * top + lb)
        # Below T_f, only a makespan under (J - lb) / w_T can still win.
        limit = (best_j - lb) / w_t if w_t > 0 else np.inf
        below = min(makespan, hi, limit) * (1 - _STEP)
        if below < min(makespan, hi) * (1 - _STEP):
            dropped = min(dropped, best_j)
        if below <= lo:
            continue
        if below - lo > rtol * best_j / max(w_t, 1e-300):
            mid = 0.5 * (lo + below)
            heapq.heappush(heap, (w_t * lo + lb, lo, mid, lb, False))
            heapq.heappush(heap, (w_t * mid + lb, mid, below, lb, False))
        else:
            heapq.heappush(heap, (w_t * lo + lb, lo, below, lb, False))
    bound = min(heap[0][0] if heap else np.inf, dropped)
    gap = certified_gap(best_j, bound)
    status = "exact" if not stopped and gap <= rtol else ("budget" if np.isfinite(gap)
                                                          else "time-out")
    return Search(best, tuple(history), programs, gap, f"threshold walk: {status}"), bound


def certified_gap(objective: float, bound: float) -> float:
    """``(J - bound) / J`` (at least 0); NaN when nothing bounds the optimum."""
    if not np.isfinite(bound):
        return 0.0 if bound == np.inf else float("nan")
    return max(0.0, (objective - bound) / abs(objective))


def fastest_link(scenario: MakespanScenario) -> np.ndarray:
    """Each user on the server of its fastest uplink (the max-rate association)."""
    return np.argmax(scenario.uplink_bps, axis=1)


def clip_splits(scenario: MakespanScenario, split) -> np.ndarray:
    """``split`` moved into each device's allowed range [min_split, max_split]."""
    return np.clip(np.broadcast_to(split, (scenario.n_users,)), scenario.min_split,
                   np.maximum(scenario.max_split, scenario.min_split)).astype(int)


def fixed_starts(tables: Tables, association) -> list[Vector]:
    """Incumbents a search starts from: every single split for all (clipped), on the given
    association, with the cell's subchannels dealt out evenly."""
    sc = tables.scenario
    channels = equal_channels(sc)
    return [Vector(clip_splits(sc, s), np.asarray(association), channels)
            for s in range(1, sc.layers)]


def optimal(tables: Tables, *, association=None, split=None, channels=None,
            rtol: float = 1e-6, max_programs: int = 2000, time_limit_s: float = 60.0
            ) -> Search:
    """Exact splits, association and subchannels (any may be fixed) for the makespan model
    with a sharing server.

    A search stopped by its budget is finished by ``coordinate_descent`` from its best vector
    (the certified bound stays, so the gap can only shrink)."""
    sc = tables.scenario
    mask = tables.items(association, split, channels)
    base_assoc = fastest_link(sc) if association is None else np.asarray(association)
    starts = fixed_starts(tables, base_assoc) if split is None else [
        Vector(np.asarray(split), base_assoc,
               equal_channels(sc) if channels is None else np.asarray(channels))]
    starts = [v for v in starts if mask[np.arange(sc.n_users), v.association,
                                        v.split - 1, v.channels].all()]
    result, bound = walk(tables, mask, starts, rtol=rtol, max_programs=max_programs,
                         time_limit_s=time_limit_s)
    if result.vector is None:
        raise RuntimeError(f"no feasible allocation found within {time_limit_s:g} CPU s")
    if result.gap > rtol or np.isnan(result.gap):
        vector = coordinate_descent(tables, result.vector, mask)
        after = tables.value(vector)[1]
        result = Search(vector, (*result.history, after), result.programs,
                        certified_gap(after, bound), result.search + " + descent")
    return result


def exhaustive(tables: Tables) -> Vector:
    """Every allowed split vector, association and division of the cell, each with its exact
    shares."""
    sc = tables.scenario
    n, m = sc.n_users, sc.n_servers
    ranges = [range(int(lo), int(hi) + 1) for lo, hi in zip(sc.min_split, sc.max_split,
                                                            strict=True)]
    cell = np.flatnonzero(sc.cell)
    divisions = np.zeros((1, n), int)
    if cell.size:
        ways = [c for c in itertools.product(range(1, sc.cell_subchannels + 1),
                                             repeat=cell.size)
                if sum(c) <= sc.cell_subchannels]
        divisions = np.zeros((len(ways), n), int)
        divisions[:, cell] = ways
    count = m ** n * int(np.prod([len(r) for r in ranges], dtype=float)) * len(divisions)
    if count > MAX_COMBINATIONS:
        raise ValueError(f"exhaustive search too large: {count} combinations")
    splits = np.array(list(itertools.product(*ranges)), int).reshape(-1, n)
    assocs = np.array(list(itertools.product(range(m), repeat=n)), int).reshape(-1, n)
    combos = np.array(list(itertools.product(range(len(splits)), range(len(assocs)),
                                             range(len(divisions)))), int)
    split, assoc, chan = splits[combos[:, 0]], assocs[combos[:, 1]], divisions[combos[:, 2]]
    objective = np.concatenate([
        tables.objective(split[i:i + 20000], assoc[i:i + 20000], chan[i:i + 20000])[1]
        for i in range(0, len(split), 20000)])
    best = int(np.argmin(objective))
    return Vector(split[best], assoc[best], chan[best])


def coordinate_descent(tables: Tables, vector: Vector, mask=None, max_sweeps: int = 50,
                       deadline: float = np.inf) -> Vector:
    """Alternating optimisation without a relaxation: one user at a time moves to its best
    (server, split, subchannels) among the items of ``mask`` (default: all allowed) with the
    others fixed and every share re-solved, and one subchannel at a time moves between two
    cell users, until no move helps (or ``time.process_time()`` passes ``deadline``)."""
    sc = tables.scenario
    mask = tables.items() if mask is None else mask
    split, association, channels = (np.array(x, int) for x in vector)
    current = float(tables.objective(split, association, channels)[1][0])
    for _ in range(max_sweeps):
        moved = False
        for user in range(sc.n_users):
            if time.process_time() >= deadline:
                return Vector(split, association, channels)
            servers, k, c = np.nonzero(mask[user])
            room = sc.cell_subchannels - (channels.sum() - channels[user])
            keep = c <= room if sc.has_cell and sc.cell[user] else np.ones(c.size, bool)
            servers, k, c = servers[keep], k[keep], c[keep]
            trial = [np.repeat(x[None], servers.size, axis=0)
                     for x in (split, association, channels)]
            trial[0][:, user], trial[1][:, user], trial[2][:, user] = (
                tables.splits[k], servers, c)
            # A FIFO server's responses move little when one user does: the moves are ranked
            # from the current ones, the best then costed from scratch.
            values = tables.objective(*trial, initial=_responses(tables, split, association,
                                                                 channels))[1]
            i = int(np.argmin(values))
            if values[i] < current * (1 - 1e-12):
                value = float(tables.objective(*(t[i] for t in trial))[1][0])
                if value < current * (1 - 1e-12):
                    split, association, channels = (t[i] for t in trial)
                    current, moved = value, True
        cell = np.flatnonzero(sc.cell)
        if cell.size > 1:
            pairs = [(i, j) for i in cell for j in cell if i != j and channels[i] > 1]
            if pairs:
                trial_c = np.repeat(channels[None], len(pairs), axis=0)
                for row, (i, j) in enumerate(pairs):
                    trial_c[row, i] -= 1
                    trial_c[row, j] += 1
                ok = np.array([mask[np.arange(sc.n_users), association, split - 1, t].all()
                               for t in trial_c])
                values = np.where(ok, tables.objective(split, association, trial_c)[1],
                                  np.inf)
                i = int(np.argmin(values))
                if values[i] < current * (1 - 1e-12):
                    channels, current, moved = trial_c[i], float(values[i]), True
        if not moved:
            break
    return Vector(split, association, channels)


def _responses(tables: Tables, split, association, channels) -> np.ndarray | None:
    """A vector's FIFO responses (None under a sharing server)."""
    sc = tables.scenario
    if sc.queue != "fifo":
        return None
    cycle = tables.vector_base(split, association, channels, "cycle")
    return fifo_response_s(cycle, tables.work[association, split - 1], association,
                           sc.concurrency, sc.start_step_s)


def fixed_share_splits(tables: Tables, association, share, channels) -> np.ndarray:
    """Exact splits when association, shares and subchannels are fixed (the paper's "alpha
    only").

    Each user's step time ``t_n(a)`` is then known, so ``w_T max_n t_n + sum h_n`` is
    minimised by trying every makespan candidate ``tau`` in {t_n(a)}: each user takes its
    cheapest split finishing by ``tau``. A sweep over the sorted candidates keeps every user's
    running cheapest cost.
    """
    sc = tables.scenario
    users = np.arange(sc.n_users)
    t = (tables.base[users, association, :, channels]
         + tables.work[association] / share[:, None])
    cost = np.where(tables.allowed, tables.cost[users, association], np.inf)
    t = np.where(tables.allowed, t, np.inf)
    tau, _ = cheapest_by_threshold(t, cost, tables.unit_time)
    cheapest = np.where(t <= tau, cost, np.inf)
    return tables.splits[np.argmin(cheapest, axis=1)]


def cheapest_by_threshold(finish: np.ndarray, cost: np.ndarray, unit_time: float
                          ) -> tuple[float, float]:
    """``min_tau w_T tau + sum_n min { cost_ni : finish_ni <= tau }`` over items (N, I) (inf
    where not allowed): (the best tau, its value). The value is attained at a tau where some
    user's cheapest affordable item gets cheaper, so the sorted finishes are swept once,
    vectorised: each user's running cheapest cost in finish order, and the total once every
    user has an item."""
    n = finish.shape[0]
    order = np.argsort(finish, axis=1, kind="stable")
    f = np.take_along_axis(finish, order, axis=1)
    c = np.minimum.accumulate(np.take_along_axis(cost, order, axis=1), axis=1)
    first = np.isfinite(f) & np.isfinite(c)
    if not first.any(axis=1).all():
        return np.inf, np.inf
    start = np.argmax(first, axis=1)
    ready = float(f[np.arange(n), start].max())
    # Events: (finish, change of a user's running cheapest cost) after its first item.
    prev = np.concatenate([np.full((n, 1), np.inf), c[:, :-1]], axis=1)
    change = np.isfinite(f) & (c < prev) & np.isfinite(prev)
    base_cost = float(c[np.arange(n), start].sum())
    ev_f, ev_d = f[change], c[change] - prev[change]
    order = np.argsort(ev_f, kind="stable")
    ev_f, ev_d = ev_f[order], np.cumsum(ev_d[order])
    later = ev_f >= ready
    # Before `ready` the events still count (every user's cost only drops with time).
    at_ready = base_cost + (ev_d[~later][-1] if (~later).any() else 0.0)
    taus = np.concatenate([[ready], ev_f[later]])
    totals = np.concatenate([[at_ready], base_cost + ev_d[later]])
    values = unit_time * taus + totals
    i = int(np.argmin(values))
    return float(taus[i]), float(values[i])


def random_shares(scenario: MakespanScenario, association, rng) -> np.ndarray:
    """Shares drawn uniformly on each server's capacity simplex, capped at 1."""
    u = rng.exponential(1.0, scenario.n_users)
    total = np.bincount(association, u, scenario.n_servers)[association]
    return np.minimum(1.0, u / total * scenario.concurrency[association])


def random_channels(scenario: MakespanScenario, rng) -> np.ndarray:
    """The cell's subchannels dealt at random: one each, the rest uniformly on the cell's
    users (0 for users on their own links)."""
    sc = scenario
    channels = sc.cell.astype(int)
    cell = np.flatnonzero(sc.cell)
    if cell.size:
        extra = rng.multinomial(sc.cell_subchannels - cell.size, np.full(cell.size,
                                                                        1 / cell.size))
        channels[cell] += extra
    return channels


def equal_shares(scenario: MakespanScenario, association) -> np.ndarray:
    """Each server's capacity split equally among its users (at most 1 each)."""
    count = np.bincount(association, minlength=scenario.n_servers)[association]
    return np.minimum(1.0, scenario.concurrency[association] / count)


def reference(scenario: MakespanScenario):
    """The reference allocation (split, association, share, channels) that normalises the
    objective."""
    return reference_allocation(scenario)

