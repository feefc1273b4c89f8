"""The makespan model: its physics by hand, exact shares against cvxpy, fp against exhaustive
search (on instances whose optimum is usually not edge-only, each checked) and every baseline,
memory caps and split floors."""

import dataclasses
import itertools

import numpy as np
import pytest

from allocation import METHODS, MakespanScenario, ModelCost, Weights, evaluate, solve
from allocation.makespan_methods import TOLERANCE
from allocation.makespan_model import catalogue_scenario, fifo_queue_s
from allocation.makespan_result import MakespanAllocation
from allocation.makespan_solver import Tables, server_makespans
from tests.allocation.instances import small_makespan

TINY = ModelCost(layers=6, hidden_size=8, batch_size=2, seq_len=4, activation_bits=16,
                 vocab_size=32, attention_heads=2, layer_params=1000, embedding_params=500)


def small_scenario(seed: int, **overrides) -> MakespanScenario:
    return small_makespan(seed, **overrides)


def test_costs_match_a_hand_computation():
    # Two users on one server with concurrency 1, splits 2 and 4 of 6 layers.
    sc = MakespanScenario(
        device_layer_s=[0.1, 0.2], device_fixed_s=[0.01, 0.0], device_power_w=[10.0, 5.0],
        memory_bytes=[np.inf, np.inf], tx_power_w=[0.1, 0.2], uplink_bps=[[1e6], [2e6]],
        samples=[100, 400], server_layer_s=[0.05], server_fixed_s=[0.02],
        server_power_w=[100.0], concurrency=[1.0], model=TINY)
    split, assoc, share = np.array([2, 4]), np.array([0, 0]), np.array([0.6, 0.4])
    bits = 2 * 2 * 4 * 8 * 16  # activations and gradients
    device = np.array([2 * 0.1 + 0.01, 4 * 0.2])
    transfer = bits / np.array([1e6, 2e6])
    work = np.array([4 * 0.05 + 0.02, 2 * 0.05 + 0.02])
    finish = device + transfer + work / share
    energy = device * [10, 5] + transfer * [0.1, 0.2] + work * 100
    stab = 2.0 / (np.array([100, 400]) * (1 - np.array([2, 4]) / 6))
    costs = evaluate(sc, MakespanAllocation(split, assoc, share))
    np.testing.assert_allclose(costs.delay_s, finish.max(), rtol=1e-12)
    np.testing.assert_allclose(costs.energy_j, energy.sum(), rtol=1e-12)
    np.testing.assert_allclose(costs.stability, stab.sum(), rtol=1e-12)


def test_the_adapter_upload_ends_the_round_by_hand():
    """With 100 LoRA parameters a layer, splits 2 and 4 upload 6400 and 12800 bits after
    their 3 steps: a third of that per step in each finish and in the radio's energy. Under a
    FIFO server it lengthens the finish only: the queue's cycle (and so the response) is the
    same as without it."""
    kw = dict(device_layer_s=[0.1, 0.2], device_fixed_s=[0.01, 0.0],
              device_power_w=[10.0, 5.0], memory_bytes=[np.inf, np.inf], tx_power_w=[0.1, 0.2],
              uplink_bps=[[1e6], [2e6]], samples=[100, 400], server_layer_s=[0.05],
              server_fixed_s=[0.02], server_power_w=[100.0], concurrency=[1.0], local_steps=3)
    with_upload = dataclasses.replace(TINY, adapter_params_per_layer=100)
    split, assoc, share = np.array([2, 4]), np.array([0, 0]), np.array([0.6, 0.4])
    upload = np.array([2 * 100 * 32 / 1e6, 4 * 100 * 32 / 2e6]) / 3
    plain = evaluate(MakespanScenario(**kw, model=TINY), MakespanAllocation(split, assoc, share))
    sc = MakespanScenario(**kw, model=with_upload)
    costs = evaluate(sc, MakespanAllocation(split, assoc, share))
    transfer = 2 * 2 * 4 * 8 * 16 / np.array([1e6, 2e6])
    finish = (np.array([0.21, 0.8]) + transfer + upload
              + np.array([0.22, 0.12]) / share)
    np.testing.assert_allclose(costs.delay_s, finish.max(), rtol=1e-12)
    np.testing.assert_allclose(costs.energy_j - plain.energy_j, upload @ [0.1, 0.2], rtol=1e-9)

    fifo = dataclasses.replace(sc, queue="fifo")
    response = fifo_queue_s(dataclasses.replace(fifo, model=TINY), split, assoc) + [0.22, 0.12]
    np.testing.assert_allclose(fifo_queue_s(fifo, split, assoc) + [0.22, 0.12], response)
    np.testing.assert_allclose(
        evaluate(fifo, MakespanAllocation(split, assoc, share)).delay_s,
        (np.array([0.21, 0.8]) + transfer + response + upload).max(), rtol=1e-12)
    assert Tables(fifo).value((split, assoc, np.zeros(2, int)))[0] == pytest.approx(
        evaluate(fifo, MakespanAllocation(split, assoc, share)).delay_s, rel=1e-12)


def test_equal_finish_shares_are_the_convex_optimum():
    """The shares that equalise finish times give the smallest makespan (cvxpy as oracle)."""
    import cvxpy as cp

    rng = np.random.default_rng(4)
    for capacity in (0.6, 1.0, 3.0):
        base, work = rng.uniform(0.1, 1.0, 5), rng.uniform(0.05, 0.5, 5)
        t = server_makespans(base, work, np.zeros(5, int), np.array([capacity]))[0]
        share, makespan = cp.Variable(5, pos=True), cp.Variable()
        cp.Problem(cp.Minimize(makespan),
                   [base + cp.multiply(work, cp.inv_pos(share)) <= makespan,
                    cp.sum(share) <= capacity, share <= 1]).solve(solver=cp.CLARABEL)
        np.testing.assert_allclose(t, makespan.value, rtol=1e-6)


def test_fp_gives_shares_that_finish_together_within_capacity():
    sc = catalogue_scenario(12, ModelCost(layers=30, hidden_size=576, batch_size=4,
                                          seq_len=32, activation_bits=32, vocab_size=49152),
                            seed=1)
    alloc = solve(sc, "fp")
    device, transfer, server = alloc.step_times(sc)
    np.testing.assert_allclose(device + transfer + server, alloc.delay, rtol=1e-9)
    assert alloc.share.sum() <= sc.concurrency[0] * (1 + 1e-9)


@pytest.mark.parametrize("seed", range(40))
def test_fp_is_within_its_tolerance_of_exhaustive_search_on_each_instance(seed):
    """Per instance: fp's objective within its tolerance of the optimum, and its certified
    gap at least the true one."""
    sc = small_scenario(seed)
    exact = solve(sc, "exhaustive")
    fp = solve(sc, "fp")
    true_gap = (fp.objective - exact.objective) / fp.objective
    assert fp.gap <= TOLERANCE * (1 + 1e-9) and fp.search == "threshold walk: exact"
    assert -1e-9 <= true_gap <= fp.gap + 1e-9


def test_exhaustive_matches_a_naive_enumeration_with_cvxpy_shares():
    """Independent of the solver's tables and root finder: every split vector and association,
    each costed by `evaluate` at shares from a generic convex solver."""
    import cvxpy as cp

    sc = small_scenario(4, max_users=3, max_layers=5, min_split=None)  # 3 users, 2 servers
    assert (sc.n_users, sc.n_servers, sc.layers) == (3, 2, 5)
    best = np.inf
    ranges = [range(1, int(h) + 1) for h in sc.max_split]
    for split in itertools.product(*ranges):
        for assoc in itertools.product(range(sc.n_servers), repeat=sc.n_users):
            split_a, assoc_a = np.array(split), np.array(assoc)
            share, makespan = cp.Variable(sc.n_users, pos=True), cp.Variable()
            users = np.arange(sc.n_users)
            rate = sc.uplink_bps[users, assoc_a]
            upload = (split_a * sc.model.adapter_params_per_layer * 32.0 / rate
                      / sc.local_steps)  # fp32 adapters, once a round
            base = (split_a * sc.device_layer_s + sc.device_fixed_s
                    + sc.transfer_s[users, assoc_a] + upload)
            work = ((sc.layers - split_a) * sc.server_layer_s[assoc_a]
                    + sc.server_fixed_s[assoc_a])
            members = np.eye(sc.n_servers)[:, assoc_a]
            cp.Problem(cp.Minimize(makespan),
                       [base + cp.multiply(work, cp.inv_pos(share)) <= makespan,
                        members @ share <= sc.concurrency, share <= 1]).solve(
                solver=cp.CLARABEL)
            # The conic solver ends within ~1e-8 of the budgets: step back inside them.
            inside = np.minimum(share.value * (1 - 1e-6), 1.0)
            value = evaluate(sc, MakespanAllocation(split_a, assoc_a, inside)).objective
            best = min(best, value)
    assert solve(sc, "exhaustive").objective == pytest.approx(best, rel=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_fp_never_worse_than_any_baseline(seed):
    rng = np.random.default_rng(seed)
    model = ModelCost(layers=12, hidden_size=576, batch_size=4, seq_len=32,
                      activation_bits=32, vocab_size=49152)
    weights = Weights(energy=float(rng.uniform(0, 1)), stability=float(rng.uniform(0, 1)))
    sc = catalogue_scenario(10, model, n_servers=3, seed=seed, servers=("l4", "cpu-epyc-9654"),
                            weights=weights)
    fp = solve(sc, "fp", seed=seed)
    for method in sorted(set(METHODS) - {"fp", "exhaustive"}):
        options = {"split": 5} if method == "fixed" else {}
        other = solve(sc, method, seed=seed, **options)
        assert fp.objective <= other.objective * (1 + TOLERANCE), method


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_is_feasible_deterministic_and_respects_floor_and_memory(method):
    sc = small_scenario(0, min_split=np.array([2, 1, 3, 1]))  # 4 users
    options = {"split": 2} if method == "fixed" else {}
    a, b = solve(sc, method, **options), solve(sc, method, **options)
    evaluate(sc, a)
    np.testing.assert_array_equal(a.split, b.split)
    assert a.objective == b.objective and a.method == method
    assert np.all(a.split >= sc.min_split) and np.all(a.split <= sc.max_split)


def test_memory_caps_bound_the_split_and_an_impossible_device_is_named():
    need = TINY.device_bytes(np.arange(1, 6))
    kw = dict(device_layer_s=[0.01, 0.01], device_fixed_s=[0, 0], device_power_w=[1, 1],
              tx_power_w=[0.1, 0.1], uplink_bps=[[1e9], [1e9]], samples=[100, 100],
              server_layer_s=[10.0], server_fixed_s=[0.0], server_power_w=[1.0],
              concurrency=[1.0], model=TINY, weights=Weights(energy=0, stability=0))
    sc = MakespanScenario(memory_bytes=[need[2], np.inf], **kw)  # fits 3 layers, and any
    np.testing.assert_array_equal(sc.max_split, [3, 5])
    # The server is slow: the devices take every layer they can hold.
    np.testing.assert_array_equal(solve(sc, "fp").split, [3, 5])
    with pytest.raises(ValueError, match="split: a device's memory cannot hold its split"):
        evaluate(sc, MakespanAllocation(np.array([4, 5]), np.zeros(2, int), np.full(2, 0.5)))
    starved = MakespanScenario(memory_bytes=[need[0] / 2, np.inf], **kw)
    assert list(starved.infeasible) == [0]
    with pytest.raises(ValueError, match="0: memory"):
        solve(starved, "fp")


def test_shares_beyond_one_or_a_servers_concurrency_are_refused():
    sc = small_scenario(5, min_split=None, memory_bytes=np.full(small_scenario(5).n_users,
                                                                np.inf))
    n, ones = sc.n_users, np.ones(sc.n_users, int)
    with pytest.raises(ValueError, match=r"share: every share must be in \(0, 1\]"):
        evaluate(sc, MakespanAllocation(ones, 0 * ones, np.full(n, 1.5)))
    crowded = np.full(n, sc.concurrency[0] / n * 1.01)
    with pytest.raises(ValueError, match="sum above its concurrency"):
        evaluate(sc, MakespanAllocation(ones, 0 * ones, crowded))


def test_a_crowded_server_makes_device_layers_worth_it():
    """Time only: one user alone uses the fast server for everything; 64 users make the server
    the bottleneck and devices take layers. With time alone each user's server need at a target
    makespan, W(a) / (T - B(a)), is monotone in its split, so every split is an extreme."""
    model = ModelCost(layers=30, hidden_size=576, batch_size=4, seq_len=32,
                      activation_bits=32, vocab_size=49152)
    time_only = Weights(energy=0.0, stability=0.0)
    alone = solve(catalogue_scenario(1, model, seed=3, devices=("jetson-agx-orin",),
                                     weights=time_only), "fp")
    assert alone.split.tolist() == [1]
    crowd = catalogue_scenario(64, model, seed=3, servers=("cpu-epyc-9654",), weights=time_only)
    fp, edge = solve(crowd, "fp"), solve(crowd, "edge-only")
    assert fp.gap <= TOLERANCE * (1 + 1e-9) and fp.delay < 0.8 * edge.delay
    assert np.all((fp.split == 1) | (fp.split == crowd.max_split)) and fp.split.max() > 1


def _uniform(devices: int, device_layer_s: float, server_layer_s: float, servers: int = 1
             ) -> MakespanScenario:
    model = ModelCost(layers=4, hidden_size=64, batch_size=8, seq_len=64, activation_bits=32)
    return MakespanScenario(
        device_layer_s=np.full(devices, device_layer_s), device_fixed_s=np.zeros(devices),
        device_power_w=np.ones(devices), memory_bytes=np.full(devices, np.inf),
        tx_power_w=np.ones(devices), uplink_bps=np.full((devices, servers), 1e15),
        samples=np.full(devices, 100.0), server_layer_s=np.full(servers, server_layer_s),
        server_fixed_s=np.zeros(servers), server_power_w=np.full(servers, 100.0),
        concurrency=np.ones(servers), model=model)


def test_a_first_come_first_served_server_queues_only_when_busy():
    """The FIFO server's wait: next to nothing while devices dominate the cycle, every other
    client's tail at saturation (the shares' prediction), and only a client's own server's
    clients count."""
    split = [1, 1, 1, 1]
    idle = fifo_queue_s(_uniform(4, 1.0, 1e-3), split, [0] * 4)
    assert np.all(idle < 1e-3 * 3 * 0.01)  # under 1% of a tail
    busy = fifo_queue_s(_uniform(4, 1e-9, 1.0), split, [0] * 4)
    np.testing.assert_allclose(busy, 3 * 3.0, rtol=1e-4)  # three others' 3-layer tails
    apart = fifo_queue_s(_uniform(4, 1e-9, 1.0, servers=2), split, [0, 0, 1, 1])
    np.testing.assert_allclose(apart, 1 * 3.0, rtol=1e-4)  # one other per server
    # Between the two: more device time, less waiting, never negative.
    waits = [fifo_queue_s(_uniform(4, d, 1.0), split, [0] * 4)[0] for d in (0.1, 1.0, 10.0)]
    assert 9.0 > waits[0] > waits[1] > waits[2] > 0


def test_a_fifo_server_counts_only_the_clients_whose_data_planes_overlap():
    """With start offsets, a client waits only for clients running beside it: none once the
    starts are farther apart than the data planes last, as without offsets when they start
    together, and less the farther they spread."""
    split, busy = [1, 1, 1, 1], _uniform(4, 1e-9, 1.0)
    together = fifo_queue_s(busy, split, [0] * 4)
    same = dataclasses.replace(busy, start_s=np.full(4, 7.0), local_steps=10)
    np.testing.assert_allclose(fifo_queue_s(same, split, [0] * 4), together, rtol=1e-6)
    # Per step a data plane lasts at most 3 + 9 s: starts 100 steps apart never meet.
    apart = dataclasses.replace(busy, start_s=np.arange(4) * 100.0 * 10, local_steps=10)
    np.testing.assert_allclose(fifo_queue_s(apart, split, [0] * 4), 0.0, atol=1e-9)
    spread = [fifo_queue_s(dataclasses.replace(busy, start_s=np.arange(4) * gap,
                                               local_steps=1), split, [0] * 4).mean()
              for gap in (0.5, 1.0, 2.0)]
    assert together.mean() > spread[0] > spread[1] > spread[2] > 0


def test_fifo_costs_by_hand_for_two_clients_that_never_meet():
    """Two clients 1000 steps' time apart: each gets the whole server (share 1), and the
    round runs from the first start to the second client's end."""
    model = ModelCost(layers=4, hidden_size=64, batch_size=8, seq_len=64, activation_bits=32)
    sc = MakespanScenario(
        device_layer_s=[0.1, 0.2], device_fixed_s=[0.0, 0.0], device_power_w=[1.0, 1.0],
        memory_bytes=[np.inf, np.inf], tx_power_w=[1.0, 1.0], uplink_bps=[[1e6], [1e6]],
        samples=[100, 100], server_layer_s=[0.05], server_fixed_s=[0.01],
        server_power_w=[100.0], concurrency=[1.0], model=model, queue="fifo",
        start_s=[0.0, 2000.0], local_steps=2)
    split = np.array([1, 2])
    transfer = model.bits_per_step / 1e6
    finish = np.array([0.1, 0.4]) + transfer + (4 - split) * 0.05 + 0.01
    costs = evaluate(sc, solve(sc, "fixed", split=[1, 2]))
    np.testing.assert_allclose(costs.delay_s, 1000.0 + finish[1], rtol=1e-9)
    np.testing.assert_allclose(solve(sc, "fixed", split=[1, 2]).share, [1.0, 1.0])
