"""Reward surrogate: an MLP (2 -> 128 -> 128 -> 1) predicting the perplexity term from the state.

It is fitted on real evaluations (a grid of q x p x seeds) and refreshed Dyna-style: the states
the agent visits most are evaluated for real and added to the fit. The network predicts
log(PPL / PPL_ref), which spans orders of magnitude less than the ratio itself and keeps the fit
well-conditioned; the reward's term is then alpha (1 - exp(prediction)).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from .evaluator import PerplexitySource
from .problem import SplitProblem


def _mlp(hidden: int = 128) -> nn.Module:
    return nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 1))


class Surrogate:
    """Perplexity ratio PPL(q, p) / PPL_ref learned from real evaluations.

    Parameters
    ----------
    problem : SplitProblem
    source : PerplexitySource
        Where real evaluations come from (each distinct query is a counted evaluation).
    seeds : tuple of int (default: (0,))
        Channel realisations evaluated at each sampled state.
    q_decimals : int (default: 2)
        Visited loss rates are binned to this many decimals when choosing states to refresh.
    fit_seed : int (default: 0)
        Seed of the network's initial weights.
    """

    def __init__(self, problem: SplitProblem, source: PerplexitySource,
                 seeds: tuple[int, ...] = (0,), q_decimals: int = 2, fit_seed: int = 0) -> None:
        self.problem = problem
        self.source = source
        self.seeds = seeds
        self.q_decimals = q_decimals
        torch.manual_seed(fit_seed)
        self.net = _mlp()
        self.visits: Counter[tuple[float, int]] = Counter()
        self._states: list[tuple[float, int]] = []
        self._targets: list[float] = []
        self._scale: tuple[float, float] | None = None  # target mean and std

    @property
    def n_samples(self) -> int:
        """Real evaluations the fit uses."""
        return len(self._targets)

    def add(self, states: Iterable[tuple[float, int]]) -> None:
        """Evaluate states (q, p) for real under every seed and keep them for the fit."""
        reference = self.source.clean_perplexity
        for q, p in states:
            for seed in self.seeds:
                ppl = self.source.perplexity(p, q, seed)
                self._states.append((q, p))
                self._targets.append(math.log(ppl / reference))

    def fit(self, epochs: int = 1500, lr: float = 3e-3) -> float:
        """Full-batch Adam on the squared error of standardised targets; returns the final MSE
        in log-ratio units. Refits start from the current weights (a warm start)."""
        x = torch.from_numpy(np.stack([self.problem.observe(q, p) for q, p in self._states]))
        y = torch.tensor(self._targets, dtype=torch.float32)[:, None]
        if self._scale is None:
            # Set by the first fit and kept, so that warm-started weights keep their meaning.
            self._scale = (float(y.mean()), max(float(y.std()) if len(y) > 1 else 1.0, 1e-6))
        y_std = (y - self._scale[0]) / self._scale[1]
        optimiser = torch.optim.Adam(self.net.parameters(), lr=lr)
        for _ in range(epochs):
            optimiser.zero_grad()
            loss = (self.net(x) - y_std).pow(2).mean()
            loss.backward()
            optimiser.step()
        return loss.item() * self._scale[1] ** 2

    @torch.no_grad()
    def log_ratio(self, loss_rate: float, split: int) -> float:
        """Predicted log(PPL / PPL_ref) at a state (after the first `fit`)."""
        if self._scale is None:
            raise RuntimeError("fit the surrogate before asking it")
        x = torch.from_numpy(self.problem.observe(loss_rate, split))[None]
        return float(self.net(x)) * self._scale[1] + self._scale[0]

    def ratio(self, loss_rate: float, split: int) -> float:
        """Predicted PPL / PPL_ref; records the visit for the next refresh."""
        self.visits[(round(loss_rate, self.q_decimals), split)] += 1
        return math.exp(self.log_ratio(loss_rate, split))

    def refresh(self, n_states: int, epochs: int = 500) -> list[tuple[float, int]]:
        """Dyna step: evaluate the most visited states not yet evaluated, refit, reset visits.

        Returns the states that were evaluated.
        """
        known = set(self._states)
        fresh = [s for s, _ in self.visits.most_common() if s not in known][:n_states]
        self.visits.clear()
        if fresh:
            self.add(fresh)
            self.fit(epochs)
        return fresh


def grid_states(problem: SplitProblem, n_q: int) -> list[tuple[float, int]]:
    """`n_q` loss rates evenly over [q_low, q_high] (rounded to 2 decimals) times every split."""
    qs = np.round(np.linspace(problem.q_low, problem.q_high, n_q), 2)
    return [(float(q), p) for q in qs for p in problem.splits]
