"""The allocation a makespan-model solver returns, and its independent check against the model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .makespan_model import MakespanScenario, cost_components, fifo_shares, step_times
from .system_model import RTOL, Costs, weighted_objective


@dataclass(frozen=True)
class MakespanAllocation:
    """Decisions for every user n under the makespan model, and what they cost.

    Attributes
    ----------
    split : np.ndarray of int, shape (N,)
        a_n: layers [0, a_n) train on the device.
    association : np.ndarray of int, shape (N,)
        Server index of each user.
    share : np.ndarray, shape (N,)
        phi_n in (0, 1]: the share of its server's tail throughput (a server's shares sum to at
        most its concurrency); under a "fifo" server no decision but each user's effective
        share ``W / R`` (``makespan_model.fifo_shares``), which need not sum below it.
    objective : float
        ``w_e E/E_ref + w_t T/T_ref + w_s S/S_ref``.
    energy, delay, stability : float
        Energy (J) and makespan (s) of one step, and the stability bound.
    iterations : int
        Integer programs the exact walk solved (0 for one-shot methods).
    history : tuple of float
        Objective of the incumbent after each of them.
    method : str
    gap : float
        Certified relative optimality gap ``(J - bound) / J`` for the decisions the method
        optimises: 0 when its search proved the answer optimal (to its tolerance), NaN where
        nothing bounds it (heuristics, a search stopped before any bound).
    search : str
        How the answer was found and what backs ``gap``: "exact" (proved optimal),
        "branch-and-bound" or "threshold walk" (stopped by its budget with a certified gap),
        "descent" (a local search; gap NaN), "enumeration", "rule" (a fixed rule: gap NaN).
    channels : np.ndarray of int, shape (N,)
        Subchannels of the cell each user transmits on (0 for users on their own links).
    """

    split: np.ndarray
    association: np.ndarray
    share: np.ndarray
    channels: np.ndarray | None = None
    objective: float = float("nan")
    energy: float = float("nan")
    delay: float = float("nan")
    stability: float = float("nan")
    iterations: int = 0
    history: tuple = field(default_factory=tuple)
    method: str = ""
    gap: float = float("nan")
    search: str = ""

    def step_times(self, scenario: MakespanScenario) -> tuple[np.ndarray, np.ndarray,
                                                             np.ndarray]:
        """Per-user modelled (device, transfer, server) seconds of one step."""
        return step_times(scenario, self.split, self.association, self.share,
                          channels=self.channels)

    def rate_bps(self, scenario: MakespanScenario) -> np.ndarray:
        """Each user's uplink rate: its own link's, or its subchannels' share of the cell's."""
        users = np.arange(scenario.n_users)
        rate = scenario.uplink_bps[users, np.asarray(self.association, int)]
        if self.channels is None:
            return rate
        return np.where(scenario.cell, rate * np.asarray(self.channels)
                        / scenario.cell_subchannels, rate)


def check_feasible(scenario: MakespanScenario, alloc: MakespanAllocation) -> None:
    """Raise ``ValueError`` naming the first violated constraint."""
    sc = scenario
    n, m = sc.n_users, sc.n_servers
    for name in ("split", "association", "share"):
        value = np.asarray(getattr(alloc, name))
        if value.shape != (n,):
            raise ValueError(f"{name}: expected shape ({n},), got {value.shape}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name}: not finite")
    split, assoc = np.asarray(alloc.split), np.asarray(alloc.association)
    if np.any(split != np.round(split)) or np.any(split < sc.min_split):
        raise ValueError("split: every split must be an integer >= the device's min_split")
    if np.any(split > sc.max_split):
        raise ValueError("split: a device's memory cannot hold its split")
    if np.any(assoc != np.round(assoc)) or np.any(assoc < 0) or np.any(assoc >= m):
        raise ValueError(f"association: every user needs a server index in 0..{m - 1}")
    share = np.asarray(alloc.share, float)
    if np.any(share <= 0) or np.any(share > 1 + RTOL):
        raise ValueError("share: every share must be in (0, 1]")
    used = np.bincount(assoc.astype(int), weights=share, minlength=m)
    if sc.queue == "shares" and np.any(used > sc.concurrency * (1 + RTOL)):
        raise ValueError("share: a server's shares sum above its concurrency")
    sc.own_channels(alloc.channels)  # raises naming what is wrong


def evaluate_makespan(scenario: MakespanScenario, allocation: MakespanAllocation) -> Costs:
    """Check every constraint, then recompute the objective and its components."""
    check_feasible(scenario, allocation)
    a = allocation
    t, e, s = cost_components(scenario, np.asarray(a.split), np.asarray(a.association, int),
                              a.share, a.channels)
    return Costs(weighted_objective(scenario, e, t, s), e, t, s)


def make_makespan_allocation(scenario: MakespanScenario, method: str, split, association,
                             share, channels=None, iterations: int = 0, history=(),
                             gap: float = float("nan"), search: str = "rule"
                             ) -> MakespanAllocation:
    """A ``MakespanAllocation`` whose costs come from ``evaluate_makespan`` (so checked); under
    a "fifo" server its shares are the model's effective ones, whatever ``share`` says."""
    channels = scenario.own_channels(channels if scenario.has_cell else None)
    if scenario.queue == "fifo":
        share = fifo_shares(scenario, split, association, channels)
    alloc = MakespanAllocation(np.asarray(split, int), np.asarray(association, int),
                               np.asarray(share, float), channels, iterations=iterations,
                               history=tuple(float(h) for h in history), method=method, gap=gap,
                               search=search)
    c = evaluate_makespan(scenario, alloc)
    return dataclasses.replace(alloc, objective=c.objective, energy=c.energy_j,
                               delay=c.delay_s, stability=c.stability)
