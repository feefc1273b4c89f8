"""``solve`` and ``evaluate``: one entry point for every allocation method."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from numbers import Integral

import numpy as np

from edgesplit.splits import check_split

from . import baselines
from . import makespan_methods as makespan
from .exhaustive import exhaustive
from .fp import optimise, split_step
from .makespan_methods import accepted_options, solve_makespan
from .makespan_model import MakespanScenario
from .makespan_result import MakespanAllocation
from .result import Allocation, make_allocation
from .system_model import Scenario
from .terms import Terms


def _fp(terms: Terms, *, seed: int = 0, solver: str = "fast", n_starts: int = 3,
        max_outer: int = 20, tol: float = 1e-4,
        warm_start: Allocation | tuple[np.ndarray, np.ndarray] | None = None,
        warm_starts: int = 1):
    init = None
    if warm_start is not None:
        if isinstance(warm_start, Allocation):
            warm_start = (warm_start.association, warm_start.split)
        init = tuple(np.asarray(x, int) for x in warm_start)
        n = terms.scenario.n_users
        if init[0].shape != (n,) or init[1].shape != (n,):
            raise ValueError(f"warm_start must give the association and split of the same {n} "
                             "users")
        if np.any((init[0] < 0) | (init[0] >= terms.scenario.n_servers)):
            raise ValueError("warm_start associates a user with a server this scenario lacks")
    best, history, iterations = optimise(terms, "fp", seed=seed, solver=solver,
                                         n_starts=n_starts, max_outer=max_outer, tol=tol,
                                         init=init, warm_starts=warm_starts)
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


def _random_association(terms: Terms, *, seed: int = 0):
    """Uniformly random association, then fp's splits and resources for it (the paper's
    random-association baseline; ``random`` randomises splits and shares as well)."""
    sc = terms.scenario
    assoc = np.random.default_rng(seed).integers(0, sc.n_servers, sc.n_users)
    cand = split_step(terms, assoc, terms.equal_share_split(assoc), "fp")
    return cand.arrays(terms.user_freq), 0, ()


def _exhaustive(terms: Terms, *, seed: int = 0):  # deterministic: seed unused
    return exhaustive(terms).arrays(terms.user_freq), 0, ()


def _sflllm(terms: Terms, *, seed: int = 0):  # deterministic: seed unused
    return baselines.sflllm(terms), 0, ()


#: Method name -> its solver in the paper's model (each takes the scenario's ``Terms``) and in
#: the makespan model (``makespan_methods``, each takes its ``Tables``), with keyword options.
METHODS = {
    "fp": (_fp, makespan.fp),
    "ao": (_ao, makespan.ao),
    "alpha-only": (_alpha_only, makespan.alpha_only),
    "resource-only": (_resource_only, makespan.resource_only),
    "greedy": (_greedy, makespan.greedy),
    "random": (_random, makespan.random_allocation),
    "random-association": (_random_association, makespan.random_association),
    "edge-only": (_edge_only, makespan.edge_only),
    "local-only": (_local_only, makespan.local_only),
    "fixed": (_fixed, makespan.fixed),
    "exhaustive": (_exhaustive, makespan.exhaustive),
    "sflllm": (_sflllm, makespan.sflllm),
}


def solve(scenario: Scenario | MakespanScenario, method: str = "fp",
          **options) -> Allocation | MakespanAllocation:
    """Allocate splits, association, bandwidth, power and frequencies for one round (the
    paper's model), or splits, association and server shares (the makespan model).

    Parameters
    ----------
    scenario : Scenario or MakespanScenario
        The cost model is the scenario's: the paper's (``Scenario``) or the makespan model.
    method : str (default: "fp")
        One of ``METHODS``: ``fp`` (the model's optimiser: seed A's fractional programming, or
        the makespan model's exact walk), ``ao`` (alternating integer search, no transform),
        ``alpha-only``, ``resource-only``, ``greedy`` (max-rate association), ``random``,
        ``random-association``, ``edge-only`` (a=1), ``local-only`` (a=Y-1), ``fixed``
        (option ``split``), ``exhaustive`` (small instances only), ``sflllm`` (SflLLM's
        greedy subchannels and per-client split search).
    **options
        ``seed`` (int, default 0; every method accepts it and is deterministic given it);
        per method: ``solver``
        (``"fast"`` or ``"cvxpy"``, for fp and greedy), ``n_starts``, ``max_outer``, ``tol``
        (fp, ao, fixed, edge-only, local-only), ``warm_start`` (fp: an ``Allocation`` of the
        same users, e.g. the previous round's, or an (association, split) pair, that starts the
        search; see ``fp.optimise``) and ``warm_starts`` (fp: association starts when warm,
        default 1), ``split`` (fixed: one split for every user, or a sequence of one per user),
        ``resources`` (``"equal"`` or ``"random"``, alpha-only); makespan model:
        ``max_programs`` and ``time_limit_s`` (fp's budget: integer programs, default 2000, and
        CPU seconds of this process, default 10; ``time_limit_s`` also for greedy and
        random-association), ``tolerance`` (fp: the relative gap at which its search stops,
        default 1e-3), ``split`` (fixed).

    Returns
    -------
    Allocation or MakespanAllocation
        Feasible, with its objective and components recomputed by ``evaluate``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}")
    func, makespan_func = METHODS[method]
    if isinstance(scenario, MakespanScenario):
        unknown = set(options) - accepted_options(makespan_func)
        if unknown:
            raise TypeError(f"method {method!r} got unknown options {sorted(unknown)}")
        return solve_makespan(scenario, method, makespan_func, **options)
    accepted = set(inspect.signature(func).parameters) - {"terms", "options"}
    if method in ("edge-only", "local-only"):
        accepted = set(inspect.signature(_fixed).parameters) - {"terms", "split"}
    unknown = set(options) - accepted
    if unknown:
        raise TypeError(f"method {method!r} got unknown options {sorted(unknown)}")
    terms = Terms(scenario)
    arrays, iterations, history = func(terms, **options)
    return make_allocation(scenario, method, *arrays, iterations=iterations, history=history,
                           evaluations=terms.evaluations)
