"""The allocator the training strategy calls once per round.

It turns the sampled clients' reported profiles into this round's system-model scenario (one
edge server, fresh Rayleigh fading each round), asks an allocation method for split points and
radio/compute resources, and reports the modelled energy, delay and stability of the result, so
every policy, optimised or not, is costed by the same model. No Flower here, and no torch at
import: only the learned `rl-split` policy loads torch (lazily, when such an allocator is built).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from edgesplit.splits import check_split

from .api import METHODS, solve
from .result import Allocation, evaluate
from .system_model import ModelCost, Scenario, Weights, scenario_from_profiles


@dataclass(frozen=True)
class Policy:
    """What an allocator needs from the run config besides the round's profiles.

    uses_split : bool
        Reads `split` (fixed: everyone's split; heterogeneous-fixed: the deepest).
    learned : bool
        Needs a trained split policy (`rl-policy`).
    solves_resources : bool
        Optimises the resources for its splits, so they are solved again when a split floor
        moves a split (the others keep their equal, random or fp-given shares).
    """

    uses_split: bool = False
    learned: bool = False
    solves_resources: bool = True


#: Every allocator a run may name (the run config's `allocator`): the optimiser's methods
#: (exhaustive is for small instances only), a split chosen from each device's capability, and
#: the learned split policy.
ALLOCATORS: dict[str, Policy] = {
    **{name: Policy(solves_resources=name not in ("alpha-only", "random"))
       for name in sorted(METHODS) if name != "exhaustive"},
    "fixed": Policy(uses_split=True),
    "heterogeneous-fixed": Policy(uses_split=True, solves_resources=False),
    "rl-split": Policy(learned=True, solves_resources=False),
}


class SplitRule(Protocol):
    """What `rl-split` asks: a split for a channel loss rate (`allocation.split_rl.SplitPolicy`).

    `problem` carries the trained range of q (`q_low`, `q_high`)."""

    problem: object

    def split_for(self, loss_rate: float, current_split: int = 1) -> int: ...


@dataclass(frozen=True)
class ClientAllocation:
    """One client's share for a round (SI units)."""

    split: int
    bandwidth_hz: float
    power_w: float
    user_freq_hz: float
    loss_rate: float | None = None  # rl-split: the channel loss rate the split was chosen for


@dataclass(frozen=True)
class RoundAllocation:
    """Every sampled client's share, in profile order, and what the system model says it costs."""

    clients: list[ClientAllocation]
    objective: float
    energy_j: float
    delay_s: float
    stability: float


class SystemAllocator:
    """Allocate with any policy in `ALLOCATORS` on this round's scenario.

    Parameters
    ----------
    policy : str
        A method of `allocation.solve` (e.g. "fp", "greedy", "random", "fixed"),
        "heterogeneous-fixed" (split grows with device FLOP/s and memory, up to `split`;
        equal bandwidth, full power and frequency) or "rl-split" (resources as "fp" computes
        them; each client's split from the learned policy given its channel loss rate).
    split : int
        The split for "fixed", and the deepest split for "heterogeneous-fixed".
    seed : int
        Seeds the per-round fading and any randomised method.
    server_bandwidth_hz : float
        The uplink bandwidth shared among the round's clients.
    weights : Weights, optional
    split_policy : str, Path or SplitRule, optional
        "rl-split" only (and then required): a folder written by `SplitPolicy.save` (e.g.
        ``<out>/policy`` of ``python -m experiments.split_rl --out <out>``), loaded here, or a
        loaded policy.
    fading_m : float (default: 1.0)
        "rl-split": Nakagami shape of the SNR -> loss-rate mapping (1 = Rayleigh).
    min_split : int (default: 1)
        Every client's split is at least this (a privacy floor: `min-device-layers`, or a
        leakage budget's floor); 1 = none. Every policy decides as it would without it, then
        splits below the floor are raised to it and, where the policy optimises resources, the
        resources are solved again for the raised splits (`solve(..., "fixed")` with one split
        per client): a feasible allocation that respects the floor, not one optimised over the
        splits above it (the smallest change that serves every policy alike).
    """

    def __init__(self, policy: str, split: int, seed: int, server_bandwidth_hz: float,
                 weights: Weights | None = None, split_policy: str | Path | SplitRule | None = None,
                 fading_m: float = 1.0, min_split: int = 1) -> None:
        if policy not in ALLOCATORS:
            raise ValueError(f"unknown allocator {policy!r}; choose from {list(ALLOCATORS)}")
        self.policy, self.split, self.seed, self.min_split = policy, split, seed, min_split
        self.server_bandwidth_hz, self.weights = server_bandwidth_hz, weights or Weights()
        self.fading_m = fading_m
        self.split_policy: SplitRule | None = None
        if ALLOCATORS[policy].learned:
            if split_policy is None or split_policy == "":
                raise ValueError("allocator rl-split needs a trained split policy: train one with "
                                 "`python -m experiments.split_rl --out DIR`, then pass "
                                 "DIR/policy (run config: rl-policy=\"DIR/policy\")")
            if isinstance(split_policy, str | Path):
                from .split_rl import SplitPolicy  # torch and stable-baselines3: rl-split only

                split_policy = SplitPolicy.load(split_policy)
            self.split_policy = split_policy

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
        if ALLOCATORS[self.policy].uses_split:
            check_split(self.split, model.layers, model.device_tail_layers)
        try:
            check_split(self.min_split, model.layers, model.device_tail_layers)
        except ValueError as exc:
            raise ValueError(f"the split floor leaves no valid split: {exc}") from None
        scenario = self.scenario(server_round, profiles, model)
        loss_rates = None
        if self.policy == "heterogeneous-fixed":
            result = _by_capability(scenario, profiles, self.split)
        elif self.policy == "rl-split":
            result = solve(scenario, "fp", seed=self.seed * 100_003 + server_round)
            loss_rates = self.loss_rates(scenario, result)
            splits = [int(np.clip(self.split_policy.split_for(q), 1, model.split_layers - 1))
                      for q in loss_rates]
            result = replace(result, split=np.array(splits), method="rl-split")
        else:
            options = {"split": self.split} if self.policy == "fixed" else {}
            result = solve(scenario, self.policy, seed=self.seed * 100_003 + server_round,
                           **options)
        result = self.floored(scenario, result, server_round)
        costs = evaluate(scenario, result)
        clients = [ClientAllocation(int(s), float(b), float(p), float(f)) for s, b, p, f in
                   zip(result.split, result.bandwidth, result.power, result.user_freq,
                       strict=True)]
        if loss_rates is not None:
            clients = [replace(c, loss_rate=float(q)) for c, q in
                       zip(clients, loss_rates, strict=True)]
        return RoundAllocation(clients, costs.objective, costs.energy_j, costs.delay_s,
                               costs.stability)

    def floored(self, scenario: Scenario, result: Allocation, server_round: int) -> Allocation:
        """`result` with every split raised to `min_split`, resources solved again for the new
        splits when the policy optimises them."""
        split = np.maximum(result.split, self.min_split)
        if np.array_equal(split, result.split):
            return result
        if not ALLOCATORS[self.policy].solves_resources:
            return replace(result, split=split)
        fixed = solve(scenario, "fixed", split=split.tolist(),
                      seed=self.seed * 100_003 + server_round)
        return replace(fixed, method=result.method)

    def loss_rates(self, scenario: Scenario, result: Allocation) -> np.ndarray:
        """Each client's channel loss rate q_n under `result`'s resources ("rl-split").

        SNR_n = p_n g_n / (N0 b_n) on its server (this round's faded gain), mapped to the
        Nakagami-m outage probability q = gammainc(m, m / SNR) (`edgesplit.channel.nakagami_outage`,
        Omega = 1, g_th = 1) and clipped to the range the policy was trained on.
        """
        from edgesplit.channel import nakagami_outage  # torch-side module: rl-split only

        users = np.arange(scenario.n_users)
        gain = scenario.gain[users, np.asarray(result.association, int)]
        snr = (np.asarray(result.power) * gain
               / (scenario.weights.noise_w_per_hz * np.asarray(result.bandwidth)))
        problem = self.split_policy.problem
        q = [nakagami_outage(10.0 * np.log10(s), self.fading_m) for s in snr]
        return np.clip(q, problem.q_low, problem.q_high)


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
