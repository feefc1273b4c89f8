"""System model: FLOPs, channel, rate, delay, energy, stability and scenario builders."""

import dataclasses

import numpy as np
import pytest

from allocation.system_model import (
    ModelCost,
    Weights,
    compute_delay_s,
    compute_energy_j,
    cost_components,
    layer_flops,
    path_gain,
    random_scenario,
    reference_allocation,
    scenario_from_profiles,
    stability_penalty,
    uplink_rate_bps,
    weighted_objective,
)


def test_layer_flops_hand_value():
    # 72*8*128*64^2 + 12*8*128^2*64 = 301,989,888 + 100,663,296
    assert layer_flops(8, 128, 64) == 402_653_184


def test_path_gain_at_one_km_and_hundred_m():
    # 128.1 dB at 1 km; 128.1 - 37.6 = 90.5 dB at 100 m
    np.testing.assert_allclose(path_gain([1000.0, 100.0]), [10**-12.81, 10**-9.05], rtol=1e-12)


def test_noise_psd_in_w_per_hz():
    np.testing.assert_allclose(Weights().noise_w_per_hz, 3.981e-17, rtol=1e-3)


def test_uplink_rate_hand_value():
    # SNR = 1e-10 W * 1 W / (3.98e-17 W/Hz * 1e6 Hz) = 2.512 -> 1e6 * log2(3.512) bit/s
    rate = uplink_rate_bps(1e6, 1.0, 1e-10, 10**-16.4)
    np.testing.assert_allclose(rate, 1.8122e6, rtol=1e-4)


def test_device_delay_and_energy_hand_values():
    psi = 402_653_184  # FLOPs of one layer (B=8, d=128, h=64)
    delay_s = compute_delay_s(psi, 1e9, 4, 2)  # 8e9 FLOP/s
    energy_j = compute_energy_j(psi, 1e9, 4, 2, 1e-28)
    np.testing.assert_allclose(delay_s, 0.050331648, rtol=1e-12)
    np.testing.assert_allclose(energy_j, 0.0050331648, rtol=1e-12)
    # energy = power k1 f^3 (0.1 W) times the delay
    np.testing.assert_allclose(energy_j, 1e-28 * 1e27 * delay_s, rtol=1e-12)


def test_stability_penalty_hand_value_and_growth():
    s = stability_penalty([4, 8], 32, 500.0, lipschitz=1.0)
    np.testing.assert_allclose(s[0], 2.0 / (500 * (1 - 4 / 32)), rtol=1e-12)
    assert s[1] > s[0]


def _one_user(**weights):
    model = ModelCost(layers=4, hidden_size=64, batch_size=8, seq_len=128, activation_bits=16)
    return scenario_from_profiles([1e9], [4], [2], [1.0], [100.0], [500], model,
                                  server_freq_hz=2e9, server_cores=8, server_flops_per_cycle=1,
                                  server_bandwidth_hz=1e6, weights=Weights(**weights))


def test_cost_components_hand_values():
    sc = _one_user()
    gain = 10**-9.05
    rate = 1e6 * np.log2(1 + gain * 0.5 / (10**-16.4 * 1e6))
    bits = 2 * 8 * 128 * 64 * 16  # activations and their gradients
    dev_t, srv_t = 0.050331648, 402_653_184 / (1e9 * 8)  # 1 GHz share of an 8-core server
    dev_e, srv_e = 0.0050331648, 1e-28 * 1e18 * 402_653_184 / 8
    energy, delay, stab = cost_components(sc, [1], [0], [1e6], [0.5], [1e9], [1e9])
    np.testing.assert_allclose(energy, dev_e + bits * 0.5 / rate + 3 * srv_e, rtol=1e-12)
    np.testing.assert_allclose(delay, dev_t + bits / rate + 3 * srv_t, rtol=1e-12)
    np.testing.assert_allclose(stab, 2.0 / (500 * 0.75), rtol=1e-12)


def test_paper_mode_bits_and_no_tx_delay():
    sc = _one_user(bits_mode="paper", include_tx_delay=False)
    _, delay, _ = cost_components(sc, [1], [0], [1e6], [0.5], [1e9], [1e9])
    np.testing.assert_allclose(sc.bits, [128.0])
    np.testing.assert_allclose(delay, 0.050331648 + 3 * 402_653_184 / 8e9, rtol=1e-12)


def test_reference_allocation_normalises_to_sum_of_weights():
    sc = random_scenario(6, 2, seed=3, time=2.0, energy=3.0, stability=5.0)
    e, t, s = cost_components(sc, *reference_allocation(sc))
    np.testing.assert_allclose(weighted_objective(sc, e, t, s), 10.0, rtol=1e-12)


def test_random_scenario_paper_defaults_and_determinism():
    a = random_scenario(50, 10, seed=7)
    b = random_scenario(50, 10, seed=7)
    assert a.model == ModelCost(layers=32, hidden_size=1024, batch_size=512, seq_len=768)
    np.testing.assert_array_equal(a.gain, b.gain)
    assert a.gain.shape == (50, 10)
    assert np.all((a.user_freq_hz >= 0.5e9) & (a.user_freq_hz <= 1e9))
    assert np.all((a.tokens >= 512) & (a.tokens <= 1024))
    assert np.all((a.server_cores >= 2560) & (a.server_cores <= 5120))
    np.testing.assert_allclose(a.server_bandwidth_hz, 20e6)


def test_random_scenario_overrides_and_unknown_key():
    sc = random_scenario(3, 1, seed=0, layers=8, stability=4.0, server_cores=(2, 2))
    assert sc.layers == 8 and sc.weights.stability == 4.0
    np.testing.assert_allclose(sc.server_cores, [2.0])
    with pytest.raises(TypeError, match="unknown override"):
        random_scenario(3, 1, seed=0, not_a_knob=1)


def test_scenario_from_profiles_fading_is_seeded():
    model = ModelCost(layers=30, hidden_size=576, batch_size=4, seq_len=64)
    args = ([1e9, 2e9], [4, 8], [1, 2], [1.0, 2.0], [50.0, 200.0], [100, 300], model)
    a = scenario_from_profiles(*args, rng=np.random.default_rng(1))
    b = scenario_from_profiles(*args, rng=np.random.default_rng(1))
    plain = scenario_from_profiles(*args)
    assert a.n_servers == 1 and a.gain.shape == (2, 1)
    np.testing.assert_array_equal(a.gain, b.gain)
    np.testing.assert_allclose(plain.gain[:, 0], path_gain([50.0, 200.0]))
    np.testing.assert_allclose(a.tokens, [64, 64])
    assert dataclasses.replace(a.weights) == Weights()


def test_u_shaped_split_costs_both_cuts_and_the_device_tail():
    """A U-shaped split of Y = 6 with t = 2 tail layers on the device, split a = 1: the device
    trains 3 layers, the server 3, and activations cross two cuts (twice the bits)."""
    u = ModelCost(layers=6, hidden_size=64, batch_size=8, seq_len=128, activation_bits=16,
                  device_tail_layers=2)
    sc = scenario_from_profiles([1e9], [4], [2], [1.0], [100.0], [500], u,
                                server_freq_hz=2e9, server_cores=8, server_flops_per_cycle=1,
                                server_bandwidth_hz=1e6)
    assert sc.layers == 4  # what the split divides
    gain = 10**-9.05
    rate = 1e6 * np.log2(1 + gain * 0.5 / (10**-16.4 * 1e6))
    bits = 2 * 2 * 8 * 128 * 64 * 16  # two cuts, activations and gradients at each
    dev_t, srv_t = 0.050331648, 402_653_184 / (1e9 * 8)
    dev_e, srv_e = 0.0050331648, 1e-28 * 1e18 * 402_653_184 / 8
    energy, delay, stab = cost_components(sc, [1], [0], [1e6], [0.5], [1e9], [1e9])
    np.testing.assert_allclose(energy, 3 * dev_e + bits * 0.5 / rate + 3 * srv_e, rtol=1e-12)
    np.testing.assert_allclose(delay, 3 * dev_t + bits / rate + 3 * srv_t, rtol=1e-12)
    np.testing.assert_allclose(stab, 2.0 / (500 * (1 - 3 / 6)), rtol=1e-12)
    with pytest.raises(ValueError, match="fewer than 2 layers"):
        ModelCost(layers=4, hidden_size=8, batch_size=1, seq_len=8, device_tail_layers=3)
