"""Warm start of the seed-A optimiser: from the previous round's solution on a slowly changing
scenario, and still exact against exhaustive search on small instances."""

import dataclasses

import numpy as np
import pytest

from allocation import ModelCost, solve
from allocation.allocators import SystemAllocator
from allocation.system_model import random_scenario
from allocation.terms import Terms
from clients.profile import simulated_profile
from tests.allocation.instances import small_scenario


def drifting(n_users, seed, rounds, db=0.1):
    """A scenario whose every link gain drifts by ``db`` dB (std) per round."""
    base = random_scenario(n_users, 10, seed=seed)
    rng = np.random.default_rng(seed)
    gain = base.gain
    for _ in range(rounds):
        gain = gain * 10.0 ** (rng.normal(0.0, db / 10.0, gain.shape))
        yield dataclasses.replace(base, gain=gain)


def test_warm_start_same_or_better_with_less_work_on_a_slowly_changing_scenario():
    # Prepare: 60 users x 10 servers (above the small-instance size, so warm replaces cold),
    # 0.1 dB drift per round; each round's warm start is the previous round's warm result.
    cold_obj, warm_obj, cold_work, warm_work = [], [], [], []
    cold_iters, warm_iters = [], []
    for seed in range(4):
        prev = None
        for r, sc in enumerate(drifting(60, seed, rounds=4)):
            # Execute
            cold = solve(sc, "fp", seed=r)
            if prev is None:
                prev = cold
                continue
            warm = solve(sc, "fp", seed=r, warm_start=prev)
            # Assert (per round): never worse than the carried-over solution re-solved.
            carried = Terms(sc).polish(prev.split, prev.association).objective
            assert warm.objective <= carried * (1 + 1e-12)
            cold_obj.append(cold.objective)
            warm_obj.append(warm.objective)
            cold_work.append(cold.evaluations)
            warm_work.append(warm.evaluations)
            cold_iters.append(cold.iterations)
            warm_iters.append(warm.iterations)
            prev = warm
    # Assert: same or better on the whole, with fewer outer iterations and far fewer resource
    # solves. (Round by round either can be ahead by ~0.2%: both are local optima.)
    assert sum(warm_obj) <= sum(cold_obj)
    assert sum(warm_iters) < sum(cold_iters)
    assert all(w <= c for w, c in zip(warm_iters, cold_iters, strict=True))
    assert sum(warm_work) < 0.5 * sum(cold_work)


def test_unchanged_scenario_warm_start_from_the_solution_keeps_it():
    sc = random_scenario(200, 10, seed=3)
    cold = solve(sc, "fp", seed=0)
    warm = solve(sc, "fp", seed=0, warm_start=cold)
    assert warm.objective <= cold.objective * (1 + 1e-12)
    assert warm.iterations <= cold.iterations
    assert warm.evaluations < cold.evaluations


@pytest.mark.parametrize("chunk", range(4))
def test_fp_cold_and_warm_against_exhaustive_on_small_random_instances(chunk):
    # Cold start, and a warm start from a random association and random splits, on instances
    # most of whose optima (36 of these 48) train layers on devices: each within 3% of the
    # exhaustive optimum and the warm start never worse than the cold (measured: both exact on
    # all 48; on 80, cold was exact on 78, warm on 79, the worst 2.2% above).
    inexact = 0
    for seed in range(chunk * 12, chunk * 12 + 12):
        sc = small_scenario(1000 + seed, max_servers=3, min_users=2, paper_bits=False)
        best = solve(sc, "exhaustive").objective
        rng = np.random.default_rng(seed)
        warm = (rng.integers(0, sc.n_servers, sc.n_users), rng.integers(1, sc.layers, sc.n_users))
        cold = solve(sc, "fp", seed=seed).objective
        warmed = solve(sc, "fp", seed=seed, warm_start=warm).objective
        assert best * (1 - 1e-9) <= cold <= best * 1.03, seed
        assert best * (1 - 1e-9) <= warmed <= cold * (1 + 1e-9), seed
        inexact += cold > best * (1 + 1e-9)
    assert inexact <= 2


def test_warm_start_must_match_the_users():
    sc = random_scenario(5, 2, seed=0)
    with pytest.raises(ValueError, match="same 5 users"):
        solve(sc, "fp", warm_start=(np.zeros(4, int), np.ones(4, int)))
    with pytest.raises(ValueError, match="server this scenario lacks"):
        solve(sc, "fp", warm_start=(np.full(5, 2), np.ones(5, int)))


def test_allocator_seeds_each_round_from_the_returning_clients():
    # Prepare: six clients, then four of them and two newcomers.
    model = ModelCost(layers=30, hidden_size=576, batch_size=4, seq_len=32, activation_bits=32)
    ps = [{**simulated_profile(i, seed=0).as_dict(), "num-examples": 100.0 + 10 * i}
          for i in range(8)]
    allocator = SystemAllocator("fp", split=4, seed=0, server_bandwidth_hz=20e6)
    # Execute
    first = allocator.allocate(1, ps[:6], model, client_ids=list(range(6)))
    ids = [2, 3, 4, 5, 6, 7]
    warm = allocator._warm_start(allocator.scenario(2, ps[2:], model), ids)
    second = allocator.allocate(2, ps[2:], model, client_ids=ids)
    # Assert: the warm start carries each returning client's split; newcomers start at 1.
    assert list(warm[1]) == [c.split for c in first.clients[2:]] + [1, 1]
    direct = solve(allocator.scenario(2, ps[2:], model), "fp", seed=2, warm_start=warm)
    assert [c.split for c in second.clients] == list(direct.split)
    assert allocator.previous[7] == (0, second.clients[-1].split)
    # Without ids the round starts cold (what solve returns with no warm start).
    cold = SystemAllocator("fp", split=4, seed=0, server_bandwidth_hz=20e6).allocate(
        2, ps[2:], model)
    assert [c.split for c in cold.clients] == list(
        solve(allocator.scenario(2, ps[2:], model), "fp", seed=2).split)
