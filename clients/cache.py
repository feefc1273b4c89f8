"""The device's process cache: one frozen base model shared by every client a process serves.

A simulation worker serves many virtual devices one message at a time, and a deployed SuperNode
starts a fresh process per message: keep loading cheap, and keep nothing per-client here (per-
client state lives in `context.state`). The tokenizer and the tokenised shards are cached in
`edgesplit.presets` and `edgesplit.data`.
"""

from __future__ import annotations

import gc
import threading
import time
from logging import DEBUG

import torch
from flwr.common.logger import log

from edgesplit.data import clear_caches
from edgesplit.memory import release_free_memory
from edgesplit.settings import LoraSettings
from edgesplit.split_model import SplitModel

_HEADS: dict[tuple[str, LoraSettings, torch.dtype, torch.device], SplitModel] = {}
# Sessions bind their LoRA tensors into the cached model in place: devices that share a process
# (the in-process test grid runs them in threads) take turns; one device per process never waits.
HEAD_LOCK = threading.Lock()


def head_model(model_name: str, lora: LoraSettings, split: int, whole: bool = False,
               dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
               ) -> SplitModel:
    """A frozen head with at least `split` layers (or the whole model with its LM head, for a
    U-shaped split), its base in `dtype` on `device`; grows (reloads) only when more is needed,
    so a worker never holds more than one copy of the base weights."""
    key = (model_name, lora, dtype, torch.device(device))
    cached = _HEADS.get(key)
    too_small = cached is None or cached.loaded_layers < split or (
        whole and not cached.has_lm_head)
    if too_small:
        started = time.perf_counter()
        cached = SplitModel(model_name, lora, head_layers=None if whole else split, dtype=dtype,
                            device=device)
        _HEADS[key] = cached
        log(DEBUG, "device: loaded %s (%s layers) in %.1f s", model_name,
            "all" if whole else split, time.perf_counter() - started)
    return cached


def release() -> None:
    """Drop every cached model, corpus split and tokenised shard of this process, and hand the
    freed pages back to the OS (a device agent letting go of a run)."""
    with HEAD_LOCK:
        _HEADS.clear()
    clear_caches()
    gc.collect()
    release_free_memory()
