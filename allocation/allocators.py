"""The allocator the training strategy calls once per round.

It turns the sampled clients' reported profiles into this round's system-model scenario (one
edge server, fresh Rayleigh fading each round), asks an allocation method for split points and
radio/compute resources, and reports the modelled energy, delay and stability of the result, so
every policy, optimised or not, is costed by the same model. No Flower and no torch here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .api import METHODS, solve
from .result import Allocation, evaluate
from .system_model import ModelCost, Scenario, Weights, scenario_from_profiles

#: Policies the strategy accepts: the optimiser's methods (exhaustive is for small instances
#: only) plus a split chosen from each device's capability.
POLICIES = tuple(sorted(set(METHODS) - {"exhaustive"})) + ("heterogeneous-fixed",)


@dataclass(frozen=True)
class ClientAllocation:
    """One client's share for a round (SI units)."""

    split: int
    bandwidth_hz: float
    power_w: float
    user_freq_hz: float


@dataclass(frozen=True)
class RoundAllocation:
    """Every sampled client's share, in profile order, and what the system model says it costs."""

    clients: list[ClientAllocation]
    objective: float
    energy_j: float
    delay_s: float
    stability: float


class SystemAllocator:
    """Allocate with any policy in `POLICIES` on this round's scenario.

    Parameters
    ----------
    policy : str
        A method of `allocation.solve` (e.g. "fp", "greedy", "random", "fixed") or
        "heterogeneous-fixed" (split grows with device FLOP/s and memory, up to `split`;
        equal bandwidth, full power and frequency).
    split : int
        The split for "fixed", and the deepest split for "heterogeneous-fixed".
    seed : int
        Seeds the per-round fading and any randomised method.
    server_bandwidth_hz : float (default: 20e6)
    weights : Weights, optional
    """

    def __init__(self, policy: str, split: int, seed: int, server_bandwidth_hz: float = 20e6,
                 weights: Weights | None = None) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown allocator {policy!r}; choose from {POLICIES}")
        self.policy, self.split, self.seed = policy, split, seed
        self.server_bandwidth_hz, self.weights = server_bandwidth_hz, weights or Weights()

    def scenario(self, server_round: int, profiles: Sequence[Mapping[str, float]],
                 model: ModelCost) -> Scenario:
        """This round's scenario: the profiles, one server, fresh Rayleigh fading."""
        column = {k: np.array([p[k] for p in profiles], dtype=float) for k in profiles[0]}
        return scenario_from_profiles(
            column["cpu_freq_hz"], column["cores"], column["flops_per_cycle"],
            column["tx_power_w"], column["distance_m"], column["num-examples"], model,
            server_bandwidth_hz=self.server_bandwidth_hz, weights=self.weights,
            rng=np.random.default_rng([self.seed, server_round]))

    def allocate(self, server_round: int, profiles: Sequence[Mapping[str, float]],
                 model: ModelCost) -> RoundAllocation:
        check_split(self.split, model.layers)
        scenario = self.scenario(server_round, profiles, model)
        if self.policy == "heterogeneous-fixed":
            result = _by_capability(scenario, profiles, self.split)
        else:
            options = {"split": self.split} if self.policy == "fixed" else {}
            if self.policy not in ("greedy",):
                options["seed"] = self.seed * 100_003 + server_round
            result = solve(scenario, self.policy, **options)
        costs = evaluate(scenario, result)
        clients = [ClientAllocation(int(s), float(b), float(p), float(f)) for s, b, p, f in
                   zip(result.split, result.bandwidth, result.power, result.user_freq,
                       strict=True)]
        return RoundAllocation(clients, costs.objective, costs.energy_j, costs.delay_s,
                               costs.stability)


def check_split(split: int, num_layers: int) -> None:
    if not 1 <= split <= num_layers - 1:
        raise ValueError(f"split {split} outside [1, {num_layers - 1}] for a "
                         f"{num_layers}-layer model")


def _by_capability(scenario: Scenario, profiles: Sequence[Mapping[str, float]],
                   max_split: int) -> Allocation:
    """Deeper splits for stronger devices: the strongest in the seed-A ranges (1 GHz x 6 cores,
    8 GB) gets `max_split` layers, the weakest 1; equal bandwidth, full power and frequency."""
    splits = []
    for p in profiles:
        compute = p["cpu_freq_hz"] * p["cores"] * p["flops_per_cycle"] / 6e9
        capability = min(1.0, np.sqrt(compute * min(1.0, p["memory_gb"] / 8.0)))
        splits.append(max(1, int(round(capability * max_split))))
    n = len(profiles)
    server_freq = np.asarray(scenario.server_freq_hz, dtype=float)[0]
    return Allocation(
        split=np.array(splits), association=np.zeros(n, dtype=int),
        bandwidth=np.full(n, scenario.server_bandwidth_hz[0] / n),
        power=np.array([p["tx_power_w"] for p in profiles]),
        user_freq=np.array([p["cpu_freq_hz"] for p in profiles]),
        server_freq=np.full(n, server_freq / n), method="heterogeneous-fixed")
