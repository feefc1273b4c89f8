"""A byte-level tokenizer for the tiny test presets: 256 byte tokens plus an end-of-text token."""

from __future__ import annotations

from functools import lru_cache

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"


@lru_cache(maxsize=1)
def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """Return a deterministic byte-level tokenizer (vocabulary 257, no merges, no training).

    Every UTF-8 byte is one token, so any text round-trips and tests need no downloaded
    vocabulary. The end-of-text token (id 256) doubles as the padding token.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    vocab[EOS_TOKEN] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN
    )
