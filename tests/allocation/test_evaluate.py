"""evaluate: recomputes the objective and rejects each kind of infeasible allocation."""

import dataclasses
import math

import numpy as np
import pytest

from allocation import ModelCost, Scenario, evaluate, random_scenario, solve
from allocation.result import Allocation


@pytest.fixture(scope="module")
def case():
    sc = random_scenario(4, 2, seed=11, layers=8)
    return sc, solve(sc, "fp")


def test_evaluate_matches_costs_computed_by_hand():
    """Two users on one server, every term of the seed-A model written out in scalars."""
    # Prepare: Y = 6 layers, h = 8, B = 2, d = 4 tokens, 16-bit activations
    y, h, b, d, bits = 6, 8, 2, 4, 16
    user_f, cores, fpc, pmax, samples = [1e9, 0.5e9], [4, 2], [1, 2], [1.0, 2.0], [100, 300]
    server_f, server_cores, server_fpc, band = 2e9, 100, 2, 1e6
    gain = [1e-10, 4e-11]
    sc = Scenario(user_freq_hz=user_f, user_cores=cores, user_flops_per_cycle=fpc,
                  user_pmax_w=pmax, samples=samples, tokens=[d, d], server_freq_hz=[server_f],
                  server_cores=[server_cores], server_flops_per_cycle=[server_fpc],
                  server_bandwidth_hz=[band], gain=[[gain[0]], [gain[1]]],
                  model=ModelCost(layers=y, hidden_size=h, batch_size=b, seq_len=d,
                                  activation_bits=bits))
    split, bandwidth, power, freq, share = [2, 5], [0.3e6, 0.7e6], [0.5, 1.5], [0.8e9, 0.5e9], \
        [0.5e9, 1.5e9]
    alloc = Allocation(np.array(split), np.zeros(2, int), np.array(bandwidth), np.array(power),
                       np.array(freq), np.array(share))

    def totals(split, bandwidth, power, freq, share):
        k1 = k2 = 1e-28
        noise = 10 ** (-134 / 10) * 1e-3  # W/Hz
        psi = 72 * b * d * h**2 + 12 * b * d**2 * h  # FLOPs per layer per batch
        sent = 2 * b * d * h * bits  # activations up, gradients down
        energy = delay = stability = 0.0
        for n in range(2):
            rate = bandwidth[n] * math.log2(1 + gain[n] * power[n] / (noise * bandwidth[n]))
            energy += (split[n] * k1 * freq[n] ** 2 * psi / (cores[n] * fpc[n])
                       + sent * power[n] / rate
                       + (y - split[n]) * k2 * share[n] ** 2 * psi / (server_cores * server_fpc))
            delay += (split[n] * psi / (freq[n] * cores[n] * fpc[n])
                      + (y - split[n]) * psi / (share[n] * server_cores * server_fpc)
                      + sent / rate)
            stability += 2 / (samples[n] * (1 - split[n] / y))
        return energy, delay, stability

    # Execute
    costs = evaluate(sc, alloc)
    # Assert: raw totals, and the objective normalised at the reference allocation (split 1,
    # equal shares, full power and frequency), all weights 1
    energy, delay, stability = totals(split, bandwidth, power, freq, share)
    np.testing.assert_allclose([costs.energy_j, costs.delay_s, costs.stability],
                               [energy, delay, stability], rtol=1e-12)
    ref = totals([1, 1], [band / 2] * 2, pmax, user_f, [server_f / 2] * 2)
    expected = energy / ref[0] + delay / ref[1] + stability / ref[2]
    np.testing.assert_allclose(costs.objective, expected, rtol=1e-12)


def _with(alloc, **changes):
    return dataclasses.replace(alloc, **changes)


@pytest.mark.parametrize("bad", [0, 8])
def test_rejects_split_out_of_range(case, bad):
    sc, alloc = case
    split = alloc.split.copy()
    split[0] = bad
    with pytest.raises(ValueError, match="split"):
        evaluate(sc, _with(alloc, split=split))


def test_rejects_power_above_pmax(case):
    sc, alloc = case
    power = alloc.power.copy()
    power[1] = sc.user_pmax_w[1] * 1.01
    with pytest.raises(ValueError, match="power"):
        evaluate(sc, _with(alloc, power=power))


def test_rejects_user_freq_above_fmax(case):
    sc, alloc = case
    freq = alloc.user_freq.copy()
    freq[2] = sc.user_freq_hz[2] * 1.01
    with pytest.raises(ValueError, match="user_freq"):
        evaluate(sc, _with(alloc, user_freq=freq))


def test_rejects_bandwidth_over_budget(case):
    sc, alloc = case
    with pytest.raises(ValueError, match="bandwidth"):
        evaluate(sc, _with(alloc, bandwidth=np.full(4, sc.server_bandwidth_hz.max())))


def test_rejects_server_freq_over_budget(case):
    sc, alloc = case
    with pytest.raises(ValueError, match="server_freq"):
        evaluate(sc, _with(alloc, server_freq=np.full(4, sc.server_freq_hz.max())))


@pytest.mark.parametrize("bad", [-1, 2])
def test_rejects_invalid_association(case, bad):
    sc, alloc = case
    assoc = alloc.association.copy()
    assoc[3] = bad
    with pytest.raises(ValueError, match="association"):
        evaluate(sc, _with(alloc, association=assoc))
