"""Gymnasium environment of the adaptive split: observe [q, p], move the split, earn the reward."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from .problem import SplitProblem

#: (loss rate q, split p) -> PPL / PPL_ref, from the surrogate or from real evaluations.
RatioFn = Callable[[float, int], float]


class SplitEnv(gym.Env):
    """One episode = one channel: q is drawn at reset and held for `episode_steps` steps.

    Observation: [q, p] scaled to [0, 1] (`SplitProblem.observe`). Action: a relative move of
    -max_move..+max_move layers, clipped to [1, p_max]. Reward: `SplitProblem.reward` of the
    new split, with PPL / PPL_ref from `ratio`. The start split is uniform over 1..p_max, so the
    agent learns to move from any current split; `reset(options={"loss_rate": q, "split": p})`
    fixes either.

    Parameters
    ----------
    problem : SplitProblem
    ratio : RatioFn
        PPL / PPL_ref of a state.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, problem: SplitProblem, ratio: RatioFn) -> None:
        self.problem = problem
        self.ratio = ratio
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(problem.n_actions)
        self.loss_rate = problem.q_low
        self.split = 1
        self._steps = 0

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        problem = self.problem
        self.loss_rate = float(options.get(
            "loss_rate", self.np_random.uniform(problem.q_low, problem.q_high)))
        self.split = int(options.get("split", self.np_random.integers(1, problem.p_max + 1)))
        self._steps = 0
        return problem.observe(self.loss_rate, self.split), self._info()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        problem = self.problem
        self.split = problem.move(self.split, action)
        # PPL / PPL_ref against a reference of 1 is the same reward as PPL against PPL_ref.
        reward = problem.reward(self.ratio(self.loss_rate, self.split), 1.0, self.split)
        self._steps += 1
        # The episode is cut by time, not ended by the state: a truncation, so the agent
        # still bootstraps the value of the last state.
        truncated = self._steps >= problem.episode_steps
        return (problem.observe(self.loss_rate, self.split), float(reward), False, truncated,
                self._info())

    def _info(self) -> dict[str, Any]:
        return {"loss_rate": self.loss_rate, "split": self.split}
