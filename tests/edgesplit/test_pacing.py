"""The stream's pacer: frames leave at the configured rate, idle time buys no burst."""

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
    pacer = Pacer(8e6, clock, clock.sleep)  # 1 MB/s
    for _ in range(5):
        pacer.wait(250_000)
    assert clock.now - 100.0 == pytest.approx(1.25)  # 5 x 0.25 s


def test_a_frame_costs_its_own_time_even_after_idling():
    clock = FakeClock()
    pacer = Pacer(8e6, clock, clock.sleep)
    pacer.wait(1_000_000)
    clock.now += 60.0  # computing for a minute
    assert pacer.wait(500_000) == pytest.approx(0.5)  # no credit saved up


def test_a_rate_must_be_positive():
    with pytest.raises(ValueError, match="pacing rate"):
        Pacer(0.0)
