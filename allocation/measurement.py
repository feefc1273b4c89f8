"""Measured speeds: timing training steps, and seconds per layer from two timed sizes.

Both ends calibrate the same way (`clients.calibration`, `strategies.calibration`): a step of
1 layer and a step of K layers are timed alternately, so that load that comes and goes on the
machine falls on both alike, and the line through the two medians gives seconds per layer and
the split-independent rest. No torch here: the steps are callables.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Measured:
    """Seconds of one training step measured on the hardware itself (calibration).

    layer_s : float
        Seconds per decoder layer (forward and backward, as training runs them).
    fixed_s : float (default: 0.0)
        Split-independent seconds per step (devices: embeddings, optimizer; the server: LM
        head and loss).
    concurrency : float (default: 1.0)
        Servers with batched tails: clients' tails run in the time of one (measured).
    """

    layer_s: float
    fixed_s: float = 0.0
    concurrency: float = 1.0


def time_interleaved(steps: Sequence[Callable[[], object]], repeats: int) -> list[float]:
    """Median seconds of each callable over `repeats` calls, after one warm-up call each,
    calling them in turn (a, b, a, b, ...) so that changing load falls on all alike."""
    durations: list[list[float]] = [[] for _ in steps]
    for _ in range(repeats + 1):
        for step, spent in zip(steps, durations, strict=True):
            started = time.perf_counter()
            step()
            spent.append(time.perf_counter() - started)
    return [statistics.median(d[1:]) for d in durations]  # the first warms caches


def fit_measured(layers: Sequence[int], seconds: Sequence[float],
                 concurrency: float = 1.0) -> Measured:
    """Seconds per layer and split-independent seconds from two timed sizes: the line through
    ``(layers[i], seconds[i])``. A slope that noise made non-positive falls back to the larger
    size's seconds per layer, with no fixed part."""
    (k1, k2), (t1, t2) = layers, seconds
    slope = (t2 - t1) / (k2 - k1)
    if slope <= 0:
        return Measured(t2 / k2, 0.0, concurrency)
    return Measured(slope, max(0.0, t1 - slope * k1), concurrency)
