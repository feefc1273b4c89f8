"""The tiny configs the family sweep builds: shrunk, and runnable in transformers itself."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from harness.split_oracle import cuts, padded_batch
from harness.tiny_families import SUPPORTED, tiny_config


@pytest.mark.parametrize("model_type", ["qwen3", "deepseek_v3", "phimoe"])
def test_a_family_without_its_own_config_is_shrunk_and_runs(model_type):
    """Plain, multi-head latent attention (rotary head = qk_rope_head_dim), and experts."""
    config = tiny_config(model_type)
    assert config.model_type == model_type
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (4, 64, 257)
    model = AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    ids, mask = padded_batch()
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    assert logits.shape == (4, 16, 257) and torch.isfinite(logits).all()


def test_sub_configs_are_shrunk_too():
    config = tiny_config("gemma3")
    assert config.text_config.hidden_size == 64 and config.vision_config.hidden_size == 64
    assert config.text_config.num_hidden_layers == 4


def test_a_family_with_its_own_config_gets_it():
    assert tiny_config("gpt_neo").to_dict() == SUPPORTED["gpt-neo"]().to_dict()


def test_cuts_are_every_head_tail_split_then_every_u_shaped_one():
    assert cuts(3) == [(0,), (1,), (2,), (3,), (1, 2)]
