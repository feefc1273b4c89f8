"""evaluate: recomputes the objective and rejects each kind of infeasible allocation."""

import dataclasses

import numpy as np
import pytest

from allocation import evaluate, random_scenario, solve


@pytest.fixture(scope="module")
def case():
    sc = random_scenario(4, 2, seed=11, layers=8)
    return sc, solve(sc, "fp")


def test_evaluate_matches_the_solver(case):
    sc, alloc = case
    costs = evaluate(sc, alloc)
    np.testing.assert_allclose(costs.objective, alloc.objective, rtol=1e-12)
    np.testing.assert_allclose(
        [costs.energy_j, costs.delay_s, costs.stability],
        [alloc.energy, alloc.delay, alloc.stability], rtol=1e-12)


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
