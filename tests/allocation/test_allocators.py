"""The strategy-facing allocator: profiles in, valid per-client shares and modelled costs out."""

import numpy as np
import pytest

from allocation import ModelCost, Weights, evaluate, solve
from allocation.allocators import ALLOCATORS, SystemAllocator
from allocation.measurement import Measured
from clients.profile import simulated_profile

MODEL = ModelCost(layers=30, hidden_size=576, batch_size=4, seq_len=32, activation_bits=32)

CELL = {"seed": 0, "server_bandwidth_hz": 20e6}  # one cell: the seed-A bandwidth


def profiles(n):
    return [{**simulated_profile(i, seed=0).as_dict(), "num-examples": 100.0 + 10 * i}
            for i in range(n)]


@pytest.mark.parametrize("policy", [p for p, spec in ALLOCATORS.items() if not spec.learned])
def test_every_policy_gives_valid_shares_and_modelled_costs(policy):
    plan = SystemAllocator(policy, split=6, **CELL).allocate(1, profiles(5), MODEL)
    assert len(plan.clients) == 5
    assert all(1 <= c.split <= 29 and c.bandwidth_hz >= 0 and c.power_w > 0
               for c in plan.clients)
    assert sum(c.bandwidth_hz for c in plan.clients) <= 20e6 * (1 + 1e-9)
    assert np.isfinite([plan.objective, plan.energy_j, plan.delay_s, plan.stability]).all()


def test_fixed_and_heterogeneous_splits():
    fixed = SystemAllocator("fixed", split=5, **CELL).allocate(1, profiles(4), MODEL)
    assert [c.split for c in fixed.clients] == [5] * 4
    ps = profiles(16)
    hetero = SystemAllocator("heterogeneous-fixed", split=8, **CELL).allocate(1, ps, MODEL)
    splits = [c.split for c in hetero.clients]
    assert all(1 <= s <= 8 for s in splits) and len(set(splits)) > 1
    strength = [p["cpu_freq_hz"] * p["cores"] * p["memory_gb"] for p in ps]
    assert splits[int(np.argmin(strength))] < splits[int(np.argmax(strength))]


def test_fading_changes_each_round_and_fp_is_what_solve_returns():
    allocator = SystemAllocator("fp", split=4, **CELL)
    ps = profiles(6)
    gains = [allocator.scenario(r, ps, MODEL).gain for r in (1, 2)]
    assert not np.allclose(gains[0], gains[1], rtol=1e-3, atol=0.0)
    plan = allocator.allocate(2, ps, MODEL)
    scenario = allocator.scenario(2, ps, MODEL)
    direct = solve(scenario, "fp", seed=2)
    assert [c.split for c in plan.clients] == list(direct.split)
    assert plan.objective == pytest.approx(evaluate(scenario, direct).objective)


def test_unknown_policy_and_impossible_split_are_refused():
    with pytest.raises(ValueError, match="unknown allocator 'magic'"):
        SystemAllocator("magic", split=4, **CELL)
    with pytest.raises(ValueError, match=r"split 30 outside \[1, 29\]"):
        SystemAllocator("fixed", split=30, **CELL).allocate(1, profiles(2), MODEL)


MAKESPAN = {"seed": 0, "server_bandwidth_hz": 20e6, "cost_model": "makespan"}
SMOLLM2 = ModelCost(layers=30, hidden_size=576, batch_size=4, seq_len=32, activation_bits=32,
                    vocab_size=49152, attention_heads=9, layer_params=3_621_504,
                    embedding_params=28_311_552)


@pytest.mark.parametrize("policy", [p for p, spec in ALLOCATORS.items() if not spec.learned])
def test_every_policy_works_under_the_makespan_model(policy):
    plan = SystemAllocator(policy, split=6, **MAKESPAN).allocate(1, profiles(5), SMOLLM2)
    assert len(plan.clients) == 5 and not plan.excluded
    assert all(1 <= c.split <= 29 and 0 < c.server_share <= 1 and c.bandwidth_hz is None
               for c in plan.clients)
    assert sum(c.server_share for c in plan.clients) <= 1 + 1e-9
    assert np.isfinite([plan.objective, plan.energy_j, plan.delay_s, plan.stability]).all()
    slowest = max(c.modelled_device_s + c.modelled_transfer_s + c.modelled_server_s
                  + c.modelled_queue_s for c in plan.clients)
    assert slowest == pytest.approx(plan.delay_s)  # the makespan is the slowest client


def test_measured_speeds_replace_the_catalogue_and_a_device_without_memory_is_excluded():
    ps = profiles(4)
    ps[2] = {**ps[2], "memory_gb": 0.01}  # cannot hold the embeddings and one layer
    allocator = SystemAllocator("fp", split=4, **MAKESPAN)
    plan = allocator.allocate(1, ps, SMOLLM2)
    assert list(plan.excluded) == [2] and "memory" in plan.excluded[2]
    assert len(plan.clients) == 3
    # Time only: a device measured far slower than the shared server leaves every layer it
    # can to it; one measured far faster takes every layer it can.
    allocator = SystemAllocator("fp", split=4, **MAKESPAN, weights=Weights(energy=0.0,
                                                                        stability=0.0))
    measured = [Measured(layer_s=1.0), None, None, Measured(layer_s=1e-6)]
    plan = allocator.allocate(1, profiles(4), SMOLLM2, measured,
                              Measured(layer_s=0.05, fixed_s=0.1))
    assert [plan.clients[i].split for i in (0, 3)] == [1, 29]
    assert plan.clients[0].modelled_device_s == pytest.approx(1.0)
