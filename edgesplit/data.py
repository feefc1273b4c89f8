"""Federated text data: a server hold-out, per-client shards, and fixed-length token blocks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from edgesplit.corpus import load_corpus
from edgesplit.presets import load_tokenizer
from edgesplit.settings import DataSettings

if TYPE_CHECKING:
    from flwr_datasets.partitioner import Partitioner

PARTITIONINGS = ("natural", "iid", "dirichlet")

# Sub-streams of one seed, so that changing one split does not reshuffle the others.
_HELDOUT, _PARTITION, _VALIDATION = 0, 1, 2


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


@dataclass(frozen=True)
class TokenBlocks:
    """Token blocks of one shard, with a seeded batch sampler.

    Attributes
    ----------
    input_ids : torch.Tensor
        int64 tensor ``[n_blocks, block_size]``.
    attention_mask : torch.Tensor
        int64 tensor of the same shape: 1 on tokens, 0 on the padding of the last block.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def _rows(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        input_ids, mask = self.input_ids[index], self.attention_mask[index]
        return {
            "input_ids": input_ids,
            "attention_mask": mask,
            "labels": input_ids.masked_fill(mask == 0, -100),  # -100: ignored by the loss
        }

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
            ``input_ids``, ``attention_mask`` and ``labels`` (padding set to -100), each
            ``[batch_size, block_size]``.
        """
        n = len(self)
        if n == 0:
            raise ValueError("cannot sample a batch from an empty shard")
        start = step * batch_size
        epochs = range(start // n, (start + batch_size - 1) // n + 1)
        order = np.concatenate([_rng(seed, epoch).permutation(n) for epoch in epochs])
        offset = start - epochs.start * n
        return self._rows(torch.from_numpy(order[offset : offset + batch_size]))

    def eval_batches(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        """Yield every block once, in order, in batches (the last one may be smaller)."""
        for start in range(0, len(self), batch_size):
            yield self._rows(torch.arange(start, min(start + batch_size, len(self))))


@dataclass(frozen=True)
class ClientShard:
    """One client's data: ``train`` and ``val`` token blocks."""

    train: TokenBlocks
    val: TokenBlocks


def tokenize_blocks(
    texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, block_size: int
) -> TokenBlocks:
    """Tokenise texts, end each with eos, concatenate, and cut into blocks.

    Parameters
    ----------
    texts : sequence of str
        Records in the order they are joined.
    tokenizer : PreTrainedTokenizerBase
        Any Hugging Face tokenizer; only its call, ``eos_token_id`` and ``pad_token_id``
        are used (``pad_token_id`` falls back to eos when unset).
    block_size : int
        Tokens per block.

    Returns
    -------
    TokenBlocks
        ``ceil(n_tokens / block_size)`` blocks; the last one right-padded with mask 0. A
        tokenizer that starts every encoding with BOS (Gemma's) gets BOS first in every block,
        then ``block_size - 1`` tokens of the stream.
    """
    eos = tokenizer.eos_token_id
    pad = eos if tokenizer.pad_token_id is None else tokenizer.pad_token_id
    token_lists = []
    if texts:  # tokenizers reject an empty batch
        encoded = tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False)
        token_lists = encoded["input_ids"]
    stream = np.fromiter(chain.from_iterable(t + [eos] for t in token_lists), dtype=np.int64)
    bos = _leading_bos(tokenizer)
    width = block_size - (bos is not None)
    n_blocks = -(-len(stream) // width)
    flat = np.full(n_blocks * width, pad, dtype=np.int64)
    flat[: len(stream)] = stream
    mask = np.zeros_like(flat)
    mask[: len(stream)] = 1
    ids, mask = flat.reshape(n_blocks, width), mask.reshape(n_blocks, width)
    if bos is not None:
        ids = np.concatenate([np.full((n_blocks, 1), bos), ids], axis=1)
        mask = np.concatenate([np.ones((n_blocks, 1), dtype=np.int64), mask], axis=1)
    return TokenBlocks(torch.from_numpy(ids), torch.from_numpy(mask))


def _leading_bos(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """BOS if the tokenizer puts it before every text, else None. A model trained that way
    is lost without it: Gemma 3 270M scored perplexity 4892 on held-out Shakespeare blocks
    without BOS and 434 with it."""
    bos = tokenizer.bos_token_id
    first = tokenizer("a")["input_ids"][:1]
    return bos if bos is not None and first == [bos] else None


@dataclass(frozen=True)
class Split:
    """Record indices of the server hold-out and of each client's train and validation sets."""

    heldout: np.ndarray
    train: tuple[np.ndarray, ...]
    val: tuple[np.ndarray, ...]


def _natural(
    ids: np.ndarray, sizes: np.ndarray, num_partitions: int, seed: int
) -> list[np.ndarray]:
    """Assign whole groups to clients, largest first to the lightest client (LPT)."""
    groups, group_of = np.unique(ids, return_inverse=True)
    if num_partitions > len(groups):
        raise ValueError(f"{num_partitions} clients but only {len(groups)} natural groups")
    group_size = np.bincount(group_of, weights=sizes)
    # Sort by size, breaking ties by a seeded random key so the seed decides among equals.
    order = np.lexsort((_rng(seed, _PARTITION).random(len(groups)), -group_size))
    load, client_of_group = np.zeros(num_partitions), np.empty(len(groups), dtype=np.int64)
    for group in order:
        client_of_group[group] = np.argmin(load)
        load[client_of_group[group]] += group_size[group]
    return [np.flatnonzero(client_of_group[group_of] == c) for c in range(num_partitions)]


def _flwr_partitions(
    partitioner: Partitioner, table: dict[str, np.ndarray], num_partitions: int
) -> list[np.ndarray]:
    """Run a flwr-datasets partitioner over an in-memory table; return each part's ``row``."""
    # Imported here: `datasets` costs seconds to import, and a deployed device pays imports on
    # every message while the default natural partitioning never needs it.
    from datasets import Dataset
    partitioner.dataset = Dataset.from_dict(table)
    # [:] reads the column in one batch; ["row"] alone would be read row by row.
    return [np.array(partitioner.load_partition(c)[:]["row"]) for c in range(num_partitions)]


def split_records(
    ids: Sequence[str],
    num_partitions: int,
    partitioning: str = "natural",
    seed: int = 0,
    alpha: float = 0.5,
    val_fraction: float = 0.1,
    heldout_fraction: float = 0.05,
    sizes: Sequence[int] | None = None,
) -> Split:
    """Hold out records for the server, partition the rest among clients, split each.

    Parameters
    ----------
    ids : sequence of str
        Natural id of each record (the speaker); the label of Dirichlet partitioning.
    num_partitions : int
        Number of clients (>= 1).
    partitioning : str (default: "natural")
        ``"natural"``: whole groups per client, balancing ``sizes``; ``"iid"``: a seeded
        shuffle cut into equal parts; ``"dirichlet"``: each group spread over clients by
        Dirichlet(``alpha``) proportions (small ``alpha``: each client sees few groups;
        flwr-datasets redraws until every client has 2 records, and gives up after 10 tries).
    seed : int (default: 0)
        Seed of the hold-out, the partition and the validation split.
    alpha : float (default: 0.5)
        Dirichlet concentration.
    val_fraction : float (default: 0.1)
        Fraction of each client's records kept for validation (at least one when > 0 and
        the client has two records or more).
    heldout_fraction : float (default: 0.05)
        Fraction of all records held out for the server's evaluation.
    sizes : sequence of int, optional
        Size of each record (e.g. characters) that natural partitioning balances; records
        count as 1 each when omitted.

    Returns
    -------
    Split
        Sorted record indices; hold-out, train and validation sets are disjoint and cover
        every record.
    """
    if partitioning not in PARTITIONINGS:
        raise ValueError(f"unknown partitioning {partitioning!r}; choose one of {PARTITIONINGS}")
    if num_partitions < 1:
        raise ValueError("num_partitions must be >= 1")
    ids = np.asarray(ids)
    shuffled = _rng(seed, _HELDOUT).permutation(len(ids))
    n_heldout = round(heldout_fraction * len(ids))
    heldout, pool = np.sort(shuffled[:n_heldout]), np.sort(shuffled[n_heldout:])

    if partitioning == "natural":
        weights = np.ones(len(ids)) if sizes is None else np.asarray(sizes, dtype=float)
        parts = _natural(ids[pool], weights[pool], num_partitions, seed)
    elif partitioning == "iid":
        from flwr_datasets.partitioner import IidPartitioner

        # IidPartitioner cuts contiguous shards, so the rows go in already shuffled.
        rows = _rng(seed, _PARTITION).permutation(len(pool))
        parts = _flwr_partitions(IidPartitioner(num_partitions), {"row": rows}, num_partitions)
    else:
        # Integer labels: the partitioner scans every label once per group, strings are slow.
        labels = np.unique(ids[pool], return_inverse=True)[1]
        from flwr_datasets.partitioner import DirichletPartitioner

        partitioner = DirichletPartitioner(
            num_partitions, "label", alpha, min_partition_size=2, self_balancing=False,
            seed=seed,
        )
        table = {"row": np.arange(len(pool)), "label": labels}
        parts = _flwr_partitions(partitioner, table, num_partitions)

    train, val = [], []
    for client, part in enumerate(parts):
        records = pool[part]
        n_val = round(val_fraction * len(records))
        if val_fraction > 0 and len(records) >= 2:
            n_val = max(n_val, 1)
        records = _rng(seed, _VALIDATION, client).permutation(records)
        val.append(np.sort(records[:n_val]))
        train.append(np.sort(records[n_val:]))
    return Split(heldout, tuple(train), tuple(val))


@lru_cache(maxsize=16)
def _split(data: DataSettings, num_partitions: int) -> Split:
    records = load_corpus(data.corpus)
    return split_records(
        records.ids, num_partitions, data.partitioning, data.seed, data.dirichlet_alpha,
        data.val_fraction, data.heldout_fraction, sizes=[len(text) for text in records.texts],
    )


@dataclass(frozen=True)
class FederatedText:
    """A corpus split for federated training, tokenised lazily and cached per process.

    Instances with equal settings (and the same tokenizer object) share the caches, so a
    simulation worker that builds one per client call tokenises each shard once.

    Parameters
    ----------
    data : DataSettings
        Corpus, partitioning, block size, fractions and seed.
    tokenizer : PreTrainedTokenizerBase
        Tokenizer; load it once per process (`edgesplit.presets.load_tokenizer`) so that the
        caches are shared.
    num_partitions : int
        Number of clients.
    """

    data: DataSettings
    tokenizer: PreTrainedTokenizerBase
    num_partitions: int

    @property
    def split(self) -> Split:
        """Record indices of the hold-out and of every client's train and validation sets."""
        return _split(self.data, self.num_partitions)

    def client(self, partition_id: int) -> ClientShard:
        """Return the train and validation blocks of client ``partition_id``."""
        if not 0 <= partition_id < self.num_partitions:
            raise IndexError(f"partition_id {partition_id} not in [0, {self.num_partitions})")
        return ClientShard(_blocks(self, "train", partition_id), _blocks(self, "val", partition_id))

    @property
    def heldout(self) -> TokenBlocks:
        """The server's held-out blocks."""
        return _blocks(self, "heldout", 0)


@lru_cache(maxsize=4096)
def _blocks(text: FederatedText, part: str, partition_id: int) -> TokenBlocks:
    split = text.split
    indices = split.heldout if part == "heldout" else getattr(split, part)[partition_id]
    texts = load_corpus(text.data.corpus).texts
    return tokenize_blocks([texts[i] for i in indices], text.tokenizer, text.data.block_size)


def federated_text(data: DataSettings, model_name: str, num_partitions: int) -> FederatedText:
    """The run's corpus split with the model's tokenizer (cached per process, shards too)."""
    return FederatedText(data, load_tokenizer(model_name), num_partitions)
