"""Seed B: reward, environment, real evaluator, surrogate, oracle, policy and the experiment."""

import json
import math
import tempfile

import numpy as np
import pytest
import torch

from allocation.split_rl import (
    SplitEnv,
    SplitEvaluator,
    SplitPolicy,
    SplitProblem,
    Surrogate,
    Tally,
    grid_states,
    oracle,
    train_agent,
)
from edgesplit.split_model import SplitModel
from experiments import split_rl as experiment


class TableSource:
    """A fake perplexity source: PPL = ref * (1 + q * cost[p]), counting queries."""

    def __init__(self, cost: dict[int, float], reference: float = 100.0) -> None:
        self.cost, self.clean_perplexity, self.calls = cost, reference, 0

    def perplexity(self, split: int, loss_rate: float, seed: int = 0) -> float:
        self.calls += 1
        return self.clean_perplexity * (1 + loss_rate * self.cost[split])


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny tensors gain nothing from threads, and on a busy machine they lose a lot.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_evaluator_parts():
    torch.manual_seed(0)
    model = SplitModel("tiny-llama")
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    return model, [{"input_ids": ids, "attention_mask": mask, "labels": ids.clone()}]


def test_reward_hand_values():
    problem = SplitProblem()  # alpha 10, beta 1, p_max 10
    # 10 * (100 - 110) / 100 + (10 - 3) / 10
    assert problem.reward(110.0, 100.0, 3) == pytest.approx(-0.3)
    assert problem.reward(100.0, 100.0, 10) == pytest.approx(0.0)
    assert problem.reward(90.0, 100.0, 1) == pytest.approx(1.9)
    assert SplitProblem(alpha=2.0, beta=0.5, p_max=4).reward(150.0, 100.0, 2) == pytest.approx(
        2.0 * -0.5 + 0.5 * 0.5)


def test_moves_are_clipped_and_states_scaled():
    problem = SplitProblem()
    assert problem.n_actions == 9
    assert problem.move(5, 4) == 5  # action 4 = stay
    assert problem.move(2, 0) == 1  # -4 from 2, clipped
    assert problem.move(9, 8) == 10  # +4 from 9, clipped
    np.testing.assert_allclose(problem.observe(0.01, 1), [0.0, 0.0])
    np.testing.assert_allclose(problem.observe(0.30, 10), [1.0, 1.0])
    np.testing.assert_allclose(problem.observe(0.5, 20), [1.0, 1.0])


def test_env_spaces_clipping_and_episode_length():
    problem = SplitProblem()
    env = SplitEnv(problem, lambda q, p: 1.0 + q * p)
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    assert problem.q_low <= info["loss_rate"] <= problem.q_high
    obs, info = env.reset(options={"loss_rate": 0.2, "split": 2})
    truncated, steps = False, 0
    while not truncated:
        obs, reward, terminated, truncated, info = env.step(0)  # always -4
        steps += 1
        assert not terminated and env.observation_space.contains(obs)
        assert info["split"] == 1
        assert reward == pytest.approx(problem.reward(1.0 + 0.2, 1.0, 1))
    assert steps == problem.episode_steps
    env.reset(options={"loss_rate": 0.2, "split": 9})
    assert env.step(8)[4]["split"] == 10


def test_evaluator_caches_counts_and_matches_clean(tiny_evaluator_parts):
    evaluator = SplitEvaluator(*tiny_evaluator_parts)
    clean = evaluator.clean_perplexity
    assert evaluator.evaluations == 1
    # No loss on the link: split inference is the unsplit model (oracle 1).
    assert evaluator.perplexity(2, 0.0) == pytest.approx(clean, rel=1e-5)
    a = evaluator.perplexity(2, 0.2, seed=0)
    assert evaluator.perplexity(2, 0.2004, seed=0) == a  # same key once rounded: cached
    assert evaluator.evaluations == 3 and evaluator.requests == 3
    assert evaluator.perplexity(2, 0.2, seed=1) != a
    assert evaluator.perplexity(3, 0.2, seed=0) != a
    assert evaluator.evaluations == 5
    tally = Tally(evaluator)
    tally.perplexity(2, 0.2, 0)
    tally.perplexity(2, 0.2, 0)
    tally.perplexity(1, 0.1, 0)
    assert (tally.evaluations, tally.requests) == (3, 3)  # 2 distinct + the clean reference
    assert evaluator.evaluations == 6  # only (1, 0.1, 0) was new


def test_oracle_is_the_best_of_every_split(tiny_evaluator_parts):
    problem = SplitProblem(p_max=3, alpha=200.0)  # a large alpha makes the corruption matter
    choice = oracle(problem, SplitEvaluator(*tiny_evaluator_parts), 0.3, seed=5)
    fresh = SplitEvaluator(*tiny_evaluator_parts)
    rewards = {p: problem.reward(fresh.perplexity(p, 0.3, 5), fresh.clean_perplexity, p)
               for p in problem.splits}
    assert choice.split == max(rewards, key=rewards.get)
    assert choice.reward == pytest.approx(max(rewards.values()))
    assert all(choice.reward >= r for r in rewards.values())


def test_oracle_finds_a_middle_split_and_breaks_ties_shallow():
    problem = SplitProblem(p_max=5)
    choice = oracle(problem, TableSource({1: 9.0, 2: 5.0, 3: 0.0, 4: 0.0, 5: 4.0}), 0.2)
    assert choice.split == 3
    assert choice.reward == pytest.approx(problem.reward(100.0, 100.0, 3))
    tie = oracle(SplitProblem(p_max=2, beta=0.0), TableSource({1: 1.0, 2: 1.0}), 0.2)
    assert tie.split == 1


def test_surrogate_fits_and_refreshes_visited_states():
    problem = SplitProblem(p_max=4)
    source = TableSource({1: 8.0, 2: 4.0, 3: 1.0, 4: 2.0})
    surrogate = Surrogate(problem, source)
    surrogate.add(grid_states(problem, 4))
    assert surrogate.n_samples == source.calls == 16
    with pytest.raises(RuntimeError):
        surrogate.log_ratio(0.1, 1)
    assert surrogate.fit(epochs=600) < 1e-3
    for q, p in [(0.05, 1), (0.25, 1), (0.25, 3), (0.15, 4)]:
        assert surrogate.ratio(q, p) == pytest.approx(1 + q * source.cost[p], rel=0.05)
    for _ in range(3):
        surrogate.ratio(0.123, 2)
    surrogate.ratio(0.2, 3)
    assert surrogate.refresh(n_states=1, epochs=10) == [(0.12, 2)]
    assert source.calls == 17 and not surrogate.visits


def test_policy_splits_in_range_and_round_trips(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    problem = SplitProblem(p_max=4)
    policy = train_agent("ppo", problem, lambda q, p: 1.0 + q * p, timesteps=256, n_envs=2)
    splits = [policy.split_for(q, start) for q in (0.02, 0.3) for start in (1, 4)]
    assert all(1 <= s <= 4 for s in splits)
    assert list(scratch.iterdir()) == [], "training left files in the temporary folder"
    policy.save(tmp_path / "policy")
    loaded = SplitPolicy.load(tmp_path / "policy")
    assert loaded.problem == problem
    assert [loaded.split_for(q, start) for q in (0.02, 0.3) for start in (1, 4)] == splits
    with pytest.raises(ValueError):
        train_agent("sarsa", problem, lambda q, p: 1.0, timesteps=8)


def test_fast_experiment_writes_a_well_formed_report(tmp_path):
    experiment.main(["--fast", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "split_rl.json").read_text())
    p_max = report["problem"]["p_max"]
    assert report["model"] == "tiny-llama" and p_max == 3
    agents = ["ppo-surrogate", "a2c-surrogate", "dqn-surrogate", "ppo-real"]
    assert len(report["held_out"]) == experiment.FAST.n_test
    for state in report["held_out"]:
        rewards = {int(p): r for p, r in state["rewards_by_split"].items()}
        assert sorted(rewards) == list(range(1, p_max + 1))
        assert state["oracle"]["reward"] == max(rewards.values())
        for name in [*agents, "surrogate-argmax", "fixed-shallow", "fixed-deep"]:
            assert 1 <= state[name]["split"] <= p_max
            assert state[name]["reward"] <= state["oracle"]["reward"] + 1e-12
    counts = report["real_evaluations"]
    assert all(counts[name] >= 1 for name in agents)
    # The real agent asks for a real evaluation at every one of its steps.
    assert report["real_queries"]["ppo-real"] == experiment.FAST.timesteps
    assert math.isfinite(report["gap_to_oracle"]) and report["wall_s"]["total_s"] > 0
    assert (tmp_path / "policy" / "agent.zip").exists()
