"""Pacing a sender to a rate: the stream's frames leave no faster than the bandwidth the
allocator gave this client, so the allocation is what the link carries (run config
`stream.pace-links`; off by default, on in the testbed).

A token bucket with no burst: a frame of n bytes leaves once the bucket has refilled the
`8 n / rate` seconds it costs, counted from when the previous frame's cost was paid, so frames
sent back to back leave at the rate, while a sender idle for long (computing) does not save up
credit beyond one frame. Both ends use it: the device for its activations (uplink), the server
for its answers (downlink).

On a link that is itself shaped (the testbed's token-bucket veths), the frame still spends
`8 n / link_bps` on the wire after the pacer lets it go; give that rate as `link_bps` and the
pacer holds the frame only for the difference, so pacer plus wire take `8 n / rate`, as the cost
model charges. On an unshaped link (loopback, a fast LAN) leave `link_bps` infinite.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class Pacer:
    """Delay each send so the average rate stays at `rate_bps` (bits per second).

    Parameters
    ----------
    rate_bps : float
        The rate; must be > 0.
    link_bps : float (default: infinite)
        The rate of the link the frames then cross (when it is shaped and known); frames are
        held only for what the allocation costs beyond it (nothing when `link_bps <= rate_bps`).
    clock, sleep : callables (default: time.monotonic, time.sleep)
        Injectable for tests.
    """

    def __init__(self, rate_bps: float, link_bps: float = math.inf,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not rate_bps > 0:
            raise ValueError(f"pacing rate must be > 0 bit/s, got {rate_bps}")
        if not link_bps > 0:
            raise ValueError(f"link rate must be > 0 bit/s, got {link_bps}")
        self.rate_bps, self.link_bps = rate_bps, link_bps
        self._clock, self._sleep = clock, sleep
        self._paid_until = -math.inf  # when the last frame's cost was covered

    def cost_s(self, nbytes: int) -> float:
        """Seconds the pacer charges a frame of `nbytes` (beyond its time on the link)."""
        return max(0.0, 8 * nbytes / self.rate_bps - 8 * nbytes / self.link_bps)

    def wait(self, nbytes: int) -> float:
        """Sleep until a frame of `nbytes` may leave; returns the seconds slept."""
        now = self._clock()
        ready = max(now, self._paid_until) + self.cost_s(nbytes)
        self._paid_until = ready
        delay = ready - now
        if delay > 0:
            self._sleep(delay)
        return max(0.0, delay)
