"""Where each supported transformers family keeps its embeddings, decoder layers and final norm.

Every family runs the same way once split: embed -> decoder layers -> final norm -> LM head.
What differs is where those modules live, how a layer is called, and which masks a layer needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask


@dataclass(frozen=True)
class Family:
    """How to drive one transformers model family piecewise.

    Attributes
    ----------
    backbone_attr : str
        Attribute of the `*ForCausalLM` module holding the decoder stack.
    layers_attr : str
        Attribute of the backbone holding the decoder layers (also peft's `layers_pattern`).
    norm_attr : str
        Attribute of the backbone holding the final norm.
    lora_targets : tuple of str
        Default LoRA target modules (attention and MLP projections).
    fan_in_fan_out : bool
        True when the targets are GPT-2 style `Conv1D` layers.
    embed : callable
        `embed(backbone, input_ids, position_ids) -> hidden` (dropout included).
    """

    backbone_attr: str
    layers_attr: str
    norm_attr: str
    lora_targets: tuple[str, ...]
    embed: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    fan_in_fan_out: bool = False


def _embed_llama(backbone: nn.Module, input_ids: torch.Tensor, _pos: torch.Tensor) -> torch.Tensor:
    return backbone.embed_tokens(input_ids)


def _embed_gpt2(backbone: nn.Module, input_ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    return backbone.drop(backbone.wte(input_ids) + backbone.wpe(pos))


def _embed_neox(backbone: nn.Module, input_ids: torch.Tensor, _pos: torch.Tensor) -> torch.Tensor:
    return backbone.emb_dropout(backbone.embed_in(input_ids))


_LLAMA_STYLE = Family(
    backbone_attr="model",
    layers_attr="layers",
    norm_attr="norm",
    lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    embed=_embed_llama,
)

FAMILIES: dict[str, Family] = {
    "llama": _LLAMA_STYLE,
    "qwen2": _LLAMA_STYLE,
    "mistral": _LLAMA_STYLE,
    "gpt2": Family(
        backbone_attr="transformer",
        layers_attr="h",
        norm_attr="ln_f",
        lora_targets=("c_attn", "c_proj", "c_fc"),
        embed=_embed_gpt2,
        fan_in_fan_out=True,
    ),
    "gpt_neox": Family(
        backbone_attr="gpt_neox",
        layers_attr="layers",
        norm_attr="final_layer_norm",
        lora_targets=("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
        embed=_embed_neox,
    ),
}


def family_of(model_type: str) -> Family:
    """Return the family spec for a `config.model_type`, with a clear error if unsupported."""
    try:
        return FAMILIES[model_type]
    except KeyError:
        supported = ", ".join(sorted(FAMILIES))
        raise ValueError(
            f"model_type {model_type!r} is not supported for splitting; supported: {supported}"
        ) from None


def layer_attention_types(config) -> list[str]:
    """Mask kind per absolute layer index: 'full_attention' or 'sliding_attention'."""
    n = config.num_hidden_layers
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        return list(layer_types[:n])
    # Mistral has no layer_types: a set sliding_window applies to every layer.
    if config.model_type == "mistral" and getattr(config, "sliding_window", None):
        return ["sliding_attention"] * n
    return ["full_attention"] * n


def build_masks(config, hidden: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor, kinds: set[str]) -> dict[str, torch.Tensor | None]:
    """Build the 4-D masks the given layer kinds need from the 2-D padding mask.

    Only the shape, dtype and device of `hidden` matter, so either side of a split rebuilds the
    same masks from the small 2-D mask and positions that travel with the activations.
    """
    kwargs = dict(config=config, inputs_embeds=hidden, attention_mask=attention_mask,
                  past_key_values=None, position_ids=position_ids)
    builders = {"full_attention": create_causal_mask,
                "sliding_attention": create_sliding_window_causal_mask}
    return {kind: builders[kind](**kwargs) for kind in kinds}


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only real tokens, so left padding does not shift positions.

    Padding slots get position 0 (never -1, which would index past GPT-2's position table).
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
