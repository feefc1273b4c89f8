"""A causal LM with LoRA that runs as head (device) + tail (server), exactly like the unsplit model.

`head(x, k)` = embeddings + decoder layers [0, k); `tail(h, k)` = layers [k, L) + final norm +
LM head (+ loss); `body(h, k1, k2)` = layers [k1, k2), the server's part of a U-shaped split
(device head [0, k1) -> server body [k1, k2) -> device tail [k2, L), so labels stay on the
device). Only the hidden states and the 2-D attention mask cross the split: each side
derives positions and 4-D masks from the mask itself. LoRA comes from peft; its per-layer state is
exchanged as a plain dict in peft's own key format (`get_peft_model_state_dict`), so head and tail
adapters merge by key and the aggregate saves as a normal peft adapter.

A device loads only its head: `SplitModel(name, lora, head_layers=k)` reads layers [0, k) and the
embeddings from the checkpoint (transformers skips the other tensors) and drops the LM head.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.modeling_outputs import CausalLMOutput

from edgesplit.families import build_masks, family_of, layer_attention_types, positions_from_mask
from edgesplit.presets import quiet_transformers, resolve_checkpoint
from edgesplit.settings import LoraSettings

LoraState = dict[str, torch.Tensor]


class SplitModel:
    """A Hugging Face causal LM with LoRA, runnable whole or split at any decoder layer.

    Parameters
    ----------
    model_name : str
        A preset name (see `edgesplit.presets.PRESETS`) or a local checkpoint folder.
    lora : LoraSettings (default: LoraSettings())
    head_layers : int or None (default: None)
        Load only the embeddings and decoder layers [0, head_layers) (a device's head); None
        loads the whole model (the server).
    seed : int (default: 0)
        Seed for the initial LoRA weights.
    """

    def __init__(self, model_name: str, lora: LoraSettings | None = None,
                 head_layers: int | None = None, seed: int = 0) -> None:
        lora = lora or LoraSettings()
        self.folder: Path = resolve_checkpoint(model_name)
        config = AutoConfig.from_pretrained(self.folder)
        self.family = family_of(config.model_type)
        self.num_layers: int = config.num_hidden_layers
        self.layer_types = layer_attention_types(config)
        if head_layers is not None and not 0 <= head_layers <= self.num_layers:
            raise ValueError(f"head_layers must be in [0, {self.num_layers}], got {head_layers}")
        self.loaded_layers = self.num_layers if head_layers is None else head_layers
        self.has_lm_head = head_layers is None  # final norm and LM head too (tail, full)

        overrides = {}
        if head_layers is not None:
            overrides["num_hidden_layers"] = head_layers
            if getattr(config, "layer_types", None):
                overrides["layer_types"] = config.layer_types[:head_layers]
        with quiet_transformers():  # a head load skips the tail's tensors: expected, not news
            base = AutoModelForCausalLM.from_pretrained(
                self.folder, dtype=torch.float32, attn_implementation="sdpa", **overrides)
        if head_layers is not None:
            # A device never runs the final norm or LM head: free them (an untied LM head is as
            # large as the embeddings).
            setattr(self._backbone_of(base), self.family.norm_attr, nn.Identity())
            base.set_output_embeddings(nn.Identity())
        base.requires_grad_(False)
        base.eval()
        self.config = base.config

        torch.manual_seed(seed)
        targets = list(lora.target_modules or self.family.lora_targets)
        self.peft_model = get_peft_model(base, LoraConfig(
            r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=targets, fan_in_fan_out=self.family.fan_in_fan_out, bias="none"))
        self.peft_model.eval()
        self._lora = self._index_lora_parameters()

    # ---- structure -------------------------------------------------------------------------
    def _backbone_of(self, model: nn.Module) -> nn.Module:
        return getattr(model, self.family.backbone_attr)

    @property
    def base_model(self) -> nn.Module:
        """The underlying `*ForCausalLM` module (LoRA layers injected)."""
        return self.peft_model.get_base_model()

    @property
    def _backbone(self) -> nn.Module:
        return self._backbone_of(self.base_model)

    def _index_lora_parameters(self) -> dict[str, tuple[int, nn.Module, str]]:
        """Map each adapter key (peft's state-dict format) to (layer, owning module, attr)."""
        pattern = re.compile(rf"\.{self.family.layers_attr}\.(\d+)\.")
        index = {}
        for name, module in self.peft_model.named_modules():
            for attr, param in module.named_parameters(recurse=False):
                if "lora_" not in name or not param.requires_grad:
                    continue
                key = f"{name}.{attr}".replace(".default", "")
                index[key] = (int(pattern.search(key).group(1)), module, attr)
        return index

    def parameter_count(self, layer: int | None = None) -> int:
        """Parameters of decoder layer `layer` (its frozen weights and LoRA), or of the input
        embeddings when None: what a device holds in memory per layer (cost models)."""
        if layer is None:
            return self.base_model.get_input_embeddings().weight.numel()
        blocks = getattr(self._backbone, self.family.layers_attr)
        return sum(p.numel() for p in blocks[layer].parameters())

    def layer_of(self, key: str) -> int:
        """Decoder layer index of an adapter key."""
        return self._lora[key][0]

    def split_state(self, state: Mapping[str, torch.Tensor], layers: Iterable[int]
                    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Cut an adapter state in two: (the entries of `layers`, the rest)."""
        wanted = set(layers)
        inside = {k: v for k, v in state.items() if self.layer_of(k) in wanted}
        return inside, {k: v for k, v in state.items() if k not in inside}

    def lora_keys(self, layers: Iterable[int] | None = None) -> list[str]:
        """Adapter keys of the given layers (all loaded layers when None), in a stable order."""
        wanted = None if layers is None else set(layers)
        return [k for k, (layer, _, _) in self._lora.items() if wanted is None or layer in wanted]

    # ---- adapter state -----------------------------------------------------------------------
    def lora_parameters(self, layers: Iterable[int] | None = None) -> dict[str, nn.Parameter]:
        """The live LoRA parameters of the given layers (no copy), keyed like `lora_state`."""
        return {k: self._parameter(k) for k in self.lora_keys(layers)}

    def lora_state(self, layers: Iterable[int] | None = None) -> LoraState:
        """Copy of the LoRA weights of the given layers, keyed like peft's adapter state dict."""
        return {k: p.detach().clone() for k, p in self.lora_parameters(layers).items()}

    @torch.no_grad()
    def load_lora_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy LoRA weights in; keys must be known and shapes must match."""
        for key, value in state.items():
            target = self._parameter(key)
            value = torch.as_tensor(value)
            if value.shape != target.shape:
                raise ValueError(f"{key}: shape {tuple(value.shape)} != {tuple(target.shape)}")
            target.copy_(value)

    def _parameter(self, key: str) -> nn.Parameter:
        try:
            _, module, attr = self._lora[key]
        except KeyError:
            raise KeyError(f"unknown adapter key {key!r} for this model") from None
        return module._parameters[attr]

    @contextmanager
    def using_lora(self, params: Mapping[str, torch.Tensor]) -> Iterator[None]:
        """Run with these tensors as the LoRA weights (no copy: gradients reach them).

        One frozen base then serves many clients' adapters: each keeps its own parameters and
        optimizer, and binds them for its forward/backward.
        """
        saved = {}
        try:
            for key, tensor in params.items():
                _, module, attr = self._lora[key]
                saved[key] = module._parameters[attr]
                module._parameters[attr] = tensor
            yield
        finally:
            for key, original in saved.items():
                _, module, attr = self._lora[key]
                module._parameters[attr] = original

    @contextmanager
    def training(self) -> Iterator[None]:
        """Train mode (LoRA dropout active) for the duration; the model rests in eval mode."""
        self.peft_model.train()
        try:
            yield
        finally:
            self.peft_model.eval()

    # ---- forward passes ----------------------------------------------------------------------
    def _check_split(self, split: int, need_tail: bool) -> None:
        top = self.num_layers if need_tail else self.loaded_layers
        if not 0 <= split <= top:
            raise ValueError(f"split must be in [0, {top}], got {split}")
        if need_tail and not self.has_lm_head:
            raise ValueError("this instance holds only a head; the tail runs on the server")

    def _run_layers(self, hidden: torch.Tensor, attention_mask: torch.Tensor,
                    layers: range) -> torch.Tensor:
        if len(layers) == 0:
            return hidden
        backbone = self._backbone
        position_ids = positions_from_mask(attention_mask)
        kinds = {self.layer_types[i] for i in layers}
        masks = build_masks(self.config, hidden, attention_mask, position_ids, kinds)
        rotary = getattr(backbone, "rotary_emb", None)
        position_embeddings = rotary(hidden, position_ids) if rotary is not None else None
        blocks = getattr(backbone, self.family.layers_attr)
        for i in layers:
            mask = masks[self.layer_types[i]]
            if position_embeddings is None:  # GPT-2 blocks take (hidden, cache, mask) positionally
                hidden = blocks[i](hidden, None, mask, position_ids=position_ids)
            else:
                hidden = blocks[i](hidden, attention_mask=mask, position_ids=position_ids,
                                   position_embeddings=position_embeddings)
        return hidden

    def head(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             split: int) -> torch.Tensor:
        """Embeddings + decoder layers [0, split): the activations a device sends."""
        self._check_split(split, need_tail=False)
        position_ids = positions_from_mask(attention_mask)
        hidden = self.family.embed(self._backbone, input_ids, position_ids)
        return self._run_layers(hidden, attention_mask, range(split))

    def body(self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int,
             stop: int) -> torch.Tensor:
        """Decoder layers [start, stop) (the server's part of a U-shaped split)."""
        if not 0 <= start <= stop <= self.loaded_layers:
            raise ValueError(f"body layers [{start}, {stop}) outside [0, {self.loaded_layers}]")
        return self._run_layers(hidden, attention_mask, range(start, stop))

    def tail(self, hidden: torch.Tensor, attention_mask: torch.Tensor, split: int,
             labels: torch.Tensor | None = None) -> CausalLMOutput:
        """Decoder layers [split, L) + final norm + LM head, and the loss when labels are given."""
        self._check_split(split, need_tail=True)
        hidden = self._run_layers(hidden, attention_mask, range(split, self.num_layers))
        hidden = getattr(self._backbone, self.family.norm_attr)(hidden)
        logits = self.base_model.get_output_embeddings()(hidden)
        loss = None
        if labels is not None:
            loss = self.base_model.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.vocab_size)
        return CausalLMOutput(loss=loss, logits=logits)

    def full(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             labels: torch.Tensor | None = None) -> CausalLMOutput:
        """The unsplit model through transformers' own forward (the reference for the split)."""
        self._check_split(self.num_layers, need_tail=True)
        out = self.peft_model(input_ids=input_ids, attention_mask=attention_mask,
                              position_ids=positions_from_mask(attention_mask), labels=labels,
                              use_cache=False)
        return CausalLMOutput(loss=out.loss, logits=out.logits)

    def save_adapter(self, state: Mapping[str, torch.Tensor], folder: str | Path) -> None:
        """Write `state` as a peft adapter folder (`PeftModel.from_pretrained(base, folder)`)."""
        self.load_lora_state(state)
        self.peft_model.save_pretrained(str(folder))


def trainable_copy(state: Mapping[str, torch.Tensor]) -> dict[str, nn.Parameter]:
    """Fresh trainable parameters holding a copy of an adapter state (one client's LoRA)."""
    return {k: nn.Parameter(torch.as_tensor(v, dtype=torch.float32).clone()) for k, v in
            state.items()}
