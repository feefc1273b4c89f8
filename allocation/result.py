"""The allocation a solver returns, and its independent check against the system model."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgesplit.splits import split_range

from .makespan_model import MakespanScenario
from .makespan_result import MakespanAllocation, evaluate_makespan
from .system_model import RTOL, Costs, Scenario, cost_components, weighted_objective


@dataclass(frozen=True)
class Allocation:
    """Decisions for every user n, and what they cost.

    Attributes
    ----------
    split : np.ndarray of int, shape (N,)
        a_n in 1..Y-1: layers [0, a_n) train on the device.
    association : np.ndarray of int, shape (N,)
        Server index of each user.
    bandwidth : np.ndarray, shape (N,)
        Uplink bandwidth in Hz.
    power : np.ndarray, shape (N,)
        Transmit power in W.
    user_freq : np.ndarray, shape (N,)
        Device frequency in Hz.
    server_freq : np.ndarray, shape (N,)
        Share of the user's server frequency in Hz.
    objective : float
        Normalised weighted objective ``w_e E/E_ref + w_t T/T_ref + w_s S/S_ref``.
    energy, delay, stability : float
        Totals in J, s and unitless.
    iterations : int
        Outer iterations of the optimiser (0 for one-shot methods).
    history : tuple of float
        Objective of the incumbent after each iteration, from the reference allocation on.
    method : str
        The method that produced it.
    """

    split: np.ndarray
    association: np.ndarray
    bandwidth: np.ndarray
    power: np.ndarray
    user_freq: np.ndarray
    server_freq: np.ndarray
    objective: float = float("nan")
    energy: float = float("nan")
    delay: float = float("nan")
    stability: float = float("nan")
    iterations: int = 0
    history: tuple = field(default_factory=tuple)
    method: str = ""


def check_feasible(scenario: Scenario, alloc: Allocation) -> None:
    """Raise ``ValueError`` naming the first violated constraint."""
    sc = scenario
    n, m, y = sc.n_users, sc.n_servers, sc.layers
    for name in ("split", "association", "bandwidth", "power", "user_freq", "server_freq"):
        value = np.asarray(getattr(alloc, name))
        if value.shape != (n,):
            raise ValueError(f"{name}: expected shape ({n},), got {value.shape}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name}: not finite")
    split, assoc = np.asarray(alloc.split), np.asarray(alloc.association)
    valid = split_range(y)
    if np.any(split != np.round(split)) or np.any(split < valid.start) or np.any(
            split >= valid.stop):
        raise ValueError(f"split: every split must be an integer in "
                         f"{valid.start}..{valid.stop - 1}")
    if np.any(assoc != np.round(assoc)) or np.any(assoc < 0) or np.any(assoc >= m):
        raise ValueError(f"association: every user needs a server index in 0..{m - 1}")
    for name in ("bandwidth", "power", "user_freq", "server_freq"):
        if np.any(np.asarray(getattr(alloc, name)) <= 0):
            raise ValueError(f"{name}: must be positive")
    if np.any(alloc.power > sc.user_pmax_w * (1 + RTOL)):
        raise ValueError("power: exceeds the user's max power pmax")
    if np.any(alloc.user_freq > sc.user_freq_hz * (1 + RTOL)):
        raise ValueError("user_freq: exceeds the device's max frequency")
    assoc = assoc.astype(int)
    for name, budget in (("bandwidth", sc.server_bandwidth_hz), ("server_freq", sc.server_freq_hz)):
        used = np.bincount(assoc, weights=getattr(alloc, name), minlength=m)
        if np.any(used > budget * (1 + RTOL)):
            raise ValueError(f"{name}: a server's shares sum above its budget")


def evaluate(scenario: Scenario | MakespanScenario,
             allocation: Allocation | MakespanAllocation) -> Costs:
    """Check every constraint, then recompute the objective and its components (of the
    paper's model or of the makespan model, after the scenario's type).

    Raises
    ------
    ValueError
        Naming the violated constraint (split range, power, device frequency, a server's
        bandwidth or frequency budget, association; makespan model: memory, shares).
    """
    if isinstance(scenario, MakespanScenario):
        return evaluate_makespan(scenario, allocation)
    check_feasible(scenario, allocation)
    a = allocation
    e, t, s = cost_components(scenario, np.asarray(a.split), np.asarray(a.association, int),
                              a.bandwidth, a.power, a.user_freq, a.server_freq)
    return Costs(weighted_objective(scenario, e, t, s), e, t, s)


def make_allocation(scenario: Scenario, method: str, split, association, bandwidth, power,
                    user_freq, server_freq, iterations: int = 0, history=()) -> Allocation:
    """An ``Allocation`` whose costs come from ``evaluate`` (so they are checked)."""
    alloc = Allocation(np.asarray(split, int), np.asarray(association, int),
                       np.asarray(bandwidth, float), np.asarray(power, float),
                       np.asarray(user_freq, float), np.asarray(server_freq, float),
                       iterations=iterations, history=tuple(float(h) for h in history),
                       method=method)
    c = evaluate(scenario, alloc)
    return Allocation(alloc.split, alloc.association, alloc.bandwidth, alloc.power,
                      alloc.user_freq, alloc.server_freq, c.objective, c.energy_j, c.delay_s,
                      c.stability, iterations, alloc.history, method)
