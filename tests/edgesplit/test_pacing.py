"""The stream's pacer: frames leave at the configured rate, idle time buys no burst, and on a
shaped link pacer plus wire take what the allocation costs."""

import pytest

from edgesplit.pacing import Pacer


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_back_to_back_frames_leave_at_the_rate():
    clock = FakeClock()
    pacer = Pacer(8e6, clock=clock, sleep=clock.sleep)  # 1 MB/s
    for _ in range(5):
        pacer.wait(250_000)
    assert clock.now - 100.0 == pytest.approx(1.25)  # 5 x 0.25 s


def test_bytes_per_interval_never_exceed_the_rate():
    clock = FakeClock()
    pacer = Pacer(1e6, clock=clock, sleep=clock.sleep)  # 125 kB/s
    sent = []  # (time the frame left, bytes)
    for size in (10_000, 50_000, 1_000, 30_000, 30_000, 5_000) * 3:
        pacer.wait(size)
        sent.append((clock.now, size))
    start = 100.0
    for left, _ in sent:  # by any departure time, no more than rate x elapsed has left
        assert sum(n for t, n in sent if t <= left) * 8 <= 1e6 * (left - start) + 1e-6


def test_a_frame_costs_its_own_time_even_after_idling():
    clock = FakeClock()
    pacer = Pacer(8e6, clock=clock, sleep=clock.sleep)
    pacer.wait(1_000_000)
    clock.now += 60.0  # computing for a minute
    assert pacer.wait(500_000) == pytest.approx(0.5)  # no credit saved up


def test_on_a_shaped_link_the_pacer_holds_only_the_difference():
    clock = FakeClock()
    pacer = Pacer(2e6, link_bps=8e6, clock=clock, sleep=clock.sleep)
    held = pacer.wait(1_000_000)  # 4 s at the allocation, 1 s of it on the wire
    assert held == pytest.approx(3.0)
    assert held + 8 * 1_000_000 / 8e6 == pytest.approx(8 * 1_000_000 / 2e6)
    # An allocation at or above the link's own rate: the link alone paces.
    assert Pacer(8e6, link_bps=8e6, clock=clock, sleep=clock.sleep).wait(10**6) == 0.0
    assert Pacer(9e6, link_bps=8e6, clock=clock, sleep=clock.sleep).wait(10**6) == 0.0


def test_rates_must_be_positive():
    with pytest.raises(ValueError, match="pacing rate"):
        Pacer(0.0)
    with pytest.raises(ValueError, match="link rate"):
        Pacer(1e6, link_bps=0.0)
