"""Branch and bound for the makespan model under a first-come-first-served server ("fifo").

There a user's wait depends on every other user's split, subchannels and start
(``makespan_model.fifo_response_s``: ``R_n = W_n + sum_k o_nk Q_k W_k / c_m``, a mean-value
analysis over the users of its server, ``Q_k = R_k / (B_k + R_k)`` and ``o_nk`` the share of
n's data plane, the window ``[s_n, s_n + B_n + R_n]`` per step, that k's overlaps), so no
knapsack describes the server. What holds for any fixed point of those equations, and so for
the model's answer:

- ``Q_k W_k`` grows with ``R_k``, so ``R_lo <= R_k <= R_hi`` bounds k's load
  ``W R / (B + R)`` on both sides;
- the overlap grows with the other window's length and, per unit of n's own, first grows then
  falls, so over the cycles the bounds allow its least value is at one end of n's range and
  its largest at one end or at the peak;
- hence ``R_n >= W_n + sum_k min_j (o_min load_lo)_kj / c_m`` over k's allowed items j (0 if
  k may sit on another server), and the same with maxima from above. Starting from
  ``R_lo = W``, ``R_hi = W + sum_k max W_k / c``, a few rounds of these close in on the fixed
  point; at a single vector they meet it.

A node of the search allows each user a subset of its (server, split, subchannels) items.
Each item's ``finish_low = s_n + B_n + R_lo + U_n`` (``U_n`` its adapter's upload after the
last step, outside the cycle) bounds that user's finish, so
``min_tau w_T tau + sum_n min {h_n : finish_low <= tau}`` (a sweep over the sorted finishes,
``makespan_solver.cheapest_by_threshold``) bounds every vector of the node from below; with a
cell, the band enters through a Lagrange multiplier (each item's cost plus ``mu c_n``, less
``mu J``; maximised over ``mu`` by a ternary search). Items that cannot be in a vector beating
the incumbent are dropped first (their users' finishes bound the makespan from below), which
raises the others' least loads, so that repeats. The sweep's minimiser (ties to the lightest
load) is a vector, evaluated exactly as an incumbent (its subchannels first cut back into the
band). Best-first: the node with the lowest bound is split in two by the user whose load there
exceeds its least most (or whose cycle is least pinned down), its items halved by load. The
search stops when the incumbent is within ``rtol`` of the lowest bound left (exact), or at its
budget with that gap certified. A one-user-at-a-time descent on the exact objective, seeded
with every single split and the sharing server's optimum, gives the first incumbent.
"""

from __future__ import annotations

import heapq
import itertools
import time
from typing import NamedTuple

import numpy as np

from .makespan_model import equal_channels
from .makespan_solver import (
    Search,
    Tables,
    Vector,
    certified_gap,
    cheapest_by_threshold,
    coordinate_descent,
)

#: Most users for which the FIFO search runs its first one-user-at-a-time descent, and most
#: (user, user, item) triples for which its bounds model the queue (above: the bound without
#: queueing, R >= W).
DESCENT_USERS = 300
PAIRWISE_LIMIT = 4_000_000
#: Margin the bound keeps below the fixed point, relative to the largest response (at least
#: 1 s): ``fifo_response_s`` stops once a step moves less than 1e-9 of that scale, which leaves
#: it up to about 1e-8 of the scale from its fixed point on random instances.
MODEL_SLACK = 1e-6


class ItemLists:
    """Each user's allowed items as rows of (N, I) arrays (padded; ``valid`` marks real
    items): server, split, subchannels, device + transfer seconds ``B`` (the cycle through the
    queue), the adapter's upload after it (``exchange``, in the finish only), tail ``W``, cost
    ``h`` and ``g = W^2 / (B + W)``."""

    def __init__(self, tables: Tables, mask: np.ndarray) -> None:
        sc = self.scenario = tables.scenario
        self.tables = tables
        lists = [np.argwhere(mask[n]) for n in range(sc.n_users)]
        width = max(len(x) for x in lists)
        self.valid = np.zeros((sc.n_users, width), bool)
        index = np.zeros((sc.n_users, width, 3), int)
        for n, x in enumerate(lists):
            self.valid[n, :len(x)] = True
            index[n, :len(x)] = x
            index[n, len(x):] = x[0]
        self.server, k, self.channels = index[..., 0], index[..., 1], index[..., 2]
        self.split = tables.splits[k]
        users = np.arange(sc.n_users)[:, None]
        self.base = tables.cycle[users, self.server, k, self.channels]
        self.exchange = tables.exchange[users, self.server, k, self.channels]
        self.work = tables.work[self.server, k]
        self.cost = tables.cost[users, self.server, k]
        self.load = self.work**2 / (self.base + self.work)
        start = sc.start_step_s
        self.start = np.zeros(sc.n_users) if start is None else start - start.min()
        self.offsets = start is not None

    def vector(self, pick: np.ndarray) -> Vector:
        users = np.arange(self.scenario.n_users)
        return Vector(self.split[users, pick], self.server[users, pick],
                      self.channels[users, pick])


def _overlap_ratio(start_n, x, start_k, y) -> np.ndarray:
    """Share of n's window ``[s_n, s_n + x]`` that k's ``[s_k, s_k + y]`` overlaps."""
    both = np.minimum(start_n + x, start_k + y) - np.maximum(start_n, start_k)
    return np.clip(both, 0.0, None) / x


class NodeBound:
    """The lower bound of one node (module docstring) and the vector that attains it.

    Each item's queue ``q = R - W`` satisfies ``q (B + W + q) = sum_k ov_nk Q_k W_k / c``
    (the equation times n's cycle), where the overlap length ``ov`` grows with both windows
    and ``Q_k W_k`` with ``R_k``. So from lower bounds on every response, ``A_n = sum_k min_j
    ov(n's least cycle, j's least cycle) Q_lo W / c`` bounds the right side from below, and
    ``q >= (sqrt(b^2 + 4 A_n) - b) / 2`` (``b = B + W``); the new bounds feed the next round.
    Every map is monotone, so the bounds only rise, toward the model's fixed point (which they
    meet at a node of one vector). Upper bounds (loads and overlaps at their largest) give
    each user's cycle range, for branching."""

    def __init__(self, items: ItemLists, alive: np.ndarray, rounds: int = 10,
                 low: np.ndarray | None = None) -> None:
        sc, it = items.scenario, items
        n = sc.n_users
        inf = np.inf
        servers = np.arange(sc.n_servers)
        on = alive[..., None] & (it.server[..., None] == servers)  # (N, I, M)
        elsewhere = (alive[..., None] & ~on).any(axis=1)  # (N, M): k may sit off m
        capacity = sc.concurrency
        users = np.arange(n)[:, None]
        others = ~np.eye(n, dtype=bool)
        cycle = it.base + it.work  # b: each item's cycle without queueing
        cycle_max = np.where(alive, cycle, -inf).max(axis=1)
        work_max = np.where(alive, it.work, 0.0).max(axis=1)
        # Start from W, or from a parent node's bounds (they hold for its subsets too).
        low = it.work.copy() if low is None else np.maximum(it.work, low)
        high = it.work + (work_max.sum() - work_max)[:, None] / capacity.min()
        s = it.start[:, None, None], it.start[None, :, None]
        self.pairwise = n * n * it.base.shape[1] <= PAIRWISE_LIMIT
        least = np.zeros((n, n, sc.n_servers))
        pair = np.zeros((n, n, it.base.shape[1])) if self.pairwise else None
        for _ in range(rounds if self.pairwise else 0):
            load_lo = it.work * low / (it.base + low)
            x_lo = np.where(alive, it.base + low, inf).min(axis=1)
            if it.offsets:
                # (n, k, j): the least length of n's window that item j of k overlaps.
                both = (np.minimum(s[0] + x_lo[:, None, None], s[1] + (it.base + low)[None])
                        - np.maximum(s[0], s[1]))
                length = np.clip(both, 0.0, None)
            else:
                length = x_lo[:, None, None] * np.ones((1, 1, it.base.shape[1]))
            pair = length * load_lo[None]
            least = np.where(on, pair[..., None], inf).min(axis=2)
            least = np.where(elsewhere[None], 0.0, least)  # (n, k, M)
            area = np.einsum("nkm,nk->nm", np.where(np.isfinite(least), least, 0.0),
                             others) / capacity  # A_n on each server
            a_n = area[users, it.server]
            new_low = it.work + (np.sqrt(cycle**2 + 4 * a_n) - cycle) / 2
            rise = np.max(np.where(alive, new_low - low, 0.0))
            low = np.maximum(low, new_low)
            if rise <= 1e-7 * float(np.max(np.where(alive, low, 0.0))):
                break
        # Largest responses: every overlap whole, every load at its largest (a few rounds).
        for _ in range(3):
            load_hi = it.work * high / (it.base + high)
            most = np.where(on, load_hi[..., None], 0.0).max(axis=1)  # (k, M)
            wait_hi = (others.astype(float) @ most) / capacity
            high = np.minimum(high, it.work + wait_hi[users, it.server])
        x_lo = np.where(alive, it.base + low, inf).min(axis=1)
        x_hi = np.where(alive, it.base + high, -inf).max(axis=1)
        self.low = low  # before the margin: where a child's bounds start
        self.contrib = least
        self.cycle_range = np.maximum(x_hi - x_lo, 0.0)
        self.load = np.where(alive, it.work * low / (it.base + low), inf)
        # The model's iteration stops near, not at, its fixed point: keep a margin below it.
        self.slack = MODEL_SLACK * max(1.0, float(np.max(np.where(alive, low, 0.0))))
        low = np.maximum(it.work, low - self.slack)
        self.finish = np.where(alive, it.start[:, None] + it.base + low + it.exchange, inf)
        self.items, self.alive = items, alive
        # Linear in the others' items, for the Lagrangian: the queue's bound is concave in
        # A, so above its chord from 0 to the largest A: q >= kappa_n A, with b at its largest.
        if not self.pairwise:
            self.coupling = None
            return
        settled = ~elsewhere & on.any(axis=1)  # (N, M): every live item of n on m
        coupling = pair * others[..., None] * settled[:, it.server] / capacity[it.server][None]
        a_max = np.where(alive[None], coupling, 0.0).max(axis=2).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            kappa = np.where(a_max > 0, (np.sqrt(cycle_max**2 + 4 * a_max) - cycle_max)
                             / (2 * a_max), 0.0)
        self.coupling = kappa[:, None, None] * coupling

    def sweep(self, mu: float = 0.0, floor: float = -np.inf) -> tuple[float, np.ndarray | None]:
        """The bound with the band's multiplier ``mu`` and makespans from ``floor`` on, and
        the vector attaining it (per user the cheapest item finishing by the bound's makespan,
        ties to the lightest load, which spares the others' waits); None if none fits."""
        it, sc, inf = self.items, self.items.scenario, np.inf
        cost = np.where(self.alive, it.cost + mu * it.channels, inf)
        tau, value = cheapest_by_threshold(np.maximum(self.finish, floor), cost,
                                           it.tables.unit_time)
        if not np.isfinite(tau):
            return inf, None
        within = np.where(self.finish <= tau, cost, inf)
        low = within.min(axis=1, keepdims=True)
        ties = within <= low + 1e-12 * np.abs(low)
        pick = np.where(ties, self.load, inf).argmin(axis=1)
        return value - (mu * sc.cell_subchannels if sc.has_cell else 0.0), pick


    def lagrangian(self, iterations: int = 30) -> tuple[float, np.ndarray | None]:
        """The bound from ``T >= finish_n`` for every n, weighted by multipliers ``lambda_n``
        (>= 0, summing to ``w_T``): ``J >= sum_n lambda_n finish_n + sum_n h_n``, and each
        finish at least ``s_n + B_n + W_n + sum_k coupling_nk``, which is separable by user
        once weighted. So the load every user puts on the others is priced, which the sweep
        (each user's least finish with everyone else at their lightest) leaves out. The
        multipliers climb by exponentiated subgradient steps (the subgradient: each user's
        bounded finish at the minimising items); returns the best value and its items."""
        it, inf = self.items, np.inf
        w_t = it.tables.unit_time
        if w_t <= 0 or self.coupling is None:
            return -inf, None
        n = it.scenario.n_users
        users = np.arange(n)
        own = np.where(self.alive, it.start[:, None] + it.base + it.work + it.exchange, inf)
        cost = np.where(self.alive, it.cost, inf)
        lam = np.full(n, w_t / n)
        best, best_pick = -inf, None
        for step in range(iterations):
            price = lam[:, None] * own + cost + np.einsum("n,nkj->kj", lam, self.coupling)
            pick = price.argmin(axis=1)
            value = float(price[users, pick].sum())
            if value > best:
                best, best_pick = value, pick
            finish = own[users, pick] + self.coupling[:, users, pick].sum(axis=1)
            spread = float(finish.max() - finish.min())
            if spread <= 0:
                break
            lam = lam * np.exp((2.0 / np.sqrt(step + 1)) * (finish - finish.max()) / spread)
            lam *= w_t / lam.sum()
        return best - w_t * self.slack, best_pick


class Node(NamedTuple):
    """A node's live items (fewer than it was given when the incumbent rules some out), its
    bound and the vector attaining it; ``pruned``: the bound of anything ruled out."""

    alive: np.ndarray
    bound: NodeBound
    value: float
    pick: np.ndarray | None
    pruned: float


def node_bound(items: ItemLists, alive: np.ndarray, incumbent: float, rtol: float,
               low: np.ndarray | None = None) -> Node | None:
    """The node's bound (None when no vector of it can beat ``incumbent`` by ``rtol``).

    First the items that cannot be in such a vector are dropped, until none is: item i of
    user n scores at least ``w_T max(T_floor, finish_low_i) + h_i + sum_{k != n} min h_k``
    (``T_floor`` the largest of the users' least finishes); dropping items raises the
    others' least loads and waits, so this repeats. With a cell, the band's constraint then
    enters the sweep through its multiplier, maximised by a ternary search."""
    sc, w_t = items.scenario, items.tables.unit_time
    target = incumbent * (1 - rtol)
    pruned = np.inf
    for _ in range(8):
        nb = NodeBound(items, alive, low=low)
        low = nb.low
        if not (w_t > 0 and np.isfinite(incumbent)):
            break
        cheapest = np.where(alive, items.cost, np.inf).min(axis=1)
        floor = np.min(nb.finish, axis=1).max()
        score = (w_t * np.maximum(nb.finish, floor) + items.cost
                 + (cheapest.sum() - cheapest)[:, None])
        keep = alive & (score < target)
        if sc.has_cell:
            fewest = np.where(keep, items.channels, np.inf).min(axis=1)
            if fewest.sum() > sc.cell_subchannels:
                return None
        if not keep.any(axis=1).all():
            return None
        if (keep == alive).all():
            break
        pruned, alive = target, keep
    dual, dual_pick = nb.lagrangian()
    if not sc.has_cell:
        value, pick = nb.sweep()
        if dual > value:
            value, pick = dual, dual_pick
        return Node(alive, nb, value, pick, pruned)
    lo, hi = 0.0, 4.0 * abs(incumbent if np.isfinite(incumbent) else 1.0) / sc.cell_subchannels
    value, pick = nb.sweep()
    for _ in range(24):
        a, b = lo + (hi - lo) / 3, hi - (hi - lo) / 3
        (va, pa), (vb, pb) = nb.sweep(a), nb.sweep(b)
        if max(va, vb) > value:
            value, pick = (va, pa) if va >= vb else (vb, pb)
        if va < vb:
            lo = a
        else:
            hi = b
    if dual > value:
        value, pick = dual, dual_pick
    return Node(alive, nb, value, pick, pruned)


def fit_band(items: ItemLists, pick: np.ndarray, alive: np.ndarray) -> np.ndarray | None:
    """``pick`` with cell users' subchannels cut one at a time (the one whose step grows
    least) until they fit in the band, within the node's items; None if they cannot."""
    sc = items.scenario
    pick = pick.copy()
    users = np.arange(sc.n_users)
    while items.channels[users, pick].sum() > sc.cell_subchannels:
        best, best_user, best_item = np.inf, -1, -1
        for n in np.flatnonzero(sc.cell):
            c = items.channels[n, pick[n]]
            same = (alive[n] & (items.server[n] == items.server[n, pick[n]])
                    & (items.split[n] == items.split[n, pick[n]])
                    & (items.channels[n] == c - 1))
            if c > 1 and same.any():
                j = int(np.argmax(same))
                own = items.base[n, j] + items.exchange[n, j]
                if own < best:
                    best, best_user, best_item = own, n, j
        if best_user < 0:
            return None
        pick[best_user] = best_item
    return pick


def fifo_search(tables: Tables, mask: np.ndarray, seeds=(), *, rtol: float = 1e-6,
                time_limit_s: float = 60.0, max_nodes: int = 1_000_000) -> Search:
    """The FIFO model's optimum over the items of ``mask`` (module docstring), from the
    incumbents ``seeds``; the gap is certified against the lowest bound left open (or taken
    off the search)."""
    sc = tables.scenario
    deadline = time.process_time() + time_limit_s  # CPU seconds of this process
    items = ItemLists(tables, mask)
    users = np.arange(sc.n_users)
    seeds = [v for v in seeds if mask[users, v.association, v.split - 1, v.channels].all()]
    # Seeds in order until an eighth of the budget is spent, the descent to a quarter of it
    # (skipped where one move costs too much: each trial vector is a mean-value analysis of
    # N^2 pairs); the search has the rest.
    started = time.process_time()
    values = []
    for vector in seeds:
        if values and time.process_time() - started > time_limit_s / 8:
            break
        values.append(tables.value(vector)[1])
    best = seeds[int(np.argmin(values))]
    if sc.n_users <= DESCENT_USERS:
        best = coordinate_descent(tables, best, mask, deadline=started + time_limit_s / 4)
    best_j = tables.value(best)[1]
    history = [min(values), best_j]
    seen: set[bytes] = set()

    def offer(pick: np.ndarray | None) -> None:
        nonlocal best, best_j
        if pick is None or pick.tobytes() in seen:
            return
        seen.add(pick.tobytes())
        vector = items.vector(pick)
        j = tables.value(vector)[1]
        if j < best_j:
            best, best_j = vector, j
            history.append(j)

    counter = itertools.count()
    dropped = np.inf  # the lowest bound of anything taken off the search
    heap = []
    root = node_bound(items, items.valid.copy(), best_j, rtol)
    if root is None:
        dropped = best_j * (1 - rtol)
    else:
        heap.append((root.value, next(counter), root))
    nodes, stopped = 0, False
    while heap:
        bound, _, node = heap[0]
        if bound >= best_j * (1 - rtol):
            break
        if nodes >= max_nodes or time.process_time() >= deadline:
            stopped = True
            break
        heapq.heappop(heap)
        nodes += 1
        dropped = min(dropped, node.pruned)
        if node.pick is None:  # no vector of the node fits
            continue
        offer(fit_band(items, node.pick, node.alive) if sc.has_cell else node.pick)
        counts = node.alive.sum(axis=1)
        if (counts <= 1).all():  # one vector: evaluated exactly above
            continue
        # Branch: the user whose bound understates its load most (or whose cycle is the
        # least pinned down), its live items halved by load.
        nb, chosen = node.bound, node.pick
        lightest = np.where(node.alive, nb.load, np.inf).min(axis=1)
        under = nb.load[users, chosen] - lightest
        score = np.where(counts > 1, under + nb.cycle_range, -np.inf)
        user = int(np.argmax(score))
        live = np.flatnonzero(node.alive[user])
        order = live[np.argsort(nb.load[user, live], kind="stable")]
        for part in (order[:len(order) // 2], order[len(order) // 2:]):
            alive = node.alive.copy()
            alive[user] = False
            alive[user, part] = True
            child = node_bound(items, alive, best_j, rtol, low=nb.low)
            if child is None:
                dropped = min(dropped, best_j * (1 - rtol))
            elif child.value < best_j * (1 - rtol):
                heapq.heappush(heap, (max(child.value, bound), next(counter), child))
            else:
                dropped = min(dropped, child.value, child.pruned)
    lowest = heap[0][0] if heap else np.inf
    gap = certified_gap(best_j, min(lowest, dropped, best_j))
    status = "budget" if stopped else "exact"
    return Search(best, tuple(history), nodes, gap, f"branch and bound: {status}")


def fifo_seeds(tables: Tables, starts, shared_vector: Vector | None) -> list[Vector]:
    """Incumbents for the FIFO search, the most promising first: the sharing server's
    optimum, then ``starts`` and, with a cell, the even division of the band on every one."""
    seeds = ([] if shared_vector is None else [shared_vector]) + list(starts)
    sc = tables.scenario
    if sc.has_cell:
        even = equal_channels(sc)
        seeds += [Vector(v.split, v.association, even) for v in list(seeds)]
    return seeds


def response_lower_bound(items: ItemLists, pick: np.ndarray) -> np.ndarray:
    """The bound's least response of each user at one vector (a node of one item each), to
    set beside ``fifo_response_s``'s."""
    alive = np.zeros_like(items.valid)
    users = np.arange(alive.shape[0])
    alive[users, pick] = True
    return (NodeBound(items, alive).finish[users, pick] - items.start
            - items.base[users, pick] - items.exchange[users, pick])
