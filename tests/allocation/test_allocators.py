"""The strategy-facing allocators: valid splits, equal shares, heterogeneity from profiles."""

import pytest

from allocation.allocators import FixedAllocator, HeterogeneousFixedAllocator, ModelCosts
from clients.profile import simulated_profile

COSTS = ModelCosts(num_layers=30, hidden_size=576, seq_len=32, batch_size=4)


def profiles(n):
    return [simulated_profile(i, seed=0).as_dict() for i in range(n)]


def test_fixed_gives_everyone_the_split_and_an_equal_share():
    out = FixedAllocator(split=5, bandwidth_hz=20e6).allocate(1, profiles(4), COSTS)
    assert [a.split for a in out] == [5] * 4
    assert sum(a.bandwidth_hz for a in out) == pytest.approx(20e6)


def test_heterogeneous_split_grows_with_device_capability():
    ps = profiles(16)
    out = HeterogeneousFixedAllocator(max_split=8).allocate(1, ps, COSTS)
    splits = [a.split for a in out]
    assert all(1 <= s <= 8 for s in splits) and len(set(splits)) > 1
    strength = [p["cpu_freq_hz"] * p["cores"] * p["memory_gb"] for p in ps]
    weakest, strongest = strength.index(min(strength)), strength.index(max(strength))
    assert splits[weakest] < splits[strongest]


def test_split_outside_the_model_is_refused():
    with pytest.raises(ValueError, match=r"split 30 outside \[1, 29\]"):
        FixedAllocator(split=30).allocate(1, profiles(2), COSTS)
