"""``solve`` and ``evaluate``: one entry point for every allocation method."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from numbers import Integral

from edgesplit.splits import check_split

from . import baselines
from .exhaustive import exhaustive
from .fp import optimise, split_step
from .result import Allocation, make_allocation
from .system_model import Scenario
from .terms import Terms


def _fp(terms: Terms, *, seed: int = 0, solver: str = "fast", n_starts: int = 3,
        max_outer: int = 20, tol: float = 1e-4):
    best, history, iterations = optimise(terms, "fp", seed=seed, solver=solver,
                                         n_starts=n_starts, max_outer=max_outer, tol=tol)
    return best.arrays(terms.user_freq), iterations, history


def _ao(terms: Terms, *, seed: int = 0, n_starts: int = 3, max_outer: int = 20,
        tol: float = 1e-4):
    best, history, iterations = optimise(terms, "ao", seed=seed, n_starts=n_starts,
                                         max_outer=max_outer, tol=tol)
    return best.arrays(terms.user_freq), iterations, history


def _fixed(terms: Terms, *, split: int | Sequence[int], seed: int = 0, n_starts: int = 3,
           max_outer: int = 20, tol: float = 1e-4):
    splits = ([int(split)] * terms.scenario.n_users if isinstance(split, Integral)
              else [int(s) for s in split])
    if len(splits) != terms.scenario.n_users:
        raise ValueError(f"split: {len(splits)} splits for {terms.scenario.n_users} users")
    for s in set(splits):
        check_split(s, terms.layers)
    best, history, iterations = optimise(
        terms, "fixed", split=splits, seed=seed, n_starts=n_starts, max_outer=max_outer, tol=tol)
    return best.arrays(terms.user_freq), iterations, history


def _edge_only(terms: Terms, **options):
    return _fixed(terms, split=1, **options)


def _local_only(terms: Terms, **options):
    return _fixed(terms, split=terms.layers - 1, **options)


def _greedy(terms: Terms, *, solver: str = "fast", seed: int = 0):  # deterministic: seed unused
    assoc = baselines.greedy_association(terms)
    split0 = terms.equal_share_split(assoc)
    return split_step(terms, assoc, split0, "fp", solver).arrays(terms.user_freq), 0, ()


def _alpha_only(terms: Terms, *, resources: str = "equal", seed: int = 0):
    return baselines.alpha_only(terms, resources, seed), 0, ()


def _resource_only(terms: Terms, *, seed: int = 0):
    return baselines.resource_only(terms, seed), 0, ()


def _random(terms: Terms, *, seed: int = 0):
    return baselines.random_allocation(terms, seed), 0, ()


def _exhaustive(terms: Terms, *, seed: int = 0):  # deterministic: seed unused
    return exhaustive(terms).arrays(terms.user_freq), 0, ()


#: Method name -> solver. Each takes the ``Terms`` of a scenario and keyword options.
METHODS = {
    "fp": _fp,
    "ao": _ao,
    "alpha-only": _alpha_only,
    "resource-only": _resource_only,
    "greedy": _greedy,
    "random": _random,
    "edge-only": _edge_only,
    "local-only": _local_only,
    "fixed": _fixed,
    "exhaustive": _exhaustive,
}


def solve(scenario: Scenario, method: str = "fp", **options) -> Allocation:
    """Allocate splits, association, bandwidth, power and frequencies for one round.

    Parameters
    ----------
    scenario : Scenario
    method : str (default: "fp")
        One of ``METHODS``: ``fp`` (seed A), ``ao`` (alternating integer search, no
        transform), ``alpha-only``, ``resource-only``, ``greedy`` (max-rate association),
        ``random``, ``edge-only`` (a=1), ``local-only`` (a=Y-1), ``fixed`` (option ``split``),
        ``exhaustive`` (small instances only).
    **options
        ``seed`` (int, default 0; every method accepts it and is deterministic given it);
        per method: ``solver``
        (``"fast"`` or ``"cvxpy"``, for fp and greedy), ``n_starts``, ``max_outer``, ``tol``
        (fp, ao, fixed, edge-only, local-only), ``split`` (fixed: one split for every
        user, or a sequence of one per user), ``resources``
        (``"equal"`` or ``"random"``, alpha-only).

    Returns
    -------
    Allocation
        Feasible, with its objective and components recomputed by ``evaluate``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}")
    func = METHODS[method]
    accepted = set(inspect.signature(func).parameters) - {"terms", "options"}
    if method in ("edge-only", "local-only"):
        accepted = set(inspect.signature(_fixed).parameters) - {"terms", "split"}
    unknown = set(options) - accepted
    if unknown:
        raise TypeError(f"method {method!r} got unknown options {sorted(unknown)}")
    terms = Terms(scenario)
    arrays, iterations, history = func(terms, **options)
    return make_allocation(scenario, method, *arrays, iterations=iterations, history=history)
