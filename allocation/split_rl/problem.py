"""The split decision problem of seed B: state [q, p], relative moves, and the reward."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SplitProblem:
    """State, action and reward of the adaptive split (seed note, seed-split-rl.md).

    alpha : float (default: 10.0)
        Weight of the perplexity term.
    beta : float (default: 1.0)
        Weight of the device-load term.
    p_max : int (default: 10)
        Deepest split considered (decoder layers on the device); splits are 1..p_max.
    q_low, q_high : float (default: 0.01, 0.30)
        Range of the channel loss rate q, drawn uniformly at each episode start.
    max_move : int (default: 4)
        Actions move the split by -max_move..+max_move layers (2 max_move + 1 actions).
    episode_steps : int (default: 5)
        Steps per episode.
    """

    alpha: float = 10.0
    beta: float = 1.0
    p_max: int = 10
    q_low: float = 0.01
    q_high: float = 0.30
    max_move: int = 4
    episode_steps: int = 5

    def __post_init__(self) -> None:
        if self.p_max < 1:
            raise ValueError(f"p_max must be >= 1, got {self.p_max}")
        if not 0.0 <= self.q_low < self.q_high < 1.0:
            raise ValueError(f"need 0 <= q_low < q_high < 1, got {self.q_low}, {self.q_high}")

    @property
    def n_actions(self) -> int:
        """Number of relative moves, 'stay' included."""
        return 2 * self.max_move + 1

    @property
    def splits(self) -> range:
        """Every split the agent may choose."""
        return range(1, self.p_max + 1)

    def move(self, split: int, action: int) -> int:
        """The split after `action` (0 = deepest step back, max_move = stay), clipped."""
        return int(np.clip(split + int(action) - self.max_move, 1, self.p_max))

    def observe(self, loss_rate: float, split: int) -> np.ndarray:
        """The state [q, p] scaled to [0, 1] (q over [q_low, q_high], p over [1, p_max])."""
        q = (loss_rate - self.q_low) / (self.q_high - self.q_low)
        p = (split - 1) / max(self.p_max - 1, 1)
        return np.clip(np.array([q, p], dtype=np.float32), 0.0, 1.0)

    def reward(self, perplexity: float, reference: float, split: int) -> float:
        """alpha (PPL_ref - PPL) / PPL_ref + beta (p_max - p) / p_max.

        `reference` is the clean (uncorrupted) perplexity, the same at every step, so the reward
        is stationary and never compares against an unset value (the authors' first-step bug).
        """
        return (self.alpha * (reference - perplexity) / reference
                + self.beta * (self.p_max - split) / self.p_max)
