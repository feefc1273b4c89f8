"""Every allocation method of ``api.METHODS`` under the makespan model (the registry there
pairs each name with its function here).

``fp`` names the model's optimiser (here the exact threshold walk of ``makespan_solver``, not
a fractional program), so that one `allocator` setting picks the optimiser of whichever cost
model a run uses. The baselines mirror the paper's comparisons: each fixes or randomises part
of the decision and solves the rest exactly.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np

from .makespan_model import MakespanScenario
from .makespan_result import MakespanAllocation, make_makespan_allocation
from .makespan_solver import (
    Tables,
    clip_splits,
    coordinate_descent,
    equal_shares,
    fastest_link,
    fixed_share_splits,
    optimal,
    random_shares,
    reference,
)
from .makespan_solver import exhaustive as exhaustive_search


def _exact(tables: Tables, association=None, split=None, **budget):
    split, assoc, history, programs, gap = optimal(tables, association=association,
                                                   split=split, **budget)
    # The history starts, as the paper model's, at the reference allocation.
    history = (tables.scenario.reference.objective, *history)
    return split, assoc, tables.shares(split, assoc), programs, history, gap


def fp(tables: Tables, *, seed: int = 0, max_programs: int = 2000,
        time_limit_s: float = 60.0):  # deterministic: seed unused
    return _exact(tables, max_programs=max_programs, time_limit_s=time_limit_s)


def fixed(tables: Tables, *, split: int, seed: int = 0):  # deterministic: seed unused
    return _exact(tables, split=clip_splits(tables.scenario, split))


def edge_only(tables: Tables, *, seed: int = 0):
    return _exact(tables, split=tables.scenario.min_split)


def local_only(tables: Tables, *, seed: int = 0):
    return _exact(tables, split=clip_splits(tables.scenario, tables.scenario.layers - 1))


def greedy(tables: Tables, *, seed: int = 0, time_limit_s: float = 60.0):
    return _exact(tables, association=fastest_link(tables.scenario), time_limit_s=time_limit_s)


def random_association(tables: Tables, *, seed: int = 0, time_limit_s: float = 60.0):
    sc = tables.scenario
    assoc = np.random.default_rng(seed).integers(0, sc.n_servers, sc.n_users)
    return _exact(tables, association=assoc, time_limit_s=time_limit_s)


def resource_only(tables: Tables, *, seed: int = 0):
    sc = tables.scenario
    rng = np.random.default_rng(seed)
    return _exact(tables, split=rng.integers(sc.min_split, sc.max_split + 1))


def ao(tables: Tables, *, seed: int = 0):  # deterministic: seed unused
    split, assoc, _ = reference(tables.scenario)
    split, assoc = coordinate_descent(tables, split, assoc)
    return split, assoc, tables.shares(split, assoc), 0, (), float("nan")


def alpha_only(tables: Tables, *, seed: int = 0):  # deterministic: seed unused
    sc = tables.scenario
    assoc = fastest_link(sc)
    share = equal_shares(sc, assoc)
    return fixed_share_splits(tables, assoc, share), assoc, share, 0, (), float("nan")


def random_allocation(tables: Tables, *, seed: int = 0):
    sc = tables.scenario
    rng = np.random.default_rng(seed)
    split = rng.integers(sc.min_split, sc.max_split + 1)
    assoc = rng.integers(0, sc.n_servers, sc.n_users)
    return split, assoc, random_shares(sc, assoc, rng), 0, (), float("nan")


def exhaustive(tables: Tables, *, seed: int = 0):  # deterministic: seed unused
    split, assoc = exhaustive_search(tables)
    return split, assoc, tables.shares(split, assoc), 0, (), 0.0


def accepted_options(solver: Callable) -> set[str]:
    """Keyword options a method's solver takes."""
    return set(inspect.signature(solver).parameters) - {"tables"}


def solve_makespan(scenario: MakespanScenario, method: str, solver: Callable,
                   **options) -> MakespanAllocation:
    """``api.solve`` for a ``MakespanScenario``: ``solver`` is the method's function here
    (arguments checked there)."""
    if scenario.infeasible:
        raise ValueError("users that cannot train any split: "
                         + "; ".join(f"{n}: {r}" for n, r in scenario.infeasible.items()))
    tables = Tables(scenario)
    split, assoc, share, iterations, history, gap = solver(tables, **options)
    return make_makespan_allocation(scenario, method, split, assoc, share, iterations,
                                    history, gap)


def with_splits(scenario: MakespanScenario, split, method: str) -> MakespanAllocation:
    """Given splits (e.g. chosen by another rule), the best association and exact shares."""
    tables = Tables(scenario)
    split, assoc, share, iterations, history, gap = _exact(tables, split=split)
    return make_makespan_allocation(scenario, method, split, assoc, share, iterations,
                                    history, gap)
