"""Real evaluator: perplexity of split inference through a corrupting channel, cached and counted.

`perplexity(p, q, seed)` runs `tail(channel_q(head(x, p)), p)` over a fixed set of held-out
blocks. The head's clean output is deterministic, so it is computed once per split; the channel
and the tail run once per (p, q rounded, seed). `evaluations` counts those real runs: it is what
the learned policy is trying to save.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

import torch

from edgesplit.channel import Channel, Erasure
from edgesplit.split_model import SplitModel

Batch = Mapping[str, torch.Tensor]


class PerplexitySource(Protocol):
    """Anything that answers real perplexity queries (an evaluator, or a tally of one)."""

    @property
    def clean_perplexity(self) -> float: ...

    def perplexity(self, split: int, loss_rate: float, seed: int = 0) -> float: ...


class SplitEvaluator:
    """Perplexity of split inference under channel loss rate q, with the clean reference.

    Parameters
    ----------
    model : SplitModel
        A whole model (head and tail).
    batches : iterable of dict
        Held-out batches (``input_ids``, ``attention_mask``, ``labels``), e.g.
        ``list(blocks.eval_batches(4))[:n]``; read once and kept.
    channel : callable (default: Erasure)
        Loss rate -> channel applied to the hidden state at the split.
    q_decimals : int (default: 2)
        q is rounded to this many decimals before use: the cache key, and the value evaluated.
    """

    def __init__(self, model: SplitModel, batches: Iterable[Batch],
                 channel: Callable[[float], Channel] = Erasure, q_decimals: int = 2) -> None:
        self.model = model
        self.batches = [dict(b) for b in batches]
        if not self.batches:
            raise ValueError("the evaluator needs at least one held-out batch")
        self.channel = channel
        self.q_decimals = q_decimals
        self.evaluations = 0  # real (uncached) runs of the tail, the clean reference included
        self.requests = 0
        self.seconds = 0.0  # wall time spent in real evaluations (heads included)
        self._heads: dict[int, list[torch.Tensor]] = {}
        self._cache: dict[tuple[int, float, int], float] = {}
        self._clean: float | None = None

    def key(self, split: int, loss_rate: float, seed: int = 0) -> tuple[int, float, int]:
        """Cache key of a query: (split, q rounded, seed)."""
        return int(split), round(float(loss_rate), self.q_decimals), int(seed)

    @property
    def clean_perplexity(self) -> float:
        """Perplexity of the unsplit model on the same blocks (evaluated once)."""
        if self._clean is None:
            self.evaluations += 1
            start = time.perf_counter()
            with torch.no_grad():
                losses = [self.model.full(b["input_ids"], b["attention_mask"], b["labels"]).loss
                          for b in self.batches]
            self._clean = self._perplexity(losses)
            self.seconds += time.perf_counter() - start
        return self._clean

    def perplexity(self, split: int, loss_rate: float, seed: int = 0) -> float:
        """Perplexity with the hidden state after layer `split` sent through the channel.

        The same seed draws the same random numbers for every (split, q): splits are compared on
        one channel realisation, and a larger q erases a superset of elements.
        """
        self.requests += 1
        key = self.key(split, loss_rate, seed)
        if key not in self._cache:
            self.evaluations += 1
            start = time.perf_counter()
            self._cache[key] = self._evaluate(*key)
            self.seconds += time.perf_counter() - start
        return self._cache[key]

    @torch.no_grad()
    def _evaluate(self, split: int, loss_rate: float, seed: int) -> float:
        channel = self.channel(loss_rate)
        generator = torch.Generator().manual_seed(seed)
        losses = []
        for batch, hidden in zip(self.batches, self._head(split), strict=True):
            out = self.model.tail(channel(hidden, generator), batch["attention_mask"], split,
                                  batch["labels"])
            losses.append(out.loss)
        return self._perplexity(losses)

    def _head(self, split: int) -> list[torch.Tensor]:
        if split not in self._heads:
            with torch.no_grad():
                self._heads[split] = [self.model.head(b["input_ids"], b["attention_mask"], split)
                                      for b in self.batches]
        return self._heads[split]

    def _perplexity(self, losses: list[torch.Tensor]) -> float:
        # The loss is a mean over each batch's predicted tokens; weight batches by that count.
        counts = [int((b["labels"][:, 1:] != -100).sum()) for b in self.batches]
        total = sum(float(loss) * n for loss, n in zip(losses, counts, strict=True))
        return math.exp(total / sum(counts))


class Tally:
    """One consumer's view of a shared evaluator: counts the evaluations it alone would pay for.

    Agents share one evaluator (and its cache) to save wall time here, yet each is charged for
    every distinct (split, q, seed) it asked for, the clean reference included.
    """

    def __init__(self, evaluator: SplitEvaluator) -> None:
        self.evaluator = evaluator
        self.requests = 0
        self._keys: set[tuple[int, float, int]] = set()

    @property
    def evaluations(self) -> int:
        """Distinct real evaluations asked for (+1 for the clean reference)."""
        return len(self._keys) + 1

    @property
    def clean_perplexity(self) -> float:
        """The evaluator's clean reference."""
        return self.evaluator.clean_perplexity

    def perplexity(self, split: int, loss_rate: float, seed: int = 0) -> float:
        """As `SplitEvaluator.perplexity`, recorded against this consumer."""
        self.requests += 1
        self._keys.add(self.evaluator.key(split, loss_rate, seed))
        return self.evaluator.perplexity(split, loss_rate, seed)
