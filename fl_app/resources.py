"""Process-level caches of read-only things every client in a process shares.

A simulation worker serves many virtual devices one message at a time, and a deployed SuperNode
starts a fresh process per message: keep loading cheap, and keep nothing per-client here (per-
client state lives in `context.state`).
"""

from __future__ import annotations

import threading
from functools import lru_cache

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from fl_app.config import Settings
from fl_app.data import FederatedText
from fl_app.presets import quiet_transformers, resolve_checkpoint
from fl_app.split_model import LoraSettings, SplitModel

_HEADS: dict[tuple[str, LoraSettings], SplitModel] = {}
# Sessions bind their LoRA tensors into the cached model in place: devices that share a process
# (the in-process test grid runs them in threads) take turns; one device per process never waits.
HEAD_LOCK = threading.Lock()


def head_model(model_name: str, lora: LoraSettings, split: int,
               whole: bool = False) -> SplitModel:
    """A frozen head with at least `split` layers (or the whole model with its LM head, for a
    U-shaped split); grows (reloads) only when more is needed, so a worker never holds more
    than one copy of the base weights."""
    cached = _HEADS.get((model_name, lora))
    too_small = cached is None or cached.loaded_layers < split or (
        whole and not cached.has_lm_head)
    if too_small:
        cached = SplitModel(model_name, lora, head_layers=None if whole else split)
        _HEADS[(model_name, lora)] = cached
    return cached


@lru_cache(maxsize=4)
def tokenizer(model_name: str) -> PreTrainedTokenizerBase:
    with quiet_transformers():
        return AutoTokenizer.from_pretrained(resolve_checkpoint(model_name))


def federated_text(settings: Settings, num_partitions: int) -> FederatedText:
    """The run's corpus split (its tokenised shards are cached inside `fl_app.data`)."""
    return FederatedText(
        corpus=settings.corpus, tokenizer=tokenizer(settings.model_name),
        num_partitions=num_partitions, partitioning=settings.partitioning,
        block_size=settings.block_size, seed=settings.seed, alpha=settings.dirichlet_alpha,
        val_fraction=settings.val_fraction, heldout_fraction=settings.heldout_fraction)
