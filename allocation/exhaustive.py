"""Exhaustive search over every integer split vector and association, for small instances.

The objective separates over servers once the association is fixed: a server's uplink and
compute costs depend only on which users it serves and their splits. So the search solves each
(server, subset of users) once, over all split vectors of that subset, in one vectorised batch
(shares by exact water-filling, uplink by the same solver the optimisers use), then combines
subsets into associations.
"""

from __future__ import annotations

import itertools

import numpy as np

from .terms import Candidate, Terms
from .waterfilling import server_freq_hz, solve_uplink

#: Largest number of (server, subset, split vector) combinations searched.
MAX_COMBINATIONS = 2_000_000


def exhaustive(terms: Terms) -> Candidate:
    """The best integer allocation, with exact shares and the shared uplink solver.

    Raises
    ------
    ValueError
        If the instance needs more than ``MAX_COMBINATIONS`` combinations.
    """
    sc, y = terms.scenario, terms.layers
    n, m = sc.n_users, sc.n_servers
    if m * float(y) ** n > MAX_COMBINATIONS:
        raise ValueError(f"exhaustive search too large: {n} users, {m} servers, {y} layers")
    subsets = [s for r in range(1, n + 1) for s in itertools.combinations(range(n), r)]

    # Uplink cost of every (server, subset): one group per pair.
    pairs = [(srv, s) for srv in range(m) for s in subsets]
    pair_server = np.array([srv for srv, _ in pairs])
    pair_size = np.array([len(s) for _, s in pairs])
    users = np.concatenate([np.array(s) for _, s in pairs])
    servers = np.concatenate([np.full(len(s), srv) for srv, s in pairs])
    pair_of = np.repeat(np.arange(len(pairs)), pair_size)
    uplink = solve_uplink(terms.gamma[users, servers], terms.alpha[users], terms.beta[users],
                          terms.pmin[users], sc.user_pmax_w[users], pair_of,
                          sc.server_bandwidth_hz[pair_server])[2]
    uplink_total = np.bincount(pair_of, weights=uplink, minlength=len(pairs))

    # Compute cost of every (server, subset, split vector): one group per triple.
    grids = {r: np.array(list(itertools.product(range(1, y), repeat=r)), float)
             for r in range(1, n + 1)}
    parts = []  # per pair: (split, user, server, pair index per split vector)
    for k, (srv, s) in enumerate(pairs):
        grid = grids[len(s)]
        parts.append((grid.ravel(), np.tile(s, len(grid)), np.full(grid.size, srv),
                      np.full(len(grid), k)))
    split, user, server, owner = (np.concatenate(x) for x in zip(*parts, strict=True))
    group = np.repeat(np.arange(owner.size), pair_size[owner])
    coef = terms.coef[user, server]
    freq = server_freq_hz(y - split, coef, group, sc.server_freq_hz[pair_server[owner]],
                          terms.unit_time, terms.kappa)[0]
    cost = (split * terms.device[user]
            + (y - split) * coef * (terms.unit_time / freq + terms.kappa * freq**2)
            + terms.stab[user] * y / (y - split))
    per_vector = np.bincount(group, weights=cost, minlength=owner.size)
    compute_total = np.empty(len(pairs))
    best_split: dict[tuple, np.ndarray] = {}
    for k, (_, s) in enumerate(pairs):
        rows = np.flatnonzero(owner == k)
        i = rows[np.argmin(per_vector[rows])]
        compute_total[k] = per_vector[i]
        best_split[pairs[k]] = grids[len(s)][i - rows[0]].astype(int)

    # Combine: an association picks, per server, the subset of users on it.
    pair_index = {p: k for k, p in enumerate(pairs)}
    best_obj, best_assoc = np.inf, None
    for assoc in itertools.product(range(m), repeat=n):
        total = 0.0
        for srv in set(assoc):
            k = pair_index[(srv, tuple(i for i in range(n) if assoc[i] == srv))]
            total += uplink_total[k] + compute_total[k]
        if total < best_obj:
            best_obj, best_assoc = total, np.array(assoc)
    best = np.empty(n, int)
    for srv in set(best_assoc.tolist()):
        on = tuple(np.flatnonzero(best_assoc == srv).tolist())
        best[list(on)] = best_split[(srv, on)]
    return terms.candidate(best, best_assoc)
