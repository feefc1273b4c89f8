"""Aggregation of per-client adapters into the global adapter (pluggable).

`fedavg` is the default (oracle 2 holds for it). `median` and `trimmed_mean` are coordinate-wise
and robust to a minority of outlier or Byzantine clients; they compute with Flower's own
helpers (`aggregate_median`, `aggregate_trimmed_avg`), which take per-client lists of numpy
arrays and ignore the example counts. Ignoring the counts is what makes them robust: a client
cannot buy influence by claiming many examples (it is also how Flower's FedMedian and
FedTrimmedAvg behave), so their `weights` only have to match the adapters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial

import numpy as np
import torch
from flwr.server.strategy.aggregate import aggregate_median, aggregate_trimmed_avg

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
    """The aggregator named by the run config's `aggregation` (`trim-fraction` for
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
