"""The allocator interface the training strategy calls once per round, and simple allocators.

No Flower and no torch here: profiles arrive as plain mappings (the fields of
`clients.profile.DeviceProfile`), the model as its cost description.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class ModelCosts:
    """What the allocator needs to know about the model and the batch."""

    num_layers: int
    hidden_size: int
    seq_len: int
    batch_size: int
    activation_bits: int = 32


@dataclass(frozen=True)
class ClientAllocation:
    """One client's share for a round (SI units)."""

    split: int
    bandwidth_hz: float
    power_w: float
    user_freq_hz: float


class Allocator(Protocol):
    def allocate(self, server_round: int, profiles: Sequence[Mapping[str, float]],
                 model: ModelCosts) -> list[ClientAllocation]:
        """Split point and radio/compute resources for each sampled client, in order."""
        ...


@dataclass(frozen=True)
class FixedAllocator:
    """The same split for everyone, equal bandwidth shares, full power and frequency."""

    split: int
    bandwidth_hz: float = 20e6

    def allocate(self, server_round: int, profiles: Sequence[Mapping[str, float]],
                 model: ModelCosts) -> list[ClientAllocation]:
        check_split(self.split, model.num_layers)
        return _with_equal_shares([self.split] * len(profiles), profiles, self.bandwidth_hz)


@dataclass(frozen=True)
class HeterogeneousFixedAllocator:
    """A split that grows with the device's compute (FLOP/s) and memory, fixed over rounds.

    The strongest device in the seed-A ranges (1 GHz x 6 cores, 8 GB) gets `max_split` layers;
    the weakest gets 1.
    """

    max_split: int
    bandwidth_hz: float = 20e6

    def allocate(self, server_round: int, profiles: Sequence[Mapping[str, float]],
                 model: ModelCosts) -> list[ClientAllocation]:
        top = min(self.max_split, model.num_layers - 1)
        check_split(top, model.num_layers)
        splits = []
        for p in profiles:
            compute = p["cpu_freq_hz"] * p["cores"] * p["flops_per_cycle"] / 6e9
            capability = min(1.0, np.sqrt(compute * min(1.0, p["memory_gb"] / 8.0)))
            splits.append(max(1, int(round(capability * top))))
        return _with_equal_shares(splits, profiles, self.bandwidth_hz)


def check_split(split: int, num_layers: int) -> None:
    if not 1 <= split <= num_layers - 1:
        raise ValueError(f"split {split} outside [1, {num_layers - 1}] for a "
                         f"{num_layers}-layer model")


def _with_equal_shares(splits: list[int], profiles: Sequence[Mapping[str, float]],
                       bandwidth_hz: float) -> list[ClientAllocation]:
    share = bandwidth_hz / max(1, len(profiles))
    return [ClientAllocation(split=s, bandwidth_hz=share, power_w=p["tx_power_w"],
                             user_freq_hz=p["cpu_freq_hz"]) for s, p in zip(splits, profiles,
                                                                             strict=True)]
