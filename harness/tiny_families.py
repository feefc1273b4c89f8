"""Tiny random configs of every decoder family the split must support, and of ones it refuses.

Each config switches on what makes its family different (sliding windows shorter than the test
sequences, alternating local/global layers, per-kind rotary tables, logit softcapping and
scaling, embedding multipliers, layers without RoPE, fused projections, experts), so the oracle
test exercises it. Dropouts are 0 so split and unsplit training can be compared exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

_VOCAB = dict(vocab_size=257, bos_token_id=256, eos_token_id=256, pad_token_id=256)
_DIMS = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512)
_ALTERNATING = ["sliding_attention", "full_attention"] * 2


def _config(model_type: str, **kwargs: object) -> Callable[[], PretrainedConfig]:
    return lambda: AutoConfig.for_model(model_type, **{**_VOCAB, **kwargs})


# family -> config. Every family named in issue 14, today's five included.
SUPPORTED: dict[str, Callable[[], PretrainedConfig]] = {
    "llama": _config("llama", **_DIMS, tie_word_embeddings=True),
    "qwen2": _config("qwen2", **_DIMS, use_sliding_window=True, sliding_window=8,
                     max_window_layers=2),
    "mistral": _config("mistral", **_DIMS, sliding_window=8),
    "gpt2": _config("gpt2", n_embd=64, n_layer=4, n_head=4, n_positions=512, resid_pdrop=0.0,
                    embd_pdrop=0.0, attn_pdrop=0.0),
    "gpt-neox": _config("gpt_neox", hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                        num_attention_heads=4, max_position_embeddings=512,
                        attention_dropout=0.0, hidden_dropout=0.0, tie_word_embeddings=False),
    "gemma2": _config("gemma2", **_DIMS, head_dim=16, sliding_window=8,
                      final_logit_softcapping=0.5, attn_logit_softcapping=5.0),
    "gemma3-text": _config("gemma3_text", **_DIMS, head_dim=16, sliding_window=8,
                           layer_types=_ALTERNATING, final_logit_softcapping=0.5),
    "phi3": _config("phi3", **_DIMS, sliding_window=8, tie_word_embeddings=False),
    "olmo2": _config("olmo2", **_DIMS),
    "granite": _config("granite", **_DIMS, embedding_multiplier=4.0, logits_scaling=3.0,
                       residual_multiplier=0.5, attention_multiplier=0.2),
    "smollm3": _config("smollm3", **_DIMS, no_rope_layer_interval=2, use_sliding_window=True,
                       sliding_window=8),
    "stablelm": _config("stablelm", **_DIMS, partial_rotary_factor=0.5, use_qkv_bias=True),
    "starcoder2": _config("starcoder2", **_DIMS, sliding_window=8, residual_dropout=0.0,
                          embedding_dropout=0.0),
    "glm4": _config("glm4", **_DIMS, head_dim=16),
    "mixtral": _config("mixtral", **_DIMS, sliding_window=8, num_local_experts=4,
                       num_experts_per_tok=2, output_router_logits=True),
    "qwen2-moe": _config("qwen2_moe", **_DIMS, num_experts=4, num_experts_per_tok=2,
                         moe_intermediate_size=32, shared_expert_intermediate_size=64),
}

_SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, vocab_size=257)

# family -> (config, a phrase the refusal must contain). Refused before any weight is read,
# except the last two, which are refused from their loaded structure.
REFUSED: dict[str, tuple[Callable[[], PretrainedConfig], str]] = {
    "t5": (_config("t5", d_model=32, num_layers=2, num_heads=2, d_ff=64, d_kv=16),
           "encoder-decoder"),
    "bart": (_config("bart", d_model=32, encoder_layers=2, decoder_layers=2), "encoder-decoder"),
    "mamba": (_config("mamba", **_SMALL, state_size=4), "state-space"),
    "jamba": (_config("jamba", **_SMALL, attn_layer_period=2, attn_layer_offset=1),
              "state-space"),
    "falcon-h1": (_config("falcon_h1", **_SMALL), "hybrid"),
    "recurrent-gemma": (_config("recurrent_gemma", **_SMALL), "state-space"),
    "gemma3n-text": (_config("gemma3n_text", **_SMALL, num_kv_shared_layers=1),
                     "shares key/value caches"),
    "llama4-text": (_config("llama4_text", **_SMALL), "chunked attention"),
    "lfm2": (_config("lfm2", **_SMALL, full_attn_idxs=[1]), "short-convolution"),
    "rwkv": (_config("rwkv", hidden_size=32, num_hidden_layers=2, attention_hidden_size=32,
                     intermediate_size=64), "recurrent"),
    "opt": (_config("opt", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    ffn_dim=64, word_embed_proj_dim=32), "no place for"),
}
NEEDS_WEIGHTS = ("rwkv", "opt")  # refused after loading, from their structure


def save_tiny(config: PretrainedConfig, folder: Path, seed: int = 0) -> Path:
    """Save a randomly initialised model of `config` (seeded) as a checkpoint folder."""
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(folder)
    return folder


def save_config_only(config: PretrainedConfig, folder: Path) -> Path:
    """A checkpoint folder with this config and an empty weights file: enough for a model
    that must be refused before any weight is read."""
    config.save_pretrained(folder)
    save_file({}, str(folder / "model.safetensors"))
    return folder
