"""Pacing a sender to a rate: the stream's frames leave no faster than the bandwidth the
allocator gave this client, so the allocation is what the link carries (testbed only; off by
default).

A token bucket with no burst: a frame of n bytes leaves once the bucket has refilled the
`8 n / rate` seconds it costs, counted from when the previous frame's cost was paid, so frames
sent back to back leave at the rate, while a sender idle for long (computing) does not save up
credit beyond one frame. Both ends use it: the device for its activations (uplink), the server
for its answers (downlink).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Pacer:
    """Delay each send so the average rate stays at `rate_bps` (bits per second).

    Parameters
    ----------
    rate_bps : float
        The rate; must be > 0.
    clock, sleep : callables (default: time.monotonic, time.sleep)
        Injectable for tests.
    """

    def __init__(self, rate_bps: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not rate_bps > 0:
            raise ValueError(f"pacing rate must be > 0 bit/s, got {rate_bps}")
        self.rate_bps, self._clock, self._sleep = rate_bps, clock, sleep
        self._paid_until = -float("inf")  # when the last frame's cost was covered

    def wait(self, nbytes: int) -> float:
        """Sleep until a frame of `nbytes` may leave; returns the seconds slept."""
        now = self._clock()
        ready = max(now, self._paid_until) + 8 * nbytes / self.rate_bps
        self._paid_until = ready
        delay = ready - now
        if delay > 0:
            self._sleep(delay)
        return delay
