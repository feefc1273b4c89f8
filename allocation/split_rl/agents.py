"""RL agents (stable-baselines3) for the split, and the trained policy the strategy calls.

PPO is the seed's agent; A2C and DQN are its baselines. Each trains in `SplitEnv` against a
ratio function: the surrogate (refreshed Dyna-style by `DynaRefresh`) or real evaluations.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecNormalize

from .env import RatioFn, SplitEnv
from .evaluator import PerplexitySource
from .problem import SplitProblem
from .surrogate import Surrogate

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "dqn": DQN}

# Small-problem settings. The horizon is long (gamma 0.99): from a deep split the agent must cross
# splits far worse than both ends before it reaches a shallow one, and a short discount leaves it
# stuck where it starts.
_OPTIONS: dict[str, dict] = {
    "ppo": dict(n_steps=128, batch_size=128, n_epochs=10, gamma=0.99, ent_coef=0.01,
                learning_rate=1e-3),
    "a2c": dict(n_steps=8, gamma=0.99, ent_coef=0.01, learning_rate=1e-3),
    "dqn": dict(learning_starts=500, buffer_size=20_000, exploration_fraction=0.3,
                target_update_interval=250, gamma=0.99, train_freq=1, learning_rate=1e-3),
}


def real_ratio(source: PerplexitySource, seeds: Sequence[int] = (0,), seed: int = 0) -> RatioFn:
    """PPL / PPL_ref from real evaluations, on a channel realisation drawn from `seeds`."""
    rng = np.random.default_rng(seed)
    reference = source.clean_perplexity

    def ratio(loss_rate: float, split: int) -> float:
        return source.perplexity(split, loss_rate, int(rng.choice(seeds))) / reference

    return ratio


class DynaRefresh(BaseCallback):
    """Every `every_steps` environment steps (checked when a rollout ends, so that no update
    mixes two surrogates), evaluate the `n_states` most visited new states and refit for
    `epochs` (warm-started)."""

    def __init__(self, surrogate: Surrogate, every_steps: int, n_states: int,
                 epochs: int = 500) -> None:
        super().__init__()
        self.surrogate = surrogate
        self.every_steps = every_steps
        self.n_states = n_states
        self.epochs = epochs
        self._last = 0

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.num_timesteps - self._last >= self.every_steps:
            self._last = self.num_timesteps
            self.surrogate.refresh(self.n_states, self.epochs)


class SplitPolicy:
    """A trained agent as a split rule: `split_for(loss_rate, current_split) -> split`.

    Parameters
    ----------
    agent : BaseAlgorithm
        A stable-baselines3 agent trained in `SplitEnv`.
    problem : SplitProblem
        The problem it was trained on.
    """

    def __init__(self, agent: BaseAlgorithm, problem: SplitProblem) -> None:
        self.agent = agent
        self.problem = problem

    def split_for(self, loss_rate: float, current_split: int = 1) -> int:
        """The split the agent settles on after one episode of moves from `current_split`."""
        problem = self.problem
        split = int(np.clip(current_split, 1, problem.p_max))
        for _ in range(problem.episode_steps):
            action, _ = self.agent.predict(problem.observe(loss_rate, split), deterministic=True)
            split = problem.move(split, int(action))
        return split

    def save(self, folder: str | Path) -> None:
        """Write `agent.zip` and `problem.json` to `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.agent.save(folder / "agent.zip")
        name = next(k for k, cls in ALGORITHMS.items() if isinstance(self.agent, cls))
        meta = {"algorithm": name, "problem": dataclasses.asdict(self.problem)}
        (folder / "problem.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, folder: str | Path) -> SplitPolicy:
        """Read a policy written by `save` (CPU)."""
        folder = Path(folder)
        meta = json.loads((folder / "problem.json").read_text())
        agent = ALGORITHMS[meta["algorithm"]].load(folder / "agent.zip", device="cpu")
        return cls(agent, SplitProblem(**meta["problem"]))


def train_agent(algorithm: str, problem: SplitProblem, ratio: RatioFn, timesteps: int,
                seed: int = 0, refresh: DynaRefresh | None = None, n_envs: int = 4) -> SplitPolicy:
    """Train a stable-baselines3 agent in `SplitEnv`.

    Parameters
    ----------
    algorithm : str
        ``"ppo"``, ``"a2c"`` or ``"dqn"``.
    problem : SplitProblem
    ratio : RatioFn
        PPL / PPL_ref of a state: `Surrogate.ratio` or `real_ratio(...)`.
    timesteps : int
        Environment steps.
    seed : int (default: 0)
        Seed of the agent and of the environments.
    refresh : DynaRefresh or None (default: None)
        Dyna refresh of the surrogate during training.
    n_envs : int (default: 4)
        Parallel environments (in-process).

    Returns
    -------
    SplitPolicy
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose from {sorted(ALGORITHMS)}")
    options = _OPTIONS[algorithm]
    # Rewards span two orders of magnitude (a bad split under heavy loss costs hundreds): scale
    # them by a running estimate of the return's spread so the value function can fit them.
    # Only training sees the scaling; observations are untouched, so the saved agent needs no
    # statistics at inference.
    env = VecNormalize(make_vec_env(lambda: SplitEnv(problem, ratio), n_envs=n_envs, seed=seed),
                       norm_obs=False, norm_reward=True, gamma=options["gamma"])
    agent = ALGORITHMS[algorithm]("MlpPolicy", env, seed=seed, device="cpu", verbose=0,
                                  **options)
    # SB3's default logger makes an empty /tmp/SB3-<time> folder on every learn(); training
    # reports nothing there, so it gets a logger with no outputs instead.
    agent.set_logger(Logger(folder=None, output_formats=[]))
    agent.learn(total_timesteps=timesteps, callback=refresh)
    return SplitPolicy(agent, problem)
