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

from edgesplit.families import layer_kinds

_VOCAB = dict(vocab_size=257, bos_token_id=256, eos_token_id=256, pad_token_id=256)
_DIMS = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512)
_ALTERNATING = ["sliding_attention", "full_attention"] * 2


def _config(model_type: str, **kwargs: object) -> Callable[[], PretrainedConfig]:
    return lambda: AutoConfig.for_model(model_type, **{**_VOCAB, **kwargs})


# family -> config. Every family named in issues 14 and 26, today's five included.
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
    # Decoder layers that return (hidden, attention weights); GPT-J and CodeGen rotate part of
    # each head inside the attention, GPT-Neo alternates global and local (window) layers.
    "gptj": _config("gptj", n_embd=64, n_layer=4, n_head=4, rotary_dim=8, n_positions=512,
                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
    "gpt-neo": _config("gpt_neo", hidden_size=64, num_layers=4, num_heads=4, window_size=8,
                       attention_types=[[["global", "local"], 2]], max_position_embeddings=512,
                       embed_dropout=0.0, attention_dropout=0.0, resid_dropout=0.0),
    "codegen": _config("codegen", n_embd=64, n_layer=4, n_head=4, rotary_dim=8, n_positions=512,
                       n_ctx=512, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
    # ALiBi families: an attention bias built from the padding mask outside the layers.
    # Falcon-7B's layout (rotary, multi-query, parallel attention), then Falcon-RW's (ALiBi,
    # sequential attention, the bias folded into the mask).
    "falcon": _config("falcon", hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                      hidden_dropout=0.0, attention_dropout=0.0),
    "falcon-alibi": _config("falcon", hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                            alibi=True, multi_query=False, parallel_attn=False,
                            hidden_dropout=0.0, attention_dropout=0.0),
    "bloom": _config("bloom", hidden_size=64, n_layer=4, n_head=4, hidden_dropout=0.0,
                     attention_dropout=0.0),  # + a norm on the embeddings
    "mpt": _config("mpt", d_model=64, n_layers=4, n_heads=4, max_seq_len=512),
    # The stack one level deeper, a position table called with the mask (offset by 2 inside),
    # OPT-350m's projections around a narrower embedding and post-norm layers (no final norm).
    "opt-350m": _config("opt", hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                        ffn_dim=128, max_position_embeddings=512, word_embed_proj_dim=32,
                        do_layer_norm_before=False, dropout=0.0, attention_dropout=0.0),
}

_SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, vocab_size=257)

# family -> (config, a pattern the refusal must contain). Refused before any weight is read,
# except NEEDS_WEIGHTS, refused from their loaded structure or by the load probe.
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
    "bert": (_config("bert", **_SMALL, intermediate_size=64, is_decoder=True),
             "encoder \\(masked-LM\\) family"),
    "gemma3": (_config("gemma3"), "multimodal model \\(vision_config"),
    # Its layers take a second attention stream: refused from their signature.
    "xlnet": (_config("xlnet", d_model=32, n_layer=2, n_head=2, d_inner=64),
              "require output_g"),
    # Exact on real tokens, not on padded slots, whose logits enter the loss under left padding
    # (GPT-1 builds its own masks inside its layers): refused by the load probe.
    "openai-gpt": (_config("openai-gpt", n_embd=32, n_layer=2, n_head=2, n_positions=64,
                           resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
                   "differ from the model's own forward"),
}
NEEDS_WEIGHTS = ("rwkv", "xlnet", "openai-gpt")  # refused after loading


# Size attributes of transformers' configs (their many spellings) and the tiny value each takes
# in `tiny_config`; an attribute a family does not have is left alone.
_TINY_SIZES = {
    **dict.fromkeys(("hidden_size", "n_embd", "d_model", "embed_dim"), 64),
    **dict.fromkeys(("intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size", "d_ff",
                     "decoder_ffn_dim", "encoder_ffn_dim"), 128),
    **dict.fromkeys(("num_hidden_layers", "n_layer", "n_layers", "num_layers", "decoder_layers",
                     "encoder_layers"), 4),
    **dict.fromkeys(("num_attention_heads", "n_head", "n_heads", "num_heads",
                     "decoder_attention_heads", "encoder_attention_heads"), 4),
    **dict.fromkeys(("num_key_value_heads", "num_kv_heads", "n_kv_heads"), 2),
    **dict.fromkeys(("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"),
                    4),
    **dict.fromkeys(("num_experts_per_tok", "moe_topk"), 2),
    "n_shared_experts": 1,
    **dict.fromkeys(("n_group", "topk_group"), 1),  # expert groups: one group of 4
    **dict.fromkeys(("head_dim", "kv_lora_rank", "v_head_dim"), 16),
    **dict.fromkeys(("qk_rope_head_dim", "qk_nope_head_dim"), 8),
    **dict.fromkeys(("moe_intermediate_size", "q_lora_rank"), 32),
    **dict.fromkeys(("max_position_embeddings", "n_positions", "max_seq_len"), 512),
}


_ROPE = {"rope_type": "default", "rope_theta": 10000.0}
# Families whose shrunk config needs more to build and run in transformers itself.
_TINY_OVERRIDES: dict[str, dict[str, object]] = {
    "dots3_note_text": {"head_dim": 16},  # its sliding layers' head: nope + rope dims
    # Their default configs have no convolution layers; released checkpoints alternate them.
    "lfm2": {"layer_types": ["conv", "full_attention"] * 2},
    "lfm2_moe": {"layer_types": ["conv", "full_attention"] * 2},
    "zaya": {"num_experts_per_tok": 1},  # the only routing it implements
    "cohere_compass_text": {"rope_parameters": {"full_attention": _ROPE,
                                                "sliding_attention": _ROPE}},
    "mamba2": {"head_dim": 32, "n_groups": 1},  # heads * head_dim = expand * hidden
    "zamba2": {"layers_block_type": ["mamba", "hybrid"] * 2},  # default: a 54-layer pattern
    # Its default config does not validate: the drafter has no per-layer inputs.
    "gemma4_assistant": {"text_config": {"hidden_size_per_layer_input": 0,
                                         "vocab_size_per_layer_input": 0}},
}


def tiny_config(model_type: str) -> PretrainedConfig:
    """A tiny config of any family: its own test config above if it has one (by name: the
    `falcon-alibi` and `opt-350m` layouts are extra rows), else transformers' default config
    with every size attribute it has shrunk (`_TINY_SIZES`; sub-configs such as a vision
    tower's too), dropouts 0, a sliding window (if any) of 8 tokens, a 257-token vocabulary,
    and what a few families need besides (`_TINY_OVERRIDES`)."""
    for name, build in SUPPORTED.items():
        if name.replace("-", "_") == model_type.replace("-", "_"):
            return build()
    extra = _TINY_OVERRIDES.get(model_type, {})
    try:
        default = AutoConfig.for_model(model_type)
    except Exception:  # noqa: BLE001 (a default that only validates with the overrides)
        default = AutoConfig.for_model(model_type, **extra)
    values = {**_tiny_values(default), **_VOCAB}
    for key, value in extra.items():  # sub-config overrides join the shrunk sub-config
        values[key] = ({**values[key], **value} if isinstance(value, dict)
                       and isinstance(values.get(key), dict) else value)
    tiny = AutoConfig.for_model(model_type, **values)
    return _with_every_layer_kind(default, tiny, values)


def _with_every_layer_kind(default: PretrainedConfig, tiny: PretrainedConfig,
                           values: dict[str, object]) -> PretrainedConfig:
    """The tiny config, its layer kinds cycled through every kind the default config has if
    the first layers alone lost one (Gemma 3's fifth-layer globals, a hybrid's attention)."""
    try:
        kinds = list(dict.fromkeys(layer_kinds(default)))
        if set(kinds) <= set(layer_kinds(tiny)):
            return tiny
        cycled = [kinds[i % len(kinds)] for i in range(tiny.num_hidden_layers)]
        return AutoConfig.for_model(tiny.model_type, **{**values, "layer_types": cycled})
    except Exception:  # noqa: BLE001 (a config that will not take the cycle: keep the tiny one)
        return tiny


def _tiny_values(config: PretrainedConfig) -> dict[str, object]:
    """The shrunk values of one config's attributes (sub-configs as dicts, shrunk alike)."""
    values = config.to_dict()
    known = set(values) | set(getattr(config, "attribute_map", {}))
    tiny: dict[str, object] = {}
    tiny: dict[str, object] = {name: size for name, size in _TINY_SIZES.items() if name in known}
    if "qk_rope_head_dim" in tiny:  # multi-head latent attention: one key/value head per query
        tiny["num_key_value_heads"] = tiny["num_attention_heads"]  # head, and a rotary table
        if "head_dim" in tiny:  # as wide as the rotary part of a head
            tiny["head_dim"] = tiny["qk_rope_head_dim"]
    tiny |= {k: 0.0 for k, v in values.items()
             if ("dropout" in k or "pdrop" in k) and isinstance(v, float)}
    if isinstance(values.get("sliding_window"), int):
        tiny["sliding_window"] = 8
    if "vocab_size_per_layer_input" in values:
        tiny["vocab_size_per_layer_input"] = _VOCAB["vocab_size"]
    if values.get("per_layer_config"):  # per-layer overrides of the full-size layer count
        tiny["per_layer_config"] = {}
    for name in getattr(config, "sub_configs", {}) or {}:
        sub = getattr(config, name, None)
        if isinstance(sub, PretrainedConfig):
            tiny[name] = {**_tiny_values(sub), **_TINY_OVERRIDES.get(sub.model_type, {})}
    return tiny


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
