"""The exact oracle: the best split for a channel state by real evaluation of every split."""

from __future__ import annotations

from dataclasses import dataclass

from .evaluator import PerplexitySource
from .problem import SplitProblem


@dataclass(frozen=True)
class OracleChoice:
    """Best split at one channel state, with the reward of every split.

    loss_rate : float
    seed : int
        Channel realisation every split was evaluated on.
    split : int
    reward : float
    rewards : dict of int to float
        Split -> reward, for p in 1..p_max.
    """

    loss_rate: float
    seed: int
    split: int
    reward: float
    rewards: dict[int, float]


def oracle(problem: SplitProblem, source: PerplexitySource, loss_rate: float,
           seed: int = 0) -> OracleChoice:
    """Evaluate every split in 1..p_max at `loss_rate` on one realisation; keep the best.

    Ties go to the shallower split (the lighter device load).
    """
    reference = source.clean_perplexity
    rewards = {p: problem.reward(source.perplexity(p, loss_rate, seed), reference, p)
               for p in problem.splits}
    best = max(rewards, key=lambda p: (rewards[p], -p))
    return OracleChoice(loss_rate, seed, best, rewards[best], rewards)
