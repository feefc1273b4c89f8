"""Aggregation of per-client adapters into the global adapter (pluggable)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

Adapter = Mapping[str, torch.Tensor]
Aggregator = Callable[[Sequence[Adapter], Sequence[float]], dict[str, torch.Tensor]]


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


AGGREGATORS: dict[str, Aggregator] = {"fedavg": fedavg}
