"""Seed B figures: drawn from a report alone, with perplexities recovered exactly from rewards."""

import dataclasses
import json

import numpy as np
import pytest

from allocation.split_rl import SplitProblem
from experiments import split_rl as experiment

AGENTS = ["ppo-surrogate", "a2c-surrogate", "dqn-surrogate", "ppo-real"]


def fake_report(problem: SplitProblem, ratio: np.ndarray) -> dict:
    """A report as `run` writes it (JSON keys are strings), with PPL / PPL_ref = `ratio`."""
    rates = [0.05, 0.15, 0.25]
    held_out = []
    for q, row in zip(rates, ratio, strict=True):
        rewards = {str(p): problem.reward(r, 1.0, p) for p, r in zip(problem.splits, row,
                                                                      strict=True)}
        best = max(problem.splits, key=lambda p: rewards[str(p)])
        pick = {"split": best, "reward": rewards[str(best)]}
        held_out.append({"loss_rate": q, "oracle": pick, "rewards_by_split": rewards,
                         **{name: pick for name in [*AGENTS, "surrogate-argmax"]}})
    counts = dict(zip([*AGENTS, "oracle"], [20, 22, 24, 400, 30], strict=True))
    return json.loads(json.dumps({
        "model": "fake", "problem": dataclasses.asdict(problem), "clean_perplexity": 10.0,
        "held_out": held_out, "mean_reward": {"oracle": 0.5},
        "policy_shape": {"loss_rate": rates, "split_from_shallowest": [1, 1, 3],
                         "split_from_deepest": [1, 3, 3]},
        "reward_curves": {name: {"timesteps": [4, 8], "mean_reward": [0.1, 0.4]}
                          for name in AGENTS},
        "real_evaluations": counts, "real_queries": counts,
        "evaluations_ratio_real_over_surrogate": 20.0}))


def test_perplexity_table_inverts_the_reward():
    problem = SplitProblem(p_max=3, alpha=7.0, beta=0.5)
    ratio = np.array([[1.0, 1.2, 1.5], [2.0, 1.1, 1.0], [9.0, 3.0, 1.01]])
    rates, splits, table = experiment.perplexity_table(fake_report(problem, ratio))
    assert rates == [0.05, 0.15, 0.25] and splits == [1, 2, 3]
    np.testing.assert_allclose(table, ratio, rtol=1e-12)


@pytest.mark.parametrize("with_curves", [True, False])
def test_plot_writes_every_figure(tmp_path, with_curves):
    report = fake_report(SplitProblem(p_max=3), np.full((3, 3), 1.5))
    if not with_curves:  # reports written before the curves were kept still plot
        del report["reward_curves"]
    paths = experiment.plot(report, tmp_path)
    names = {"split_rl_perplexity.png", "split_rl_policy.png", "split_rl_evaluations.png"}
    assert {p.name for p in paths} == names | ({"split_rl_rewards.png"} if with_curves else set())
    assert all(p.stat().st_size > 10_000 for p in paths)


def test_reward_curve_records_every_step_and_bins_them():
    problem = SplitProblem(p_max=4)
    curve = experiment.RewardCurve(problem, lambda q, p: 1.0 + q)
    for step in range(10):
        assert curve(0.1 * (step % 3), 2) == 1.0 + 0.1 * (step % 3)
    assert curve.rewards == [problem.reward(1.0 + 0.1 * (s % 3), 1.0, 2) for s in range(10)]
    binned = curve.binned(n_bins=4)
    assert binned["timesteps"] == [3, 6, 8, 10]
    assert binned["mean_reward"][0] == pytest.approx(np.mean(curve.rewards[:3]))
    assert curve.binned(n_bins=50)["timesteps"] == list(range(1, 11))
