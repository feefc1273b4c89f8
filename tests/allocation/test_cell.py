"""A cell in the makespan model: its physics by hand, the joint optimum of splits, server
shares and subchannels against enumeration (where edge-only with equal shares loses), the
SflLLM baseline's greedy rule by hand, and the allocator's rates and bandwidths."""

import numpy as np
import pytest

from allocation import MakespanScenario, ModelCost, Weights, evaluate, solve
from allocation.allocators import SystemAllocator
from allocation.makespan_methods import TOLERANCE, greedy_subchannels
from allocation.makespan_model import equal_channels, makespan_scenario_from_profiles
from allocation.makespan_result import MakespanAllocation
from allocation.makespan_solver import Tables, equal_shares, fastest_link
from edgesplit.hardware import server_class
from tests.allocation.instances import small_makespan

MODEL = ModelCost(layers=6, hidden_size=8, batch_size=2, seq_len=4, activation_bits=16,
                  vocab_size=32, attention_heads=2, layer_params=1000, embedding_params=500)
CELL = {"cell": True, "max_users": 3, "max_layers": 6, "max_servers": 1}


def two_in_a_cell(**overrides) -> MakespanScenario:
    """Users 0 and 1 share a cell of 4 subchannels (full-band rates 1 and 2 Mbit/s); user 2
    has its own 0.5 Mbit/s link."""
    kw = dict(device_layer_s=[0.1, 0.2, 0.1], device_fixed_s=[0.0, 0.0, 0.0],
              device_power_w=[10.0, 5.0, 5.0], memory_bytes=[np.inf] * 3,
              tx_power_w=[0.2, 0.4, 0.1], uplink_bps=[[1e6], [2e6], [0.5e6]],
              samples=[100, 400, 200], server_layer_s=[0.05], server_fixed_s=[0.02],
              server_power_w=[100.0], concurrency=[1.0], model=MODEL,
              cell=[True, True, False], cell_subchannels=4, cell_bandwidth_hz=10e6)
    kw.update(overrides)
    return MakespanScenario(**kw)


def test_a_cell_users_transfer_energy_and_band_by_hand():
    sc = two_in_a_cell()
    split, share, channels = np.array([2, 4, 1]), np.array([0.4, 0.3, 0.3]), [1, 3, 0]
    alloc = MakespanAllocation(split, np.zeros(3, int), share, np.array(channels))
    bits = 2 * 2 * 4 * 8 * 16
    transfer = bits / np.array([1e6 / 4, 2e6 * 3 / 4, 0.5e6])
    device = split * np.array([0.1, 0.2, 0.1])
    work = (6 - split) * 0.05 + 0.02
    costs = evaluate(sc, alloc)
    np.testing.assert_allclose(costs.delay_s, (device + transfer + work / share).max())
    # Power per subchannel: the radio's energy is its full-band power for its full-band time.
    radio = np.array([0.2, 0.4, 0.1]) * bits / np.array([1e6, 2e6, 0.5e6])
    np.testing.assert_allclose(costs.energy_j,
                               (device * [10, 5, 5] + radio + work * 100).sum())
    np.testing.assert_allclose(alloc.rate_bps(sc), [0.25e6, 1.5e6, 0.5e6])
    np.testing.assert_allclose(sc.bandwidth_hz(channels), [2.5e6, 7.5e6, 0.0])


@pytest.mark.parametrize("channels, message", [
    (None, "needs each user's subchannels"), ([1, 1, 1], "own link takes no subchannel"),
    ([0, 4, 0], "at least one subchannel"), ([2, 3, 0], "5 subchannels given")])
def test_impossible_subchannels_are_refused(channels, message):
    sc = two_in_a_cell()
    alloc = MakespanAllocation(np.ones(3, int), np.zeros(3, int), np.full(3, 0.3),
                               None if channels is None else np.array(channels))
    with pytest.raises(ValueError, match=message):
        evaluate(sc, alloc)
    with pytest.raises(ValueError, match="devices share it but it has 1 subchannels"):
        two_in_a_cell(cell_subchannels=1)


def test_the_cell_instances_are_not_won_by_edge_only_at_equal_shares():
    """The instances below are non-trivial: the optimum beats every user at its smallest split
    with an equal share of the server and of the cell on each, and on most of them it trains
    layers on a device."""
    deeper = 0
    for seed in range(20):
        sc = small_makespan(seed, **CELL)
        best = solve(sc, "exhaustive")
        assoc = fastest_link(sc)
        equal = evaluate(sc, MakespanAllocation(sc.min_split, assoc, equal_shares(sc, assoc),
                                                equal_channels(sc)))
        assert best.objective < equal.objective * (1 - 1e-3)
        deeper += np.any(best.split > sc.min_split)
    assert deeper >= 10


@pytest.mark.parametrize("queue", ["shares", "fifo"])
@pytest.mark.parametrize("seed", range(12))
def test_fp_finds_the_joint_optimum_with_a_shared_band(seed, queue):
    sc = small_makespan(seed, queue=queue, **CELL)
    fp, best = solve(sc, "fp"), solve(sc, "exhaustive")
    true_gap = (fp.objective - best.objective) / fp.objective
    assert fp.gap <= TOLERANCE * (1 + 1e-9) and fp.search.endswith("exact")
    assert -1e-9 <= true_gap <= fp.gap + 1e-9
    assert fp.channels.sum() <= sc.cell_subchannels


def test_greedy_subchannels_go_to_the_slowest_user_by_hand():
    """Both cell users start with one subchannel (1 s and 2 s); the slower takes the third
    (1 s and 1 s), then the first of the tied ones the fourth."""
    sc = two_in_a_cell(device_layer_s=[1e-9] * 3, server_layer_s=[1e-9], server_fixed_s=[0.0],
                       uplink_bps=[[MODEL.bits_per_step * 4.0], [MODEL.bits_per_step * 2.0],
                                   [1e9]])
    tables = Tables(sc)
    # Full band: 0.25 s and 0.5 s; with c of 4 subchannels: 1/c s and 2/c s.
    channels = greedy_subchannels(tables, np.ones(3, int), np.zeros(3, int),
                                  np.zeros((3, sc.layers - 1)))
    np.testing.assert_array_equal(channels, [2, 2, 0])
    assert solve(sc, "sflllm").channels.tolist() == [2, 2, 0]


@pytest.mark.parametrize("seed", range(6))
def test_sflllm_is_feasible_and_never_beats_fp(seed):
    sc = small_makespan(seed, **CELL)
    sfl, fp = solve(sc, "sflllm"), solve(sc, "fp")
    evaluate(sc, sfl)
    assert fp.objective <= sfl.objective * (1 + TOLERANCE)


def profiles(n: int, cell: list[bool]) -> list[dict]:
    return [{"cpu_freq_hz": 1.5e9, "cores": 512, "flops_per_cycle": 2, "memory_gb": 8,
             "power_w": 10, "tx_power_w": 0.2, "uplink_bps": 50e6, "distance_m": 100,
             "num-examples": 200, "cell": c, "spectral_efficiency": 1.0 + i}
            for i, c in zip(range(n), cell, strict=True)]


def test_profiles_in_a_cell_get_their_full_band_rate_and_others_their_own_link():
    sc = makespan_scenario_from_profiles(profiles(3, [True, False, True]), MODEL,
                                         server_class("l4"), cell_bandwidth_hz=20e6,
                                         cell_subchannels=10)
    np.testing.assert_array_equal(sc.cell, [True, False, True])
    np.testing.assert_allclose(sc.uplink_bps[:, 0], [20e6, 50e6, 60e6])
    none = makespan_scenario_from_profiles(profiles(3, [True, False, True]), MODEL,
                                           server_class("l4"))
    assert not none.has_cell and np.all(none.uplink_bps == 50e6)


def test_the_allocator_gives_cell_clients_bandwidth_and_the_rate_it_paces_at():
    allocator = SystemAllocator("fp", 2, 0, 20e6, Weights(energy=0.1, stability=0.1),
                                cost_model="makespan", cell_bandwidth_hz=20e6,
                                cell_subchannels=10)
    model = ModelCost(layers=30, hidden_size=576, batch_size=4, seq_len=32,
                      activation_bits=32, vocab_size=49152)
    plan = allocator.allocate(1, profiles(4, [True, True, True, False]), model)
    cell = plan.clients[:3]
    assert sum(c.subchannels for c in cell) <= 10
    for c, efficiency in zip(cell, (1.0, 2.0, 3.0), strict=True):
        assert c.bandwidth_hz == pytest.approx(c.subchannels * 2e6)
        assert c.rate_bps == pytest.approx(c.bandwidth_hz * efficiency)
    assert plan.clients[3].bandwidth_hz is None and plan.clients[3].rate_bps == 50e6
    assert len({c.bandwidth_hz for c in cell}) > 1  # the band is not split evenly
    assert plan.gap <= TOLERANCE * (1 + 1e-9) and plan.search.endswith("exact")
