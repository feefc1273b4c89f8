"""Token blocks of one shard (ids, padding mask, labels) and their seeded batch sampler."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

IGNORE = -100  # the label of a position without a loss (padding, prompts): transformers' default


def seeded_rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator for one sub-stream of a seed (changing one stream leaves the others alone)."""
    return np.random.default_rng([seed, *keys])


@dataclass(frozen=True)
class TokenBlocks:
    """Token blocks of one shard, with a seeded batch sampler.

    Attributes
    ----------
    input_ids : torch.Tensor
        int64 tensor ``[n_blocks, block_size]``.
    attention_mask : torch.Tensor
        int64 tensor of the same shape: 1 on tokens, 0 on padding.
    labels : torch.Tensor
        int64 tensor of the same shape: the token where it is predicted, ``IGNORE`` (-100) on
        padding and, for instruction and chat data, on every token outside the responses.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if not self.input_ids.shape == self.attention_mask.shape == self.labels.shape:
            raise ValueError("input_ids, attention_mask and labels must have one shape")

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def first(self, n: int) -> TokenBlocks:
        """The first ``n`` blocks (all of them when there are fewer)."""
        return TokenBlocks(self.input_ids[:n], self.attention_mask[:n], self.labels[:n])

    def _rows(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids[index], "attention_mask": self.attention_mask[index],
                "labels": self.labels[index]}

    def batch(self, step: int, batch_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
        """Return the ``step``-th batch of a seeded shuffle, the same for the same arguments.

        The blocks are read in a fresh permutation per epoch (epoch ``e`` uses the seed
        ``(seed, e)``), so a batch depends only on ``(seed, step, batch_size)`` and training
        can be replayed or resumed at any step.

        Parameters
        ----------
        step : int
            Batch number, counted from 0 across epochs.
        batch_size : int
            Blocks per batch.
        seed : int (default: 0)
            Shuffle seed.

        Returns
        -------
        dict of str to torch.Tensor
            ``input_ids``, ``attention_mask`` and ``labels``, each ``[batch_size, block_size]``.
        """
        return self._rows(self.batch_indices(step, batch_size, seed))

    def batch_indices(self, step: int, batch_size: int, seed: int = 0) -> torch.Tensor:
        """The block indices of `batch` (int64 ``[batch_size]``; a block appears twice when
        the batch spans two epochs of a shard smaller than the batch)."""
        n = len(self)
        if n == 0:
            raise ValueError("cannot sample a batch from an empty shard")
        start = step * batch_size
        epochs = range(start // n, (start + batch_size - 1) // n + 1)
        order = np.concatenate([seeded_rng(seed, epoch).permutation(n) for epoch in epochs])
        offset = start - epochs.start * n
        return torch.from_numpy(order[offset : offset + batch_size])

    def eval_batches(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        """Yield every block once, in order, in batches (the last one may be smaller)."""
        for start in range(0, len(self), batch_size):
            yield self._rows(torch.arange(start, min(start + batch_size, len(self))))
