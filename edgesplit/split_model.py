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

Any dense decoder-only causal LM of the installed transformers loads: `edgesplit.families` reads
its structure off the model and refuses what cannot split exactly, and a whole-model load checks
that head + tail reproduce the model's own forward before anything uses it; any failure while
loading or probing becomes such a refusal with its cause (docs/models.md lists the families).
The frozen base may be bfloat16 or float16 on any torch device; LoRA parameters stay float32.
Tensors may come in on any device and dtype (activations arrive widened by the wire); outputs
stay on the model's device.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.modeling_outputs import CausalLMOutput

from edgesplit.families import (
    UnsupportedModel,
    check_config,
    describe,
    layer_kinds,
    positions_from_mask,
)
from edgesplit.presets import quiet_transformers, resolve_checkpoint
from edgesplit.settings import LoraSettings

LoraState = dict[str, torch.Tensor]
# How far (relative to the largest logit) head + tail may sit from the model's own forward at
# load. Both run the same kernels in the same order, so the measured gap is 0 on every family the
# oracle test covers; the bound only absorbs kernels that pick another reduction order for
# another batch layout. A misplaced piece (a missing scalar, a wrong mask) is orders larger.
EXACT_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 4e-3}


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
    dtype : torch.dtype (default: torch.float32)
        The frozen base's precision (LoRA parameters stay float32).
    device : torch.device or str (default: "cpu")
        Where the model runs.

    Raises
    ------
    UnsupportedModel
        For a model the split cannot run exactly (see `edgesplit.families`), with the reason.
    """

    def __init__(self, model_name: str, lora: LoraSettings | None = None,
                 head_layers: int | None = None, seed: int = 0,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        lora = lora or LoraSettings()
        self.folder: Path = resolve_checkpoint(model_name)
        config = AutoConfig.from_pretrained(self.folder)
        with _refusing(config.model_type, "reading its config"):
            check_config(config)  # refuse before reading any weight
        self.num_layers: int = config.num_hidden_layers
        self.layer_types = layer_kinds(config)
        if head_layers is not None and not 0 <= head_layers <= self.num_layers:
            raise ValueError(f"head_layers must be in [0, {self.num_layers}], got {head_layers}")
        self.loaded_layers = self.num_layers if head_layers is None else head_layers
        self.has_lm_head = head_layers is None  # final norm and LM head too (tail, full)
        self.dtype, self.device = dtype, torch.device(device)

        overrides = {}
        if hasattr(config, "output_router_logits"):
            # MoE: no load-balancing term in the loss. The routers are frozen, and the term
            # would need every layer's router logits on one side of the cut.
            overrides["output_router_logits"] = False
        if head_layers is not None:
            overrides["num_hidden_layers"] = head_layers
            if getattr(config, "layer_types", None):
                overrides["layer_types"] = config.layer_types[:head_layers]
        # (quiet: a head load skips the tail's tensors, expected, not news)
        with (_refusing(config.model_type, "loading it", family_limit=False),
              quiet_transformers()):
            base = AutoModelForCausalLM.from_pretrained(self.folder, dtype=dtype, **overrides)
        with _refusing(config.model_type, "reading its structure"):
            self.architecture = describe(base)
        if head_layers is not None:
            # A device never runs the final norm or LM head: free them (an untied LM head is as
            # large as the embeddings).
            if self.architecture.norm_attr:
                setattr(self.architecture.backbone(base), self.architecture.norm_attr,
                        nn.Identity())
            base.set_output_embeddings(nn.Identity())
        base.requires_grad_(False)
        base.eval()
        base.to(self.device)
        self.config = base.config

        torch.manual_seed(seed)
        arch = self.architecture
        # Named targets replace the derived ones, experts included.
        modules = list(lora.target_modules or arch.lora_targets)
        experts = None if lora.target_modules else list(arch.lora_parameters) or None
        # Imported here, not at the top: peft's import is 2-3 s of a deployed ClientApp's start-up
        # (a process per message), and a process that only answers a profile query needs no model.
        from peft import LoraConfig, get_peft_model

        # peft keeps the adapter in float32 over a bfloat16/float16 base (autocast_adapter_dtype).
        # Targets we derived that peft cannot adapt are the family's limit; named ones the user's.
        with (nullcontext() if lora.target_modules else
              _refusing(config.model_type, "adding LoRA to the layers found")):
            self.peft_model = get_peft_model(base, LoraConfig(
                r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                target_modules=modules, target_parameters=experts,
                fan_in_fan_out=arch.fan_in_fan_out, bias="none"))
        self.peft_model.eval()
        self._lora = self._index_lora_parameters()
        if head_layers is None:
            with _refusing(config.model_type, "running head + tail on a test batch"):
                self._check_exact()

    # ---- structure -------------------------------------------------------------------------
    @property
    def base_model(self) -> nn.Module:
        """The underlying `*ForCausalLM` module (LoRA layers injected)."""
        return self.peft_model.get_base_model()

    def _index_lora_parameters(self) -> dict[str, tuple[int, nn.Module, str]]:
        """Map each adapter key (peft's state-dict format) to (layer, owning module, attr)."""
        pattern = re.compile(rf"\.{self.architecture.layers_attr}\.(\d+)\.")
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
        return sum(p.numel() for p in self._blocks[layer].parameters())

    @property
    def _blocks(self) -> nn.ModuleList:
        return getattr(self.architecture.backbone(self.base_model), self.architecture.layers_attr)

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
        """Copy of the LoRA weights of the given layers, keyed like peft's adapter state dict
        (on the CPU, where adapters are exchanged and aggregated)."""
        return {k: p.detach().to("cpu", copy=True) for k, p in
                self.lora_parameters(layers).items()}

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
        optimizer, and binds them for its forward/backward. Tensors on another device (a CPU
        adapter for evaluation) are bound as copies on the model's device.
        """
        saved = {}
        try:
            for key, tensor in params.items():
                _, module, attr = self._lora[key]
                saved[key] = module._parameters[attr]
                module._parameters[attr] = tensor.to(self.device)
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
        # Activations may arrive from the wire in another dtype and on the CPU: the cast is part
        # of the graph, so the gradient returns in the dtype and on the device they came in.
        hidden = hidden.to(self.device, self.dtype)
        if len(layers) == 0:
            return hidden
        attention_mask = attention_mask.to(self.device)
        position_ids = positions_from_mask(attention_mask)
        kinds = {self.layer_types[i] for i in layers}
        inputs = self.architecture.layer_inputs(self.base_model, hidden, attention_mask,
                                                position_ids, kinds)
        blocks = self._blocks
        for i in layers:  # layer kinds by ABSOLUTE index, on either side of the cut
            out = blocks[i](hidden, **inputs[self.layer_types[i]])
            # GPT-J, GPT-Neo, CodeGen and the ALiBi families return (hidden, attention weights).
            hidden = out[0] if isinstance(out, tuple | list) else out
        return hidden

    def head(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             split: int) -> torch.Tensor:
        """Embeddings + decoder layers [0, split): the activations a device sends."""
        self._check_split(split, need_tail=False)
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        position_ids = positions_from_mask(attention_mask)
        hidden = self.architecture.embed(self.base_model, input_ids, attention_mask,
                                         position_ids)
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
        logits = self.architecture.logits(self.base_model, hidden)
        return CausalLMOutput(loss=None if labels is None else self.loss(logits, labels),
                              logits=logits)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The model's own mean next-token loss (labels -100 ignored)."""
        return self.base_model.loss_function(logits=logits, labels=labels.to(logits.device),
                                             vocab_size=self.config.vocab_size)

    def full(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             labels: torch.Tensor | None = None) -> CausalLMOutput:
        """The unsplit model through transformers' own forward (the reference for the split)."""
        self._check_split(self.num_layers, need_tail=True)
        attention_mask = attention_mask.to(self.device)
        out = self.peft_model(input_ids=input_ids.to(self.device), attention_mask=attention_mask,
                              position_ids=positions_from_mask(attention_mask),
                              labels=None if labels is None else labels.to(self.device),
                              use_cache=False)
        return CausalLMOutput(loss=out.loss, logits=out.logits)

    @torch.no_grad()
    def _check_exact(self) -> None:
        """Refuse a model whose pieces, run as head + tail, do not reproduce its own forward
        (a family that deviates outside its modules in a way `describe` cannot see)."""
        ids = torch.arange(32).remainder(self.config.vocab_size).reshape(2, 16)
        mask = torch.ones_like(ids)
        mask[0, -3:] = 0  # right and left padding: positions and masks must come from the mask
        mask[1, :5] = 0
        reference = self.full(ids, mask).logits
        split = self.num_layers // 2
        logits = self.tail(self.head(ids, mask, split), mask, split).logits
        # Every slot, padded ones too: under left padding the last padded slot predicts the
        # first real token, so its logits enter the model's own loss (GPT-1 differs only there).
        error = float((logits - reference).abs().max())
        scale = max(1.0, float(reference.abs().max()))
        if not error <= EXACT_TOLERANCE[self.dtype] * scale:
            raise UnsupportedModel(
                f"{self.config.model_type}: head + tail at split {split} differ from the model's "
                f"own forward by {error:.3g} (logit scale {scale:.3g}); this family deviates "
                "from the standard decoder layout and needs an entry in edgesplit/families.py")

    def save_adapter(self, state: Mapping[str, torch.Tensor], folder: str | Path) -> None:
        """Write `state` as a peft adapter folder (`PeftModel.from_pretrained(base, folder)`)."""
        self.load_lora_state(state)
        self.peft_model.save_pretrained(str(folder))


@contextmanager
def _refusing(model_type: str, step: str, family_limit: bool = True) -> Iterator[None]:
    """The load probe's last word: any failure of a step that depends on the family becomes a
    refusal naming the cause, never a raw error from inside transformers. `family_limit`:
    the step only fails for a family the split does not handle (not, say, for a broken
    weights file), so the refusal says so."""
    try:
        yield
    except UnsupportedModel:
        raise
    except Exception as exc:
        verdict = ("; this family is not supported (it would need an entry in "
                   "edgesplit/families.py)" if family_limit else "")
        raise UnsupportedModel(f"{model_type}: {step} for the split failed ({type(exc).__name__}: "
                               f"{exc}){verdict}") from exc


def trainable_copy(state: Mapping[str, torch.Tensor], device: torch.device | str | None = None
                   ) -> dict[str, nn.Parameter]:
    """Fresh float32 trainable parameters holding a copy of an adapter state (one client's
    LoRA), on `device` (default: where the state is)."""
    return {k: nn.Parameter(torch.as_tensor(v).to(device, torch.float32, copy=True))
            for k, v in state.items()}
