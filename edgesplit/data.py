"""Federated text data: a server hold-out, per-client shards, and fixed-length token blocks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from transformers import PreTrainedTokenizerBase

from edgesplit.blocks import TokenBlocks, seeded_rng
from edgesplit.corpus import BUILTIN_CORPORA, Corpus, load_corpus
from edgesplit.formats import encode_conversations, pack_text
from edgesplit.presets import load_tokenizer
from edgesplit.settings import DataSettings

if TYPE_CHECKING:
    from flwr_datasets.partitioner import Partitioner

PARTITIONINGS = ("natural", "iid", "dirichlet")

# Sub-streams of one seed, so that changing one split does not reshuffle the others.
_HELDOUT, _PARTITION, _VALIDATION = 0, 1, 2


@dataclass(frozen=True)
class ClientShard:
    """One client's data: ``train`` and ``val`` token blocks."""

    train: TokenBlocks
    val: TokenBlocks


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
        raise ValueError(f"{num_partitions} clients but only {len(groups)} natural groups: use "
                         "fewer clients or partitioning iid or dirichlet")
    group_size = np.bincount(group_of, weights=sizes)
    # Sort by size, breaking ties by a seeded random key so the seed decides among equals.
    order = np.lexsort((seeded_rng(seed, _PARTITION).random(len(groups)), -group_size))
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
    shuffled = seeded_rng(seed, _HELDOUT).permutation(len(ids))
    n_heldout = round(heldout_fraction * len(ids))
    heldout, pool = np.sort(shuffled[:n_heldout]), np.sort(shuffled[n_heldout:])
    if num_partitions > len(pool):
        raise ValueError(f"{num_partitions} clients but only {len(pool)} records")

    if partitioning == "natural":
        weights = np.ones(len(ids)) if sizes is None else np.asarray(sizes, dtype=float)
        parts = _natural(ids[pool], weights[pool], num_partitions, seed)
    elif partitioning == "iid":
        # flwr-datasets' IidPartitioner cuts a shuffle into contiguous shards, the first
        # `len % n` one row longer: np.array_split cuts the same shards (tested) in
        # milliseconds, where the partitioner took 6 s for 1000 clients (a cost every
        # simulation worker paid).
        rows = seeded_rng(seed, _PARTITION).permutation(len(pool))
        parts = np.array_split(rows, num_partitions)
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
        records = seeded_rng(seed, _VALIDATION, client).permutation(records)
        val.append(np.sort(records[:n_val]))
        train.append(np.sort(records[n_val:]))
    return Split(heldout, tuple(train), tuple(val))


def corpus_of(data: DataSettings) -> Corpus:
    """The run's corpus: a built-in one by name, else the local dataset at ``data.corpus``
    (cached per process either way)."""
    if data.corpus in BUILTIN_CORPORA:
        return load_corpus(data.corpus)
    from edgesplit.local_corpus import load_local  # `datasets` loads only for local data

    return load_local(data)


def _groups(data: DataSettings) -> str:
    """What a natural group of this corpus is, for error messages."""
    if data.corpus in BUILTIN_CORPORA:
        return f"corpus {data.corpus!r} (groups: speakers)"
    by = f"field {data.partition_by!r} (data.partition-by)" if data.partition_by else "file"
    return f"corpus {data.corpus!r} (groups by {by})"


@lru_cache(maxsize=16)
def _split(data: DataSettings, num_partitions: int) -> Split:
    records = corpus_of(data)
    try:
        return split_records(
            records.ids, num_partitions, data.partitioning, data.seed, data.dirichlet_alpha,
            data.val_fraction, data.heldout_fraction, sizes=records.sizes)
    except ValueError as exc:
        raise ValueError(f"{_groups(data)}: {exc}") from None


@dataclass(frozen=True)
class FederatedText:
    """A corpus split for federated training, tokenised lazily and cached per process.

    Instances with equal settings (and the same tokenizer object) share the caches, so a
    simulation worker that builds one per client call tokenises each shard once.

    Parameters
    ----------
    data : DataSettings
        Corpus, data format, partitioning, block size, fractions and seed.
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

    def check(self) -> None:
        """Raise a ValueError naming the corpus and how it is grouped when a client would get
        no training or no validation records (run once at the start of a run)."""
        split = self.split
        for client, (train, val) in enumerate(zip(split.train, split.val, strict=True)):
            for part, rows in (("training", train), ("validation", val)):
                if len(rows) == 0:
                    raise ValueError(
                        f"{_groups(self.data)}: client {client} of {self.num_partitions} gets "
                        f"no {part} records with partitioning {self.data.partitioning!r}; "
                        "use fewer clients, more data or another partitioning")
        if len(split.heldout) == 0:
            raise ValueError(f"{_groups(self.data)}: the server's hold-out is empty; raise "
                             "data.heldout-fraction")

    def client(self, partition_id: int) -> ClientShard:
        """Return the train and validation blocks of client ``partition_id``."""
        if not 0 <= partition_id < self.num_partitions:
            raise IndexError(f"partition_id {partition_id} not in [0, {self.num_partitions})")
        return ClientShard(_blocks(self, "train", partition_id), _blocks(self, "val", partition_id))

    @property
    def heldout(self) -> TokenBlocks:
        """The server's held-out blocks."""
        return _blocks(self, "heldout", 0)


# Tokenised shards kept per process. A simulation worker serves whichever clients are sampled,
# a different few every round: bounded, its memory stays that of the last few rounds' clients
# however many clients are registered (1000 registered filled 2000 entries unbounded).
SHARD_CACHE_SIZE = 64


@lru_cache(maxsize=SHARD_CACHE_SIZE)
def _blocks(text: FederatedText, part: str, partition_id: int) -> TokenBlocks:
    split = text.split
    indices = split.heldout if part == "heldout" else getattr(split, part)[partition_id]
    records, block_size = corpus_of(text.data), text.data.block_size
    if records.conversations:
        return encode_conversations([records.conversations[i] for i in indices],
                                    text.tokenizer, block_size)
    return pack_text([records.texts[i] for i in indices], text.tokenizer, block_size)


def clear_caches() -> None:
    """Forget this process's corpus splits and tokenised shards (a device agent between runs)."""
    _split.cache_clear()
    _blocks.cache_clear()


def federated_text(data: DataSettings, model_name: str, num_partitions: int) -> FederatedText:
    """The run's corpus split with the model's tokenizer (cached per process, shards too)."""
    return FederatedText(data, load_tokenizer(model_name), num_partitions)
