"""How to drive a dense decoder-only causal LM piecewise, read off the loaded model itself.

Once split, every supported model runs the same way: embed -> decoder layers -> final norm ->
LM head. `describe` finds those pieces in a loaded `*ForCausalLM` by their role, not by a
per-family table: the input embeddings (`get_input_embeddings()`), the ModuleList of
`num_hidden_layers` decoder blocks, the one norm beside them, the rotary table, a learned
absolute-position table (GPT-2's `wpe`) and embedding dropout; the LM head is
`get_output_embeddings()`; LoRA targets are the linear layers inside the blocks. What a few
families do outside their modules is switched on by the config attribute that holds it
(`EMBEDDING_SCALARS`, `LOGIT_SCALARS`: the override table). A model whose structure this cannot
account for is refused with the reason (`UnsupportedModel`), before or after loading.

Which mask each layer needs (`layer_kinds`) and the positions both sides derive from the 2-D
padding mask are the rules that make the split exact (see split-recipe.md).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING
from transformers.pytorch_utils import Conv1D

MASKS = {"full_attention": create_causal_mask,
         "sliding_attention": create_sliding_window_causal_mask}

# Layer kinds of transformers' `config.layer_types` that are not attention: why each is refused.
_KIND_REASONS = {
    "linear_attention": "state-space or linear-recurrent layers (Mamba, RecurrentGemma, "
                        "DeltaNet...) carry a recurrent state along the sequence",
    "hybrid": "hybrid layers run a state-space mixer beside attention",
    "conv": "short-convolution layers carry a convolution state along the sequence",
    "chunked_attention": "chunked attention (Llama 4) needs a mask the split does not build",
}
# Module classes inside a decoder block that mean a recurrent or state-space layer, for models
# whose config does not list layer kinds (RWKV, xLSTM).
_RECURRENT = re.compile(r"Mamba|Rwkv|RWKV|Recurrent|Rglru|RgLru|ShortConv|DeltaNet|xLSTM|mLSTM|"
                        r"Ssm|SSM|LinearAttention")
# Linear layers inside a block that decide routing or gating (MoE routers, Qwen2-MoE's shared
# expert gate) are not adapted: LoRA on them would change which experts run.
_ROUTER = re.compile(r"(^|_)(gate|router)$")

# The override table: scalars some families apply outside their modules, switched on by the
# config attribute that holds them (the families they come from, as verified by the oracle test).
EMBEDDING_SCALARS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "embedding_multiplier": lambda x, m: x * m,  # Granite
}
LOGIT_SCALARS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "final_logit_softcapping": lambda x, cap: torch.tanh(x / cap) * cap,  # Gemma 2, Gemma 3
    "logits_scaling": lambda x, s: x / s,  # Granite
    "logit_scale": lambda x, s: x * s,  # Cohere
}


class UnsupportedModel(ValueError):
    """A checkpoint the split cannot run exactly, with the reason."""


@dataclass(frozen=True)
class Architecture:
    """Where one loaded causal LM keeps the pieces a split runs through (attribute names).

    Attributes
    ----------
    backbone_attr : str
        Attribute of the `*ForCausalLM` holding the decoder stack (its `base_model_prefix`).
    layers_attr, norm_attr : str
        Attributes of the backbone: the decoder blocks (also peft's `layers_pattern`), the
        final norm.
    rotary_attr : str or None
        The backbone's rotary embedding, if any.
    rotary_by_kind : bool
        The rotary embedding takes the layer kind (Gemma 3: one table per attention kind).
    positions_attr : str or None
        A learned absolute-position table added to the token embeddings (GPT-2).
    dropout_attrs : tuple of str
        Dropouts of the backbone itself, applied to the embeddings.
    embedding_scalars, logit_scalars : tuple of (config attribute, value)
        Entries of `EMBEDDING_SCALARS` / `LOGIT_SCALARS` this model's config switches on.
    lora_targets : tuple of str
        Names of the linear layers inside the blocks (attention + MLP), routers left out.
    lora_parameters : tuple of str
        Mixture-of-experts weights stored as one 3-D parameter per projection
        (`experts.gate_up_proj`), adapted through peft's `target_parameters`.
    fan_in_fan_out : bool
        The targets are GPT-2 style `Conv1D` layers.
    """

    backbone_attr: str
    layers_attr: str
    norm_attr: str
    rotary_attr: str | None
    rotary_by_kind: bool
    positions_attr: str | None
    dropout_attrs: tuple[str, ...]
    embedding_scalars: tuple[tuple[str, float], ...]
    logit_scalars: tuple[tuple[str, float], ...]
    lora_targets: tuple[str, ...]
    lora_parameters: tuple[str, ...]
    fan_in_fan_out: bool

    def backbone(self, model: nn.Module) -> nn.Module:
        """The decoder stack of a `*ForCausalLM`."""
        return getattr(model, self.backbone_attr)

    def embed(self, model: PreTrainedModel, input_ids: torch.Tensor,
              position_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings (+ scalars, + learned positions), then embedding dropout."""
        hidden = model.get_input_embeddings()(input_ids)
        for name, value in self.embedding_scalars:
            hidden = EMBEDDING_SCALARS[name](hidden, value)
        backbone = self.backbone(model)
        if self.positions_attr:
            hidden = hidden + getattr(backbone, self.positions_attr)(position_ids)
        for name in self.dropout_attrs:
            hidden = getattr(backbone, name)(hidden)
        return hidden

    def position_embeddings(self, model: nn.Module, hidden: torch.Tensor,
                            position_ids: torch.Tensor, kinds: set[str]
                            ) -> dict[str, tuple[torch.Tensor, torch.Tensor] | None]:
        """The rotary (cos, sin) each layer kind needs; None for every kind without rotary."""
        if self.rotary_attr is None:
            return dict.fromkeys(kinds)
        rotary = getattr(self.backbone(model), self.rotary_attr)
        if self.rotary_by_kind:
            return {kind: rotary(hidden, position_ids, kind) for kind in kinds}
        shared = rotary(hidden, position_ids)
        return dict.fromkeys(kinds, shared)

    def logits(self, model: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm, LM head, and the logit scalars the model applies after it."""
        hidden = getattr(self.backbone(model), self.norm_attr)(hidden)
        logits = model.get_output_embeddings()(hidden)
        for name, value in self.logit_scalars:
            logits = LOGIT_SCALARS[name](logits, value)
        return logits


def layer_kinds(config: PretrainedConfig) -> list[str]:
    """Mask kind per absolute layer index ('full_attention', 'sliding_attention', or a
    non-attention kind that `check_config` refuses)."""
    n = config.num_hidden_layers
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        return list(layer_types[:n])
    # Families without layer_types (Mistral, Mixtral, Phi-3, Starcoder2) use the sliding-window
    # mask in every layer when a window is set.
    if getattr(config, "sliding_window", None):
        return ["sliding_attention"] * n
    return ["full_attention"] * n


def check_config(config: PretrainedConfig) -> None:
    """Refuse, before any weight is read, a model whose split could not be exact.

    Raises
    ------
    UnsupportedModel
        Encoder-decoder models, models with no causal-LM class, non-attention layers
        (state-space, recurrent, convolutional, hybrid), key/value caches shared across
        layers, and bidirectional attention.
    """
    name = config.model_type
    if getattr(config, "is_encoder_decoder", False):
        raise UnsupportedModel(f"{name} is an encoder-decoder model: every decoder layer attends "
                               "to the encoder's output, so more than one hidden state would "
                               "have to cross the cut")
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise UnsupportedModel(f"{name} has no causal-LM class in transformers "
                               "(AutoModelForCausalLM cannot load it)")
    odd = sorted(set(layer_kinds(config)) - set(MASKS))
    if odd:
        reasons = "; ".join(_KIND_REASONS.get(kind, f"{kind!r} is not an attention kind")
                            for kind in odd)
        raise UnsupportedModel(f"{name} has {'/'.join(odd)} layers: {reasons}. Only full and "
                               "sliding-window attention layers split exactly (the split rebuilds "
                               "each layer's mask and positions from the padding mask alone)")
    if getattr(config, "num_kv_shared_layers", 0):
        raise UnsupportedModel(f"{name} shares key/value caches across layers "
                               "(num_kv_shared_layers): later layers read state computed on the "
                               "other side of the cut")
    if getattr(config, "use_bidirectional_attention", False):
        raise UnsupportedModel(f"{name} is configured with bidirectional attention, not causal")


def describe(model: PreTrainedModel) -> Architecture:
    """Find the pieces of a loaded `*ForCausalLM` by their role; refuse what has no role.

    Raises
    ------
    UnsupportedModel
        If the backbone holds a module the split cannot place, has no list of
        `num_hidden_layers` blocks or not exactly one final norm, or its blocks contain
        recurrent layers or share weights.
    """
    config, name = model.config, model.config.model_type
    backbone = getattr(model, model.base_model_prefix, None)
    if not isinstance(backbone, nn.Module) or backbone is model:
        raise UnsupportedModel(f"{name}: no decoder stack under {model.base_model_prefix!r}")
    embeddings = model.get_input_embeddings()
    layers_attr, rotary_attr = None, None
    norms, positions, dropouts, unknown = [], [], [], []
    for attr, child in backbone.named_children():
        kind = type(child).__name__
        if child is embeddings:
            continue
        if (isinstance(child, nn.ModuleList) and len(child) == config.num_hidden_layers
                and layers_attr is None):
            layers_attr = attr
        elif kind.endswith("RotaryEmbedding") and rotary_attr is None:
            rotary_attr = attr
        elif "Norm" in kind:
            norms.append(attr)
        elif type(child) is nn.Embedding:  # exactly: subclasses (OPT's) take other arguments
            positions.append(attr)
        elif isinstance(child, nn.Dropout):
            dropouts.append(attr)
        else:
            unknown.append(f"{attr} ({kind})")
    if unknown:
        raise UnsupportedModel(f"{name}: the split has no place for {', '.join(unknown)} in "
                               "the decoder stack; such a family needs an entry in "
                               "edgesplit/families.py")
    if layers_attr is None:
        raise UnsupportedModel(f"{name}: no list of {config.num_hidden_layers} decoder layers")
    if len(norms) != 1 or len(positions) > 1:
        raise UnsupportedModel(f"{name}: expected one final norm and at most one position "
                               f"table beside the layers, found norms {norms}, tables {positions}")
    layers = getattr(backbone, layers_attr)
    _refuse_recurrent_or_shared(name, layers)
    targets, conv1d = _linear_layers(layers)
    rotary = getattr(backbone, rotary_attr) if rotary_attr else None
    return Architecture(
        backbone_attr=model.base_model_prefix, layers_attr=layers_attr, norm_attr=norms[0],
        rotary_attr=rotary_attr,
        rotary_by_kind=rotary is not None
        and "layer_type" in inspect.signature(rotary.forward).parameters,
        positions_attr=positions[0] if positions else None, dropout_attrs=tuple(dropouts),
        embedding_scalars=_scalars(config, EMBEDDING_SCALARS),
        logit_scalars=_scalars(config, LOGIT_SCALARS),
        lora_targets=targets, lora_parameters=_expert_parameters(layers), fan_in_fan_out=conv1d)


def _refuse_recurrent_or_shared(name: str, layers: nn.ModuleList) -> None:
    owner: dict[int, int] = {}
    for index, layer in enumerate(layers):
        for module in layer.modules():
            if _RECURRENT.search(type(module).__name__):
                raise UnsupportedModel(f"{name}: layer {index} holds {type(module).__name__}, a "
                                       "recurrent or state-space layer that carries a state "
                                       "along the sequence")
        for param in layer.parameters():
            if owner.setdefault(id(param), index) != index:
                raise UnsupportedModel(f"{name}: layers {owner[id(param)]} and {index} share "
                                       "weights, so a per-layer adapter cannot be split")


def _linear_layers(layers: nn.ModuleList) -> tuple[tuple[str, ...], bool]:
    """Leaf names of the linear layers inside the blocks (routers left out), in order of first
    appearance, and whether they are GPT-2 `Conv1D`s."""
    found: dict[str, type] = {}
    for layer in layers:
        for qualified, module in layer.named_modules():
            leaf = qualified.rpartition(".")[2]
            if isinstance(module, nn.Linear | Conv1D) and not _ROUTER.search(leaf):
                found.setdefault(leaf, type(module))
    kinds = set(found.values())
    if Conv1D in kinds and len(kinds) > 1:
        raise UnsupportedModel("blocks mix Conv1D and Linear layers (peft adapts one kind)")
    return tuple(found), kinds == {Conv1D}


def _expert_parameters(layers: nn.ModuleList) -> tuple[str, ...]:
    """`<module>.<parameter>` of the 3-D weights inside the blocks that are not convolution
    kernels: fused MoE experts, one (experts, out, in) stack per projection."""
    found: dict[str, None] = {}
    for layer in layers:
        for qualified, module in layer.named_modules():
            if isinstance(module, nn.modules.conv._ConvNd):
                continue
            for attr, param in module.named_parameters(recurse=False):
                if param.ndim == 3:
                    found.setdefault(f"{qualified.rpartition('.')[2]}.{attr}")
    return tuple(found)


def _scalars(config: PretrainedConfig, table: dict) -> tuple[tuple[str, float], ...]:
    return tuple((attr, float(getattr(config, attr))) for attr in table
                 if getattr(config, attr, None) is not None)


def build_masks(config: PretrainedConfig, hidden: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor, kinds: set[str]) -> dict[str, torch.Tensor | None]:
    """Build the 4-D masks the given layer kinds need from the 2-D padding mask.

    Only the shape, dtype and device of `hidden` matter, so either side of a split rebuilds the
    same masks from the small 2-D mask and positions that travel with the activations.
    """
    kwargs = dict(config=config, inputs_embeds=hidden, attention_mask=attention_mask,
                  past_key_values=None, position_ids=position_ids)
    return {kind: MASKS[kind](**kwargs) for kind in kinds}


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only real tokens, so left padding does not shift positions.

    Padding slots get position 0 (never -1, which would index past GPT-2's position table).
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
