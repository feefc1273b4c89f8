"""Greedy generations of the global adapter from fixed prompts, so a user sees the text change
from round to round (`eval.sample-prompts`, written to the run folder's generations.jsonl)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from logging import WARNING

import torch
from flwr.common.logger import log

from edgesplit.generation import generate_text
from edgesplit.presets import load_tokenizer
from edgesplit.split_model import SplitModel


def sample_generations(model: SplitModel, lora: Mapping[str, torch.Tensor],
                       prompts: Sequence[str], data_format: str, max_new_tokens: int
                       ) -> dict[str, str]:
    """Prompt -> greedy continuation under the adapter ``lora``, on the server's whole model.

    A failure is logged and gives no samples: they are for reading, the run goes on.
    """
    try:
        tokenizer = load_tokenizer(str(model.folder))
        with model.using_lora(lora):
            return {p: generate_text(model.peft_model, tokenizer, p, data_format, max_new_tokens)
                    for p in prompts}
    except Exception as exc:
        log(WARNING, "sample generations failed: %s: %s", type(exc).__name__, exc)
        return {}
