"""The allocator the training strategy calls once per round.

It turns the sampled clients' reported profiles (and, when measured, their speeds and the
server's) into this round's scenario of the run's cost model, asks an allocation method for
split points and resources, and reports the modelled energy, delay and stability of the result
and each client's modelled step times, so every policy, optimised or not, is costed by the same
model. Cost models: "makespan" (`makespan_model`: one shared edge server of a catalogue class,
the round's makespan, memory caps) and "paper" (`system_model`: seed A's, with fresh Rayleigh
fading each round). No Flower here, and no torch at import: only the learned `rl-split` policy
loads torch (lazily, when such an allocator is built).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from edgesplit.hardware import DEFAULT_SERVER, server_class
from edgesplit.splits import check_split

from .api import METHODS, solve
from .makespan_methods import with_splits
from .makespan_model import (
    MakespanScenario,
    exchange_s,
    fifo_queue_s,
    makespan_scenario_from_profiles,
    server_work_s,
)
from .makespan_result import MakespanAllocation
from .measurement import Measured
from .result import Allocation, evaluate
from .system_model import (
    ModelCost,
    Scenario,
    Weights,
    scenario_from_profiles,
    step_times,
    uplink_rate_bps,
)

#: Cost models a run may name (run config `allocation.cost-model`).
COST_MODELS = ("makespan", "paper")


@dataclass(frozen=True)
class Policy:
    """What an allocator needs from the run config besides the round's profiles.

    uses_split : bool
        Reads `split` (fixed: everyone's split; heterogeneous-fixed: the deepest).
    learned : bool
        Needs a trained split policy (`allocation.rl-policy`).
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
    """One client's share for a round (SI units; per-step times as the cost model predicts).

    modelled_server_s is the client's tail at the whole server's speed; modelled_queue_s what
    sharing the server adds to it. bandwidth_hz: the paper model's share of the server's band,
    or the makespan model's share of the cell's (None for a device on its own link);
    user_freq_hz : paper model only (the makespan model's devices run flat out); server_share,
    subchannels : makespan model only. rate_bps: the uplink rate the allocation gives (what
    `stream.pace-links` paces at).
    """

    split: int
    power_w: float
    modelled_device_s: float
    modelled_transfer_s: float
    modelled_server_s: float
    modelled_queue_s: float
    bandwidth_hz: float | None = None
    user_freq_hz: float | None = None
    server_share: float | None = None
    loss_rate: float | None = None  # rl-split: the channel loss rate the split was chosen for
    rate_bps: float | None = None
    # Makespan model: the wait for the server if it runs tails first come first served
    # (`makespan_model.fifo_queue_s`), beside the shares' `modelled_queue_s`.
    modelled_fifo_queue_s: float | None = None
    subchannels: int | None = None  # makespan model, a cell device: its subchannels
    # Makespan model: the adapter's upload after the last step, per step (`exchange_s`).
    modelled_exchange_s: float | None = None


@dataclass(frozen=True)
class RoundAllocation:
    """The included clients' shares, in profile order, and what the cost model says they cost.

    ``excluded`` maps the profile index of each client that cannot take part (a device whose
    memory holds no allowed split) to the reason; ``clients`` skips them. ``gap`` is the
    solver's certified relative optimality gap (NaN: none) and ``search`` how it ended
    (``MakespanAllocation.search``; the paper model's methods bound nothing but exhaustive
    search)."""

    clients: list[ClientAllocation]
    objective: float
    energy_j: float
    delay_s: float
    stability: float
    excluded: dict[int, str] = field(default_factory=dict)
    gap: float = float("nan")
    search: str = ""


class SystemAllocator:
    """Allocate with any policy in `ALLOCATORS` on this round's scenario.

    Parameters
    ----------
    policy : str
        A method of `allocation.solve` (e.g. "fp", "greedy", "random", "fixed"),
        "heterogeneous-fixed" (split grows with device FLOP/s and memory, up to `split`;
        paper model: equal bandwidth, full power and frequency; makespan model: exact shares)
        or "rl-split" (paper model: resources as "fp" computes them; each client's split from
        the learned policy given its channel loss rate).
    split : int
        The split for "fixed", and the deepest split for "heterogeneous-fixed".
    seed : int
        Seeds the per-round fading and any randomised method.
    server_bandwidth_hz : float
        Paper model: the uplink bandwidth shared among the round's clients.
    weights : Weights, optional
    split_policy : str, Path or SplitRule, optional
        "rl-split" only (and then required): a folder written by `SplitPolicy.save` (e.g.
        ``<out>/policy`` of ``python -m experiments.split_rl --out <out>``), loaded here, or a
        loaded policy.
    fading_m : float (default: 1.0)
        "rl-split": Nakagami shape of the SNR -> loss-rate mapping (1 = Rayleigh).
    cost_model : str (default: "paper")
        One of `COST_MODELS`.
    server : str (default: `edgesplit.hardware.DEFAULT_SERVER`)
        Makespan model: the server's catalogue class (its power, and its speed until
        measured).
    batch_tails : bool (default: False)
        Makespan model: the server batches tails, so it serves several clients at once.
    server_queue : str (default: "shares")
        Makespan model: how the server serves tails (`makespan_model.SERVER_QUEUES`).
    local_steps : int (default: 1)
        Makespan model: steps per round, over which measured start offsets spread.
    cell_bandwidth_hz : float (default: 0, no cell)
        Makespan model: the band of a cell that the clients whose profile says `cell` share
        (`makespan_model`), cut into `cell_subchannels`.
    min_split : int (default: 1)
        Every client's split is at least this (a privacy floor: `privacy.min-device-layers`, or a
        leakage budget's floor); 1 = none. The makespan model optimises over the splits at or
        above it. Under the paper model every policy decides as it would without it, then splits
        below the floor are raised to it and, where the policy optimises resources, the
        resources are solved again for the raised splits (`solve(..., "fixed")` with one split
        per client): a feasible allocation that respects the floor, the smallest change that
        serves every policy alike.
    """

    def __init__(self, policy: str, split: int, seed: int, server_bandwidth_hz: float,
                 weights: Weights | None = None, split_policy: str | Path | SplitRule | None = None,
                 fading_m: float = 1.0, *, cost_model: str = "paper",
                 server: str = DEFAULT_SERVER, batch_tails: bool = False,
                 min_split: int = 1, server_queue: str = "shares", local_steps: int = 1,
                 cell_bandwidth_hz: float = 0.0, cell_subchannels: int = 50) -> None:
        if policy not in ALLOCATORS:
            raise ValueError(f"unknown allocator {policy!r}; choose from {list(ALLOCATORS)}")
        if cost_model not in COST_MODELS:
            raise ValueError(f"unknown cost model {cost_model!r}; choose from {COST_MODELS}")
        if cost_model == "makespan" and ALLOCATORS[policy].learned:
            raise ValueError(f"allocator {policy} reads the paper model's radio: it needs "
                             'allocation.cost-model = "paper"')
        self.policy, self.split, self.seed, self.min_split = policy, split, seed, min_split
        self.server_bandwidth_hz, self.weights = server_bandwidth_hz, weights or Weights()
        self.fading_m, self.cost_model = fading_m, cost_model
        self.server, self.batch_tails = server_class(server), batch_tails
        self.server_queue, self.local_steps = server_queue, local_steps
        self.cell_bandwidth_hz, self.cell_subchannels = cell_bandwidth_hz, cell_subchannels
        self.split_policy: SplitRule | None = None
        #: Warm start of "fp" (paper model): each client's last (server, split), by client id.
        self.previous: dict[int, tuple[int, int]] = {}
        if ALLOCATORS[policy].learned:
            if split_policy is None or split_policy == "":
                raise ValueError("allocator rl-split needs a trained split policy: train one with "
                                 "`python -m experiments.split_rl --out DIR`, then pass "
                                 "DIR/policy (run config: allocation.rl-policy=\"DIR/policy\")")
            if isinstance(split_policy, str | Path):
                from .split_rl import SplitPolicy  # torch and stable-baselines3: rl-split only

                split_policy = SplitPolicy.load(split_policy)
            self.split_policy = split_policy

    def scenario(self, server_round: int, profiles: Sequence[Mapping[str, float]],
                 model: ModelCost, measured: Sequence[Measured | None] | None = None,
                 server_measured: Measured | None = None,
                 start_s: Sequence[float | None] | None = None) -> Scenario | MakespanScenario:
        """This round's scenario of the cost model (paper: fresh Rayleigh fading)."""
        if self.cost_model == "makespan":
            return makespan_scenario_from_profiles(
                profiles, model, self.server, batch_tails=self.batch_tails, measured=measured,
                server_measured=server_measured, weights=self.weights,
                min_split=np.full(len(profiles), self.min_split), queue=self.server_queue,
                start_s=start_s, local_steps=self.local_steps,
                cell_bandwidth_hz=self.cell_bandwidth_hz, cell_subchannels=self.cell_subchannels)
        column = {k: np.array([p[k] for p in profiles], dtype=float)
                  for k in ("cpu_freq_hz", "cores", "flops_per_cycle", "tx_power_w",
                            "distance_m", "num-examples")}
        return scenario_from_profiles(
            column["cpu_freq_hz"], column["cores"], column["flops_per_cycle"],
            column["tx_power_w"], column["distance_m"], column["num-examples"], model,
            server_bandwidth_hz=self.server_bandwidth_hz, weights=self.weights,
            rng=np.random.default_rng([self.seed, server_round]))

    def allocate(self, server_round: int, profiles: Sequence[Mapping[str, float]],
                 model: ModelCost, measured: Sequence[Measured | None] | None = None,
                 server_measured: Measured | None = None, *,
                 client_ids: Sequence[int] | None = None,
                 start_s: Sequence[float | None] | None = None) -> RoundAllocation:
        """Each client's split and resources, and their modelled costs.

        ``measured`` (aligned with ``profiles``) and ``server_measured`` are calibrations the
        makespan model uses instead of catalogue figures. ``client_ids`` (aligned with
        ``profiles``) lets "fp" under the paper model start from each returning client's last
        server and split (`fp.optimise`'s warm start; new clients start on their strongest
        server at split 1); without them every round starts cold. ``start_s`` (aligned with
        ``profiles``, None where unknown): each client's data-plane start offset measured the
        round before, which a "fifo" server's model counts its overlaps from."""
        if ALLOCATORS[self.policy].uses_split:
            check_split(self.split, model.layers, model.device_tail_layers)
        try:
            check_split(self.min_split, model.layers, model.device_tail_layers)
        except ValueError as exc:
            raise ValueError(f"the split floor leaves no valid split: {exc}") from None
        scenario = self.scenario(server_round, profiles, model, measured, server_measured,
                                 start_s)
        if isinstance(scenario, MakespanScenario):
            return self._allocate_makespan(server_round, scenario, profiles)
        loss_rates = None
        if self.policy == "heterogeneous-fixed":
            result = _by_capability(scenario, profiles, self.split)
        elif self.policy == "rl-split":
            result = solve(scenario, "fp", seed=self.seed * 100_003 + server_round)
            loss_rates = self.loss_rates(scenario, result)
            splits = [int(np.clip(self.split_policy.split_for(q), 1, model.split_layers - 1))
                      for q in loss_rates]
            result = replace(result, split=np.array(splits), method="rl-split")
        elif self.policy == "fp" and client_ids is not None:
            result = self._solve(scenario, server_round,
                                 warm_start=self._warm_start(scenario, client_ids))
            last = zip(result.association.tolist(), result.split.tolist(), strict=True)
            self.previous.update(zip((int(c) for c in client_ids), last, strict=True))
        else:
            result = self._solve(scenario, server_round)
        result = self.floored(scenario, result, server_round)
        costs = evaluate(scenario, result)
        device, transfer, shared = step_times(
            scenario, result.split, result.association, result.bandwidth, result.power,
            result.user_freq, result.server_freq)
        whole = step_times(scenario, result.split, result.association, result.bandwidth,
                           result.power, result.user_freq,
                           scenario.server_freq_hz[result.association])[2]
        times = (device, transfer, whole, shared - whole)
        users = np.arange(scenario.n_users)
        rates = uplink_rate_bps(result.bandwidth, result.power,
                                scenario.gain[users, np.asarray(result.association, int)],
                                scenario.weights.noise_w_per_hz)
        clients = [ClientAllocation(int(s), float(p), *(float(x) for x in t),
                                    bandwidth_hz=float(b), user_freq_hz=float(f),
                                    rate_bps=float(r))
                   for s, p, b, f, r, *t in zip(result.split, result.power, result.bandwidth,
                                                result.user_freq, rates, *times, strict=True)]
        if loss_rates is not None:
            clients = [replace(c, loss_rate=float(q)) for c, q in
                       zip(clients, loss_rates, strict=True)]
        exact = result.method == "exhaustive"
        return RoundAllocation(clients, costs.objective, costs.energy_j, costs.delay_s,
                               costs.stability, gap=0.0 if exact else float("nan"),
                               search="enumeration: exact" if exact else "no bound")

    def _solve(self, scenario: Scenario | MakespanScenario, server_round: int, **options
               ) -> Allocation | MakespanAllocation:
        if self.policy == "fixed":
            options["split"] = self.split
        return solve(scenario, self.policy, seed=self.seed * 100_003 + server_round, **options)

    def _warm_start(self, scenario: Scenario, client_ids: Sequence[int]
                    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(association, split) from each returning client's last round; None if none
        returns. Newcomers: strongest server, split 1."""
        if len(client_ids) != scenario.n_users:
            raise ValueError(f"{len(client_ids)} client ids for {scenario.n_users} profiles")
        known = [self.previous.get(int(c)) for c in client_ids]
        if all(k is None for k in known):
            return None
        strongest = np.argmax(scenario.gain, axis=1)
        assoc = np.array([k[0] if k and k[0] < scenario.n_servers else s
                          for k, s in zip(known, strongest, strict=True)])
        split = np.array([k[1] if k else 1 for k in known])
        return assoc, split

    def _allocate_makespan(self, server_round: int, scenario: MakespanScenario,
                           profiles: Sequence[Mapping[str, float]]) -> RoundAllocation:
        excluded = scenario.infeasible
        kept = [i for i in range(scenario.n_users) if i not in excluded]
        if not kept:
            return RoundAllocation([], float("nan"), float("nan"), float("nan"), float("nan"),
                                   excluded)
        scenario = scenario.subset(kept)
        if self.policy == "heterogeneous-fixed":
            splits = capability_splits([profiles[i] for i in kept], self.split)
            result = with_splits(scenario, np.clip(splits, scenario.min_split,
                                                   scenario.max_split), self.policy)
        else:
            result = self._solve(scenario, server_round)
        costs = evaluate(scenario, result)
        device, transfer, shared = result.step_times(scenario)
        whole = server_work_s(scenario, result.split, result.association)
        times = (device, transfer, whole, shared - whole)
        channels = scenario.own_channels(result.channels if scenario.has_cell else None)
        cell_channels = channels if scenario.has_cell else None
        fifo = fifo_queue_s(scenario, result.split, result.association, cell_channels)
        upload = exchange_s(scenario, result.split, result.association, cell_channels)
        band = scenario.bandwidth_hz(channels)
        # A cell device transmits at its subchannels' share of its full-band power.
        power = np.where(scenario.cell, channels / scenario.cell_subchannels, 1.0) \
            * scenario.tx_power_w
        clients = [ClientAllocation(int(s), float(p), *(float(x) for x in t),
                                    server_share=float(phi), rate_bps=float(r),
                                    modelled_fifo_queue_s=float(q),
                                    modelled_exchange_s=float(u),
                                    bandwidth_hz=float(b) if in_cell else None,
                                    subchannels=int(c) if in_cell else None)
                   for s, p, phi, r, q, u, b, c, in_cell, *t in zip(
                       result.split, power, result.share, result.rate_bps(scenario), fifo,
                       upload, band, channels, scenario.cell, *times, strict=True)]
        return RoundAllocation(clients, costs.objective, costs.energy_j, costs.delay_s,
                               costs.stability, excluded, result.gap, result.search)

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


def capability_splits(profiles: Sequence[Mapping[str, float]], max_split: int) -> np.ndarray:
    """Deeper splits for stronger devices: FLOP/s x memory on a log scale across the round's
    clients, from split 1 (the weakest) to `max_split` (the strongest; all of them when they
    are alike)."""
    strength = np.log([p["cpu_freq_hz"] * p["cores"] * p["flops_per_cycle"] * p["memory_gb"]
                       for p in profiles])
    spread = strength.max() - strength.min()
    scale = (strength - strength.min()) / spread if spread > 0 else np.ones_like(strength)
    return np.rint(1 + scale * (max_split - 1)).astype(int)


def _by_capability(scenario: Scenario, profiles: Sequence[Mapping[str, float]],
                   max_split: int) -> Allocation:
    """`capability_splits`, equal bandwidth, full power and frequency (paper model)."""
    n = len(profiles)
    server_freq = np.asarray(scenario.server_freq_hz, dtype=float)[0]
    return Allocation(
        split=capability_splits(profiles, max_split), association=np.zeros(n, dtype=int),
        bandwidth=np.full(n, scenario.server_bandwidth_hz[0] / n),
        power=np.array([p["tx_power_w"] for p in profiles]),
        user_freq=np.array([p["cpu_freq_hz"] for p in profiles]),
        server_freq=np.full(n, server_freq / n), method="heterogeneous-fixed")
