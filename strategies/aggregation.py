"""Aggregation of per-client adapters into the global adapter (pluggable).

`fedavg` is the default (oracle 2 holds for it). `median` and `trimmed_mean` are coordinate-wise
and robust to a minority of outlier or Byzantine clients; they compute with Flower's own
helpers (`aggregate_median`, `aggregate_trimmed_avg`), which take per-client lists of numpy
arrays and ignore the example counts. Ignoring the counts is what makes them robust: a client
cannot buy influence by claiming many examples (it is also how Flower's FedMedian and
FedTrimmedAvg behave), so their `weights` only have to match the adapters.

`AdapterPrivacy` is DP-FedAvg (`privacy.adapter-epsilon`): each client's update is clipped as one
vector over every key it holds, the clipped updates are summed key by key with Gaussian noise, and
each key is divided by the number of clients that hold it, so clients at different splits (different
key sets) aggregate together. Flower's own DP wrappers reject replies whose keys differ from
what was sent, and account nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from flwr.server.strategy.aggregate import aggregate_median, aggregate_trimmed_avg

from edgesplit.activation_noise import private_generator
from edgesplit.dp import epsilon, noise_multiplier

Adapter = Mapping[str, torch.Tensor]
Aggregator = Callable[[Sequence[Adapter], Sequence[float]], dict[str, torch.Tensor]]
NDArrays = list[np.ndarray]


def fedavg(adapters: Sequence[Adapter], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """Weighted average of LoRA A and B matrices, key by key (FedAvg).

    Each client's adapter is complete: layers below its split come from its head, the rest from
    the server's copy of its tail, so every key averages over every client.
    """
    if not adapters:
        raise ValueError("nothing to aggregate")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("aggregation weights must sum to a positive number")
    return {k: sum(a[k] * (w / total) for a, w in zip(adapters, weights, strict=True))
            for k in adapters[0]}


def _coordinatewise(reduce: Callable[[list[tuple[NDArrays, int]]], NDArrays],
                    adapters: Sequence[Adapter], weights: Sequence[float]
                    ) -> dict[str, torch.Tensor]:
    """Apply a Flower reducer of per-client array lists to adapters, key by key."""
    if not adapters:
        raise ValueError("nothing to aggregate")
    if len(weights) != len(adapters):
        raise ValueError(f"{len(weights)} weights for {len(adapters)} adapters")
    keys = list(adapters[0])
    results = [([a[k].detach().cpu().numpy() for k in keys], 1) for a in adapters]
    return {k: torch.from_numpy(np.asarray(v)) for k, v in zip(keys, reduce(results), strict=True)}


def median(adapters: Sequence[Adapter], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """Coordinate-wise median over clients (unweighted; the mean of the two middle values for
    an even number of clients)."""
    return _coordinatewise(aggregate_median, adapters, weights)


def trimmed_mean(adapters: Sequence[Adapter], weights: Sequence[float], trim_fraction: float
                 ) -> dict[str, torch.Tensor]:
    """Coordinate-wise mean after cutting `int(trim_fraction * n)` clients at each end of every
    coordinate (scipy's `trim_mean`: with 4 clients and 0.1 nothing is cut)."""
    return _coordinatewise(partial(aggregate_trimmed_avg, proportiontocut=trim_fraction),
                           adapters, weights)


AGGREGATIONS = ("fedavg", "median", "trimmed-mean")


def make_aggregator(name: str, trim_fraction: float = 0.1) -> Aggregator:
    """The aggregator named by the run config's `aggregation` (`train.trim-fraction` for
    trimmed-mean)."""
    if name == "fedavg":
        return fedavg
    if name == "median":
        return median
    if name == "trimmed-mean":
        if not 0 <= trim_fraction < 0.5:
            raise ValueError(f"trim fraction {trim_fraction} outside [0, 0.5)")
        return partial(trimmed_mean, trim_fraction=trim_fraction)
    raise ValueError(f"unknown aggregation {name!r}: one of {AGGREGATIONS}")


def update_norm(adapter: Adapter, previous: Adapter) -> float:
    """L2 norm of `adapter - previous` over every key of `adapter` (one client's update)."""
    return math.sqrt(sum(float((v.detach().float() - previous[k].float()).pow(2).sum())
                         for k, v in adapter.items()))


@dataclass(frozen=True)
class AdapterPrivacy:
    """User-level differential privacy of the global adapter (DP-FedAvg, replace-one client).

    Each round, client i's update u_i = adapter_i - previous global (every key it holds, trained
    on the device or on the server for it) is scaled to L2 norm at most `clip`; the new global
    adapter is previous + (sum_i clipped u_i + N(0, (2 z clip)^2)) / n_k key by key, n_k the
    clients holding key k. Replacing one client's data moves the sum by at most 2 * clip, so a
    round is a Gaussian mechanism of noise multiplier z for every client in it; the rounds
    compose in opacus's RDP accountant, counting every round for every client (a client may
    take part in all of them; the sample is drawn from the run's seed, so no amplification is
    claimed). Clients weigh equally: example counts would let one client buy sensitivity.

    The guarantee is for whoever sees the global adapter (other clients, users of the result):
    the server aggregating sees each update before the noise (see docs/privacy.md).
    """

    clip: float
    noise_multiplier: float
    delta: float

    @classmethod
    def plan(cls, target_epsilon: float, delta: float, clip: float, rounds: int
             ) -> AdapterPrivacy:
        """The noise that spends exactly `target_epsilon` over `rounds` rounds."""
        return cls(clip, noise_multiplier(target_epsilon, delta, rounds), delta)

    def spent(self, rounds: int) -> float:
        """Epsilon of a client after `rounds` aggregated rounds."""
        return epsilon(self.noise_multiplier, rounds, self.delta)

    def aggregate(self, adapters: Sequence[Adapter], previous: Adapter,
                  generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The noisy average of the clipped updates (see the class docstring); `generator`
        draws the noise (default: a fresh one seeded from the OS's entropy)."""
        if not adapters:
            raise ValueError("nothing to aggregate")
        unknown = {k for a in adapters for k in a} - set(previous)
        if unknown:
            raise ValueError(f"adapter keys not in the global adapter: {sorted(unknown)[:3]}")
        generator = generator or private_generator()
        sums: dict[str, torch.Tensor] = {}
        holders: dict[str, int] = {}
        for adapter in adapters:
            update = {k: v.detach().float() - previous[k].float() for k, v in adapter.items()}
            norm = update_norm(adapter, previous)
            scale = min(1.0, self.clip / norm) if norm > 0 else 1.0
            for k, u in update.items():
                sums[k] = sums[k] + scale * u if k in sums else scale * u
                holders[k] = holders.get(k, 0) + 1
        std = self.noise_multiplier * 2 * self.clip
        result = {k: v.clone() for k, v in previous.items()}
        for k in sorted(sums):  # a fixed order: the noise of a key does not depend on the dict
            noise = torch.randn(sums[k].shape, generator=generator)
            result[k] = (previous[k].float() + (sums[k] + std * noise) / holders[k]).to(
                previous[k].dtype)
        return result
