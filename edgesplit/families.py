"""How to drive a dense decoder-only causal LM piecewise, read off the loaded model itself.

Once split, every supported model runs the same way: embed -> decoder layers -> final norm ->
LM head. `describe` finds those pieces in a loaded `*ForCausalLM` by their role, not by a
per-family table: the input embeddings (`get_input_embeddings()`), the ModuleList of
`num_hidden_layers` decoder blocks, the one norm beside them, the rotary table, a learned
absolute-position table (GPT-2's `wpe`; OPT's, called with the padding mask), an embedding
norm (BLOOM), OPT-350m's projections in and out, and embedding dropout, in the backbone or one
level deeper (OPT's `model.decoder`); the LM head is `get_output_embeddings()`; LoRA targets
are the linear layers inside the blocks.
Decoder layers may return a tensor or a tuple whose first entry is the hidden state (GPT-J,
GPT-Neo, CodeGen, Falcon, BLOOM, MPT). What a few families do outside their modules is switched
on by the config attribute that holds it (`EMBEDDING_SCALARS`, `LOGIT_SCALARS`: the override
table); the ALiBi families' attention biases, built by the backbone from the padding mask, are
rebuilt by the family's own transformers function (`ATTENTION_BIASES`, by model type). A model
whose structure this cannot account for is refused with the reason (`UnsupportedModel`), before
or after loading.

Which mask each layer needs (`layer_kinds`) and the positions both sides derive from the 2-D
padding mask are the rules that make the split exact (see split-recipe.md).
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING,
    MODEL_FOR_MASKED_LM_MAPPING,
    MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING,
    MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING,
)
from transformers.models.bloom import modeling_bloom
from transformers.models.falcon import modeling_falcon
from transformers.models.mpt import modeling_mpt
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
# Sub-configs that mean inputs other than text tokens (vision towers, audio encoders, image
# tokenizers, Moshi's audio depth decoder).
_MODALITY = re.compile(r"vision|audio|image|speech|visual|vq|depth")
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


def _falcon_inputs(config: PretrainedConfig, hidden: torch.Tensor,
                   attention_mask: torch.Tensor) -> dict[str, Any]:
    """FalconModel's layer inputs: a mask that is always materialised, and with ALiBi the bias
    folded into it (scaled by 1/sqrt(head_dim)) besides being passed on its own."""
    mask = create_causal_mask(config=config, inputs_embeds=hidden, attention_mask=attention_mask,
                              past_key_values=None, allow_is_causal_skip=False)
    if not config.alibi:
        return {"attention_mask": mask, "alibi": None}
    heads = config.num_attention_heads
    alibi = modeling_falcon.build_alibi_tensor(attention_mask, heads, dtype=hidden.dtype)
    if mask is not None and mask.ndim == 4:
        lowest = torch.finfo(hidden.dtype).min
        if mask.dtype == torch.bool:
            mask = torch.where(mask, torch.zeros((), dtype=hidden.dtype, device=mask.device),
                               lowest)
        alibi = alibi.reshape(hidden.shape[0], -1, *alibi.shape[1:])
        mask = torch.masked_fill(alibi / math.sqrt(config.hidden_size // heads), mask < -1,
                                 lowest)
    return {"attention_mask": mask, "alibi": alibi}


def _bloom_inputs(config: PretrainedConfig, hidden: torch.Tensor,
                  attention_mask: torch.Tensor) -> dict[str, Any]:
    """BloomModel's ALiBi: slopes times the count of real tokens before each key."""
    return {"alibi": modeling_bloom.build_alibi_tensor(attention_mask, config.n_head,
                                                       dtype=hidden.dtype)}


def _mpt_inputs(config: PretrainedConfig, hidden: torch.Tensor,
                attention_mask: torch.Tensor) -> dict[str, Any]:
    """MptModel's ALiBi over the configured maximum length, and its mask as booleans (True:
    masked), as its attention expects."""
    mask = create_causal_mask(config=config, inputs_embeds=hidden, attention_mask=attention_mask,
                              past_key_values=None).to(torch.bool)
    bias = modeling_mpt.build_mpt_alibi_tensor(config.n_heads, config.max_seq_len,
                                               device=hidden.device)
    return {"attention_mask": mask, "position_bias": bias}


# ALiBi families: their backbone builds an attention bias from the 2-D padding mask and hands it
# to every layer (Falcon also folds it into the mask). Each side of a cut rebuilds it with the
# family's own transformers function; the inputs returned (named beside it) replace or join the
# generic ones.
ATTENTION_BIASES: dict[str, tuple[Callable[[PretrainedConfig, torch.Tensor, torch.Tensor],
                                           dict[str, Any]], frozenset[str]]] = {
    "falcon": (_falcon_inputs, frozenset({"attention_mask", "alibi"})),
    "bloom": (_bloom_inputs, frozenset({"alibi"})),
    "mpt": (_mpt_inputs, frozenset({"attention_mask", "position_bias"})),
}
# What the split passes every decoder layer; a layer that requires anything else is refused.
_GENERIC_INPUTS = {"attention_mask", "position_ids", "position_embeddings"}
# Families that apply their final norm to the embeddings too (the same module, so `describe`
# cannot see it), by model type.
REUSED_EMBEDDING_NORMS = {"nanochat": "norm"}


class UnsupportedModel(ValueError):
    """A checkpoint the split cannot run exactly, with the reason."""


@dataclass(frozen=True)
class Architecture:
    """Where one loaded causal LM keeps the pieces a split runs through (attribute names).

    Attributes
    ----------
    backbone_attr : str
        Attribute of the `*ForCausalLM` holding the decoder stack (its `base_model_prefix`),
        dotted when the stack sits one level deeper (OPT's `model.decoder`).
    layers_attr : str
        Attribute of the backbone holding the decoder blocks (also peft's `layers_pattern`).
    norm_attr : str or None
        The backbone's final norm; None for post-norm models that end on a block (GPT-1).
    rotary_attr : str or None
        The backbone's rotary embedding, if any.
    rotary_by_kind : bool
        The rotary embedding takes the layer kind (Gemma 3: one table per attention kind).
    positions_attr : str or None
        A learned absolute-position table added to the token embeddings (GPT-2).
    positions_from_mask : bool
        The position table is called with the padding mask and the positions (OPT's, which
        offsets them by 2 inside) rather than with the positions alone.
    project_in_attr, project_out_attr : str or None
        Linear maps between the embedding width and the layers' width, before the positions
        are added and after the final norm (OPT-350m).
    embedding_norm_attr : str or None
        A norm applied to the embeddings before the first layer (BLOOM).
    attention_bias : str or None
        Key of `ATTENTION_BIASES`: the ALiBi family whose bias the layers take.
    layer_parameters : frozenset of str or None
        The keyword inputs a decoder layer accepts; None when it takes any (`**kwargs`).
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
    norm_attr: str | None
    rotary_attr: str | None
    rotary_by_kind: bool
    positions_attr: str | None
    positions_from_mask: bool
    project_in_attr: str | None
    project_out_attr: str | None
    embedding_norm_attr: str | None
    attention_bias: str | None
    layer_parameters: frozenset[str] | None
    dropout_attrs: tuple[str, ...]
    embedding_scalars: tuple[tuple[str, float], ...]
    logit_scalars: tuple[tuple[str, float], ...]
    lora_targets: tuple[str, ...]
    lora_parameters: tuple[str, ...]
    fan_in_fan_out: bool

    def backbone(self, model: nn.Module) -> nn.Module:
        """The decoder stack of a `*ForCausalLM`."""
        for attr in self.backbone_attr.split("."):
            model = getattr(model, attr)
        return model

    def embed(self, model: PreTrainedModel, input_ids: torch.Tensor,
              attention_mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings (+ scalars, projected in, + learned positions, then the embedding
        norm), then embedding dropout."""
        hidden = model.get_input_embeddings()(input_ids)
        for name, value in self.embedding_scalars:
            hidden = EMBEDDING_SCALARS[name](hidden, value)
        backbone = self.backbone(model)
        if self.project_in_attr:
            hidden = getattr(backbone, self.project_in_attr)(hidden)
        if self.positions_attr:
            table = getattr(backbone, self.positions_attr)
            hidden = hidden + (table(attention_mask, 0, position_ids=position_ids)
                               if self.positions_from_mask else table(position_ids))
        if self.embedding_norm_attr:
            hidden = getattr(backbone, self.embedding_norm_attr)(hidden)
        for name in self.dropout_attrs:
            hidden = getattr(backbone, name)(hidden)
        return hidden

    def layer_inputs(self, model: PreTrainedModel, hidden: torch.Tensor,
                     attention_mask: torch.Tensor, position_ids: torch.Tensor, kinds: set[str]
                     ) -> dict[str, dict[str, Any]]:
        """The keyword arguments a decoder layer of each kind takes besides the hidden state,
        rebuilt from the 2-D padding mask and positions alone: its 4-D mask, the positions, the
        rotary (cos, sin) if the model has a rotary table, and an ALiBi family's bias."""
        masks = build_masks(model.config, hidden, attention_mask, position_ids, kinds)
        rotary = self._rotary(model, hidden, position_ids, kinds)
        bias = ({} if self.attention_bias is None else
                ATTENTION_BIASES[self.attention_bias][0](model.config, hidden, attention_mask))
        inputs = {kind: {"attention_mask": masks[kind], "position_ids": position_ids,
                         **({} if rotary[kind] is None else
                            {"position_embeddings": rotary[kind]}),
                         **bias} for kind in kinds}
        if self.layer_parameters is None:
            return inputs
        return {kind: {k: v for k, v in given.items() if k in self.layer_parameters}
                for kind, given in inputs.items()}

    def _rotary(self, model: nn.Module, hidden: torch.Tensor, position_ids: torch.Tensor,
                kinds: set[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor] | None]:
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
        backbone = self.backbone(model)
        if self.norm_attr:
            hidden = getattr(backbone, self.norm_attr)(hidden)
        if self.project_out_attr:
            hidden = getattr(backbone, self.project_out_attr)(hidden)
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
        Encoder-decoder models and their decoder halves, encoders run as decoders, multimodal
        models, models with no causal-LM class or no single layer stack, non-attention layers
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
    _refuse_other_model_kinds(config)
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


def _refuse_other_model_kinds(config: PretrainedConfig) -> None:
    """Refuse what transformers' causal-LM classes load beside decoder-only text models: the
    decoder half of an encoder-decoder family, encoders run as decoders, multimodal models and
    models made of several stacks."""
    name, kind = config.model_type, type(config)
    if kind in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING or kind in MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING:
        raise UnsupportedModel(f"{name} is an encoder-decoder family: its causal-LM class runs "
                               "the decoder half alone (layers nested under the decoder, with "
                               "cross-attention slots and the decoder's own position and "
                               "embedding layout), which the split has no entry for; it runs "
                               "decoder-only checkpoints")
    if kind in MODEL_FOR_MASKED_LM_MAPPING:
        raise UnsupportedModel(f"{name} is an encoder (masked-LM) family: its causal-LM class "
                               "reuses the encoder's layout (an embeddings block adding positions "
                               "and token types under a norm, layers nested in the encoder), "
                               "which the split has no entry for; it runs decoder-only "
                               "checkpoints")
    parts = sorted(getattr(config, "sub_configs", None) or {})
    modalities = [part for part in parts if _MODALITY.search(part)]
    if modalities:
        text = getattr(config, "text_config", None)
        hint = (f"; its text decoder alone (model type {text.model_type}) is a separate "
                "checkpoint to check" if isinstance(text, PretrainedConfig) else "")
        raise UnsupportedModel(f"{name} is a multimodal model ({', '.join(modalities)} beside "
                               "the text decoder): inputs other than tokens enter the model, so "
                               "more than one text sequence's hidden states would have to cross "
                               f"the cut; the split runs text-only decoder checkpoints{hint}")
    if not isinstance(getattr(config, "num_hidden_layers", None), int):
        raise UnsupportedModel(f"{name} has no single stack of decoder layers (no "
                               f"num_hidden_layers; its config is made of {', '.join(parts)})")


def describe(model: PreTrainedModel) -> Architecture:
    """Find the pieces of a loaded `*ForCausalLM` by their role; refuse what has no role.

    Raises
    ------
    UnsupportedModel
        If the backbone holds a module the split cannot place, has no list of
        `num_hidden_layers` blocks or not exactly one final norm (with at most one embedding
        norm before the blocks), its blocks require inputs the split does not build, contain
        recurrent layers or share weights.
    """
    config, name = model.config, model.config.model_type
    backbone_attr = model.base_model_prefix
    backbone = getattr(model, backbone_attr, None)
    if not isinstance(backbone, nn.Module) or backbone is model:
        raise UnsupportedModel(f"{name}: no decoder stack under {model.base_model_prefix!r}")
    children = dict(backbone.named_children())
    if list(children) == ["decoder"]:  # the whole stack one level deeper (OPT)
        backbone_attr, backbone = f"{backbone_attr}.decoder", children["decoder"]
    embeddings = model.get_input_embeddings()
    layers_attr, rotary_attr = None, None
    norms, positions, dropouts, unknown = [], [], [], []  # norms: (attr, before the layers)
    projections = {}
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
            norms.append((attr, layers_attr is None))
        elif isinstance(child, nn.Embedding) and _position_call(child) is not None:
            positions.append(attr)
        elif attr in ("project_in", "project_out") and isinstance(child, nn.Linear):
            projections[attr] = attr
        elif isinstance(child, nn.Dropout):
            dropouts.append(attr)
        elif isinstance(child, nn.ModuleList):
            unknown.append(f"{attr} (a list of {len(child)} modules where the config has "
                           f"{config.num_hidden_layers} layers)")
        else:
            unknown.append(f"{attr} ({kind})")
    nested = [entry for entry in unknown if entry.split()[0] in ("decoder", "encoder")]
    if nested:
        raise UnsupportedModel(f"{name}: its layers are nested one level deeper, in "
                               f"{', '.join(nested)}, beside that stack's own position table "
                               "and projections; the split has no entry for this layout")
    if unknown:
        raise UnsupportedModel(f"{name}: the split has no place for {', '.join(unknown)} in "
                               "the decoder stack; such a family needs an entry in "
                               "edgesplit/families.py")
    if layers_attr is None:
        raise UnsupportedModel(f"{name}: no list of {config.num_hidden_layers} decoder layers")
    final_norm, embedding_norm = _final_and_embedding_norm(name, norms)
    if len(positions) > 1:
        raise UnsupportedModel(f"{name}: expected at most one position table beside the layers, "
                               f"found {positions}")
    layers = getattr(backbone, layers_attr)
    _refuse_recurrent_or_shared(name, layers)
    attention_bias = config.model_type if config.model_type in ATTENTION_BIASES else None
    _refuse_unknown_layer_inputs(name, layers[0], attention_bias)
    signature = inspect.signature(layers[0].forward).parameters.values()
    targets, conv1d = _linear_layers(layers)
    rotary = getattr(backbone, rotary_attr) if rotary_attr else None
    return Architecture(
        backbone_attr=backbone_attr, layers_attr=layers_attr, norm_attr=final_norm,
        rotary_attr=rotary_attr,
        rotary_by_kind=rotary is not None
        and "layer_type" in inspect.signature(rotary.forward).parameters,
        positions_attr=positions[0] if positions else None,
        positions_from_mask=bool(positions) and _position_call(getattr(backbone, positions[0])),
        project_in_attr=projections.get("project_in"),
        project_out_attr=projections.get("project_out"),
        embedding_norm_attr=embedding_norm or REUSED_EMBEDDING_NORMS.get(config.model_type),
        attention_bias=attention_bias,
        layer_parameters=None if any(p.kind is p.VAR_KEYWORD for p in signature)
        else frozenset(p.name for p in signature),
        dropout_attrs=tuple(dropouts),
        embedding_scalars=_scalars(config, EMBEDDING_SCALARS),
        logit_scalars=_scalars(config, LOGIT_SCALARS),
        lora_targets=targets, lora_parameters=_expert_parameters(layers), fan_in_fan_out=conv1d)


def _position_call(table: nn.Embedding) -> bool | None:
    """How a learned position table is called: False with the positions (a plain
    `nn.Embedding`), True with the padding mask and the positions (OPT's offset table), None
    for any other signature (no place for it)."""
    if type(table) is nn.Embedding:
        return False
    parameters = list(inspect.signature(table.forward).parameters)
    return True if parameters[:1] == ["attention_mask"] and "position_ids" in parameters else None


def _final_and_embedding_norm(name: str, norms: list[tuple[str, bool]]
                              ) -> tuple[str | None, str | None]:
    """The final norm and the embedding norm (None if absent) among the backbone's norms, given
    as (attribute, registered before the layers). One norm is the final one (none: a post-norm
    model, GPT-1); a second is the embedding norm only when it comes before the layers and the
    other after them (BLOOM's `word_embeddings_layernorm`)."""
    if len(norms) <= 1:
        return (norms[0][0] if norms else None), None
    if len(norms) == 2 and norms[0][1] and not norms[1][1]:
        return norms[1][0], norms[0][0]
    raise UnsupportedModel(f"{name}: expected at most one final norm after the decoder layers "
                           "and one embedding norm before them, found "
                           f"{[attr for attr, _ in norms]}")


def _refuse_unknown_layer_inputs(name: str, layer: nn.Module, attention_bias: str | None) -> None:
    """Refuse a block whose forward requires an input the split does not rebuild (an attention
    bias or state that the backbone computes outside its layers)."""
    provided = _GENERIC_INPUTS | (ATTENTION_BIASES[attention_bias][1] if attention_bias
                                  else frozenset())
    required = [p.name for p in list(inspect.signature(layer.forward).parameters.values())[1:]
                if p.default is inspect.Parameter.empty
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    missing = [p for p in required if p not in provided]
    if missing:
        raise UnsupportedModel(f"{name}: its decoder layers ({type(layer).__name__}) require "
                               f"{', '.join(missing)}, computed by the backbone outside its "
                               "layers; the split does not rebuild it, so such a family needs an "
                               "entry in edgesplit/families.py (ATTENTION_BIASES)")


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
    """Names of the linear layers inside the blocks (routers left out), in order of first
    appearance, and whether they are GPT-2 `Conv1D`s. A name is the leaf's, or `parent.index`
    for a layer inside an `nn.Sequential` (CTRL's `ffn.0`): a bare index would also match peft
    against the blocks themselves (`h.0`)."""
    found: dict[str, type] = {}
    for layer in layers:
        for qualified, module in layer.named_modules():
            parts = qualified.split(".")
            leaf = ".".join(parts[-2:]) if parts[-1].isdigit() else parts[-1]
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
