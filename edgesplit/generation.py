"""Greedy text generation from a prompt, put to the model as training presented its data.

One function for the server's per-round samples (the global adapter bound on its split model)
and for `experiments.generate` (a finished run's adapter loaded with peft).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import GenerationConfig, PreTrainedTokenizerBase

from edgesplit.formats import prompt_ids


@torch.no_grad()
def generate_text(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompt: str,
                  data_format: str, max_new_tokens: int) -> str:
    """Greedy continuation of ``prompt`` (the new text only, special tokens dropped).

    Parameters
    ----------
    model : nn.Module
        A causal LM with ``generate`` (a transformers model or a peft model), in eval mode.
    tokenizer : PreTrainedTokenizerBase
    prompt : str
        Plain text for ``data_format = "text"``; a user turn for ``"instruction"`` or
        ``"chat"`` (see `edgesplit.formats.prompt_ids`).
    data_format : str
    max_new_tokens : int
        Stops earlier at the end-of-text token.
    """
    ids = torch.tensor([prompt_ids(prompt, tokenizer, data_format)])
    eos = tokenizer.eos_token_id
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                              pad_token_id=eos if tokenizer.pad_token_id is None
                              else tokenizer.pad_token_id)
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                         generation_config=config)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
