"""Every allocation method of ``api.METHODS`` under the makespan model (the registry there
pairs each name with its function here).

``fp`` names the model's optimiser (the exact threshold walk of ``makespan_solver`` under a
sharing server, the branch and bound of ``fifo_search`` under a first-come-first-served one; not
a fractional program), so that one `allocator` setting picks the optimiser of whichever cost
model a run uses. The baselines mirror the paper's comparisons: each fixes or randomises part
of the decision and solves the rest exactly; ``sflllm`` is the rule of SflLLM (Zhao et al.,
GLOBECOM 2025) in this model.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .fifo_search import fifo_search, fifo_seeds
from .makespan_model import MakespanScenario, equal_channels
from .makespan_result import MakespanAllocation, make_makespan_allocation
from .makespan_solver import (
    Search,
    Tables,
    Vector,
    clip_splits,
    coordinate_descent,
    equal_shares,
    fastest_link,
    fixed_share_splits,
    fixed_starts,
    optimal,
    random_channels,
    random_shares,
    reference,
)
from .makespan_solver import exhaustive as exhaustive_search

#: Relative gap at which fp's searches stop, and their budget in CPU seconds (a round's
#: allocation should not hold the round up).
TOLERANCE = 1e-3
TIME_LIMIT_S = 10.0


class Answer(NamedTuple):
    """What a method decided: its vector, the shares, the work done (integer programs or
    nodes), the history of its incumbent, its certified gap and how it ended."""

    vector: Vector
    share: np.ndarray | None
    iterations: int
    history: tuple
    gap: float
    search: str


def _exact(tables: Tables, association=None, split=None, channels=None, *,
           tolerance: float = TOLERANCE, max_programs: int = 2000,
           time_limit_s: float = 60.0) -> Answer:
    """The optimum over what is not fixed, by the server's search."""
    sc = tables.scenario
    if sc.queue == "fifo":
        result = _fifo_exact(tables, association, split, channels, tolerance=tolerance,
                             max_programs=max_programs, time_limit_s=time_limit_s)
    else:
        result = optimal(tables, association=association, split=split, channels=channels,
                         rtol=tolerance, max_programs=max_programs, time_limit_s=time_limit_s)
    # The history starts, as the paper model's, at the reference allocation.
    history = (sc.reference.objective, *result.history)
    return Answer(result.vector, None, result.programs, history, result.gap, result.search)


def _fifo_exact(tables: Tables, association, split, channels, *, tolerance: float,
                max_programs: int, time_limit_s: float) -> Search:
    """``fifo_search`` over what is not fixed, from the sharing server's optimum (to 0.1%,
    with a fifth of the budget) and every single split."""
    sc = tables.scenario
    mask = tables.items(association, split, channels)
    base = fastest_link(sc) if association is None else np.asarray(association)
    starts = (fixed_starts(tables, base) if split is None else
              [Vector(np.asarray(split), base,
                      equal_channels(sc) if channels is None else np.asarray(channels))])
    shared = Tables(dataclasses.replace(sc, queue="shares"))
    seed = optimal(shared, association=association, split=split, channels=channels,
                   rtol=max(tolerance, 1e-3), max_programs=min(max_programs, 5),
                   time_limit_s=time_limit_s / 5).vector
    return fifo_search(tables, mask, fifo_seeds(tables, starts, seed), rtol=tolerance,
                       time_limit_s=time_limit_s * 4 / 5)


def fp(tables: Tables, *, seed: int = 0, max_programs: int = 2000,
       time_limit_s: float = TIME_LIMIT_S, tolerance: float = TOLERANCE
       ) -> Answer:  # deterministic up to its time budget: seed unused
    return _exact(tables, max_programs=max_programs, time_limit_s=time_limit_s,
                  tolerance=tolerance)


def fixed(tables: Tables, *, split: int, seed: int = 0) -> Answer:  # deterministic
    return _exact(tables, split=clip_splits(tables.scenario, split))


def edge_only(tables: Tables, *, seed: int = 0) -> Answer:
    return _exact(tables, split=tables.scenario.min_split)


def local_only(tables: Tables, *, seed: int = 0) -> Answer:
    return _exact(tables, split=clip_splits(tables.scenario, tables.scenario.layers - 1))


def greedy(tables: Tables, *, seed: int = 0, time_limit_s: float = 60.0) -> Answer:
    return _exact(tables, association=fastest_link(tables.scenario), time_limit_s=time_limit_s)


def random_association(tables: Tables, *, seed: int = 0, time_limit_s: float = 60.0) -> Answer:
    sc = tables.scenario
    assoc = np.random.default_rng(seed).integers(0, sc.n_servers, sc.n_users)
    return _exact(tables, association=assoc, time_limit_s=time_limit_s)


def resource_only(tables: Tables, *, seed: int = 0) -> Answer:
    sc = tables.scenario
    rng = np.random.default_rng(seed)
    return _exact(tables, split=rng.integers(sc.min_split, sc.max_split + 1))


def ao(tables: Tables, *, seed: int = 0) -> Answer:  # deterministic: seed unused
    split, assoc, _, channels = reference(tables.scenario)
    vector = coordinate_descent(tables, Vector(split, assoc, channels))
    return Answer(vector, None, 0, (), float("nan"), "descent: no bound")


def alpha_only(tables: Tables, *, seed: int = 0) -> Answer:  # deterministic: seed unused
    sc = tables.scenario
    assoc = fastest_link(sc)
    share, channels = equal_shares(sc, assoc), equal_channels(sc)
    split = fixed_share_splits(tables, assoc, share, channels)
    return Answer(Vector(split, assoc, channels), share, 0, (), float("nan"), "rule")


def random_allocation(tables: Tables, *, seed: int = 0) -> Answer:
    sc = tables.scenario
    rng = np.random.default_rng(seed)
    split = rng.integers(sc.min_split, sc.max_split + 1)
    assoc = rng.integers(0, sc.n_servers, sc.n_users)
    share = random_shares(sc, assoc, rng)
    return Answer(Vector(split, assoc, random_channels(sc, rng)), share, 0, (), float("nan"),
                  "rule")


def exhaustive(tables: Tables, *, seed: int = 0) -> Answer:  # deterministic: seed unused
    return Answer(exhaustive_search(tables), None, 0, (), 0.0, "enumeration: exact")


def sflllm(tables: Tables, *, seed: int = 0, max_rounds: int = 20) -> Answer:  # deterministic
    """SflLLM's allocation rule (Zhao et al., GLOBECOM 2025; arXiv 2504.14667) in this model:
    alternate a greedy subchannel assignment (one subchannel each, then every other one to the
    client whose step is then slowest) and each client's split by exhaustive search for its
    own fastest step given its subchannels, until the splits repeat; the LoRA rank is fixed
    (it is not a decision here) and so is the transmit power per subchannel. Each client is on
    its fastest link's server; its step is costed at an equal share of the server while the
    rule decides, and the shares are then solved exactly for its splits (as every baseline's
    are). Without a cell only the split search remains."""
    sc = tables.scenario
    users = np.arange(sc.n_users)
    assoc = fastest_link(sc)
    share = equal_shares(sc, assoc)
    server_s = tables.work[assoc] / share[:, None]  # (N, K) at the equal shares
    split = sc.min_split.copy()
    channels = sc.cell.astype(int)
    rounds = 0
    while rounds < max_rounds:
        rounds += 1
        channels = greedy_subchannels(tables, split, assoc, server_s)
        step = tables.base[users, assoc, :, channels] + server_s
        new = tables.splits[np.where(tables.allowed, step, np.inf).argmin(axis=1)]
        if np.array_equal(new, split):
            break
        split = new
    return Answer(Vector(split, assoc, channels), None, rounds, (), float("nan"), "rule")


def greedy_subchannels(tables: Tables, split, association, server_s) -> np.ndarray:
    """One subchannel for each cell user, then each remaining one to the cell user whose step
    (device, transfer on its subchannels, server at ``server_s`` (N, K)) is slowest."""
    sc = tables.scenario
    channels = sc.cell.astype(int)
    cell = np.flatnonzero(sc.cell)
    if not cell.size:
        return channels
    k = np.asarray(split) - 1
    own = tables.base[cell, association[cell], k[cell]] + server_s[cell, k[cell]][:, None]
    for _ in range(sc.cell_subchannels - cell.size):
        slowest = int(np.argmax(own[np.arange(cell.size), channels[cell]]))
        channels[cell[slowest]] += 1
    return channels


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
    return _allocation(tables, method, solver(tables, **options))


def _allocation(tables: Tables, method: str, answer: Answer) -> MakespanAllocation:
    share = tables.shares(answer.vector) if answer.share is None else answer.share
    split, assoc, channels = answer.vector
    return make_makespan_allocation(tables.scenario, method, split, assoc, share, channels,
                                    answer.iterations, answer.history, answer.gap,
                                    answer.search)


def with_splits(scenario: MakespanScenario, split, method: str) -> MakespanAllocation:
    """Given splits (e.g. chosen by another rule), the best association, subchannels and
    exact shares."""
    tables = Tables(scenario)
    return _allocation(tables, method, _exact(tables, split=split))
