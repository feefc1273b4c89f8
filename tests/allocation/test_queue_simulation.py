"""The discrete-event simulation of the stream round, by hand: one client, two clients that
meet once, a saturated server, clients that never meet, start offsets, jitter's mean."""

import numpy as np
import pytest

from allocation import MakespanScenario, ModelCost
from allocation.queue_simulation import simulate, simulate_scenario


def test_one_client_never_waits():
    r = simulate([0.1], [0.02], [0.3], [0.03], [0.2], local_steps=5, start_s=[1.0])
    np.testing.assert_allclose(r.response_s, [0.3])
    np.testing.assert_allclose(r.queue_s, [0.0])
    np.testing.assert_allclose(r.end_s, [1.0 + 5 * (0.1 + 0.02 + 0.3 + 0.03 + 0.2)])
    np.testing.assert_allclose(r.span_s, 5 * 0.65)
    np.testing.assert_allclose(r.busy_s, [5 * 0.3])


def test_two_equal_clients_meet_once_then_alternate():
    """Both arrive together; the second waits one tail; from then on each arrives as the
    other's tail ends (the rest of the cycle, 1 s, is longer than a tail, 0.4 s)."""
    ones = np.ones(2)
    r = simulate(0.25 * ones, 0.25 * ones, 0.4 * ones, 0.25 * ones, 0.25 * ones,
                 local_steps=4)
    np.testing.assert_allclose(r.queue_s, [0.0, 0.4 / 4])
    np.testing.assert_allclose(r.response_s, [0.4, 0.4 + 0.4 / 4])
    np.testing.assert_allclose(r.end_s, [4 * 1.4, 4 * 1.4 + 0.4])
    np.testing.assert_allclose(r.span_s, 4 * 1.4 + 0.4)


def test_a_saturated_server_serves_everyone_in_turn():
    """Devices and links take no time: the worker never idles, each step waits for the
    others' tails, and the round lasts every tail of every step."""
    n, steps, work = 4, 10, np.array([0.1, 0.2, 0.3, 0.4])
    zero = np.zeros(n)
    r = simulate(zero, zero, work, zero, zero, local_steps=steps)
    np.testing.assert_allclose(r.span_s, steps * work.sum())
    np.testing.assert_allclose(r.busy_s, [steps * work.sum()])
    # Round-robin in arrival order: the first step waits for the tails ahead of it, every
    # later one for the three others' tails.
    first = np.cumsum(work)
    np.testing.assert_allclose(r.response_s, (first + (steps - 1) * work.sum()) / steps)


def test_clients_that_never_overlap_never_wait_and_the_span_runs_first_start_to_last_end():
    ones = np.ones(3)
    r = simulate(0.1 * ones, 0.1 * ones, 0.5 * ones, 0.1 * ones, 0.1 * ones,
                 start_s=[0.0, 100.0, 200.0], local_steps=3)
    np.testing.assert_allclose(r.queue_s, 0.0)
    np.testing.assert_allclose(r.dataplane_s, 3 * 0.9)
    np.testing.assert_allclose(r.span_s, 200.0 + 3 * 0.9)


def test_separate_servers_do_not_queue_for_each_other():
    ones = np.ones(2)
    together = simulate(0 * ones, 0 * ones, ones, 0 * ones, 0 * ones, local_steps=2)
    apart = simulate(0 * ones, 0 * ones, ones, 0 * ones, 0 * ones, association=[0, 1],
                     local_steps=2)
    assert together.queue_s.sum() > 0
    np.testing.assert_allclose(apart.queue_s, 0.0)
    np.testing.assert_allclose(apart.busy_s, [2.0, 2.0])


def test_jitter_keeps_the_means():
    """Gamma draws with the given means: one client's mean tail and step over many steps."""
    r = simulate([0.1], [0.1], [0.5], [0.1], [0.2], local_steps=4000, jitter_cv=0.5, seed=3)
    np.testing.assert_allclose(r.response_s, [0.5], rtol=0.03)
    np.testing.assert_allclose(r.dataplane_s / 4000, [1.0], rtol=0.03)
    fixed = simulate([0.1], [0.1], [0.5], [0.1], [0.2], local_steps=4000)
    assert not np.isclose(r.span_s, fixed.span_s)


def test_a_scenario_is_simulated_with_its_own_step_times_and_offsets():
    model = ModelCost(layers=4, hidden_size=64, batch_size=8, seq_len=64, activation_bits=32)
    sc = MakespanScenario(
        device_layer_s=[0.1, 0.2], device_fixed_s=[0.0, 0.05], device_power_w=[1.0, 1.0],
        memory_bytes=[np.inf, np.inf], tx_power_w=[1.0, 1.0], uplink_bps=[[1e6], [2e6]],
        samples=[100, 100], server_layer_s=[0.05], server_fixed_s=[0.01],
        server_power_w=[100.0], concurrency=[1.0], model=model, queue="fifo",
        start_s=[0.0, 500.0], local_steps=3)
    split = np.array([1, 2])
    r = simulate_scenario(sc, split, [0, 0])
    device = np.array([0.1, 0.45])
    transfer = model.bits_per_step / np.array([1e6, 2e6])
    work = (4 - split) * 0.05 + 0.01
    np.testing.assert_allclose(r.dataplane_s, 3 * (device + transfer + work))
    np.testing.assert_allclose(r.span_s, 500.0 + 3 * (device + transfer + work)[1])


def test_bad_input_is_refused_with_its_reason():
    with pytest.raises(ValueError, match="non-negative"):
        simulate([0.1], [-1.0], [0.1], [0.1], [0.1])
    with pytest.raises(ValueError, match="local_steps"):
        simulate([0.1], [0.1], [0.1], [0.1], [0.1], local_steps=0)
    model = ModelCost(layers=4, hidden_size=64, batch_size=8, seq_len=64)
    batched = MakespanScenario(
        device_layer_s=[0.1], device_fixed_s=[0.0], device_power_w=[1.0],
        memory_bytes=[np.inf], tx_power_w=[1.0], uplink_bps=[[1e6]], samples=[100],
        server_layer_s=[0.05], server_fixed_s=[0.0], server_power_w=[100.0],
        concurrency=[2.0], model=model)
    with pytest.raises(ValueError, match="concurrency 1"):
        simulate_scenario(batched, [1], [0])
