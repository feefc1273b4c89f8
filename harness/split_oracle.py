"""Oracle 1 as a measurement: how far every cut of a `SplitModel` sits from the unsplit model.

A cut is a head/tail split `(k,)` (device layers [0, k), server [k, L) + loss) or a U-shaped one
`(k1, k2)` (device head [0, k1), server body [k1, k2), device tail [k2, L) + loss). For each cut
the activations cross detached, as over the wire, and their gradients are sent back by hand;
the logits, loss and every LoRA gradient are compared with transformers' own forward and
backward of the whole model on a batch with unpadded, left-, right- and two-sided-padded rows.
The split-model tests assert the gaps are below 1e-5; `experiments.families` tabulates them
for every family of the installed transformers.
"""

from __future__ import annotations

import torch
from transformers.modeling_outputs import CausalLMOutput

from edgesplit.split_model import SplitModel, trainable_copy

Cut = tuple[int, ...]


def padded_batch(seed: int = 0, vocab: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Four sequences: unpadded, left-padded, right-padded, and padded on both sides."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (4, 16), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    mask[2, -6:] = 0
    mask[3, :2] = 0
    mask[3, -3:] = 0
    return ids, mask


def labels_of(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Next-token labels: the inputs, padding ignored (-100)."""
    return ids.masked_fill(mask == 0, -100)


def randomised(model: SplitModel, seed: int = 1) -> dict[str, torch.Tensor]:
    """Load non-zero LoRA weights (peft starts B at zero, which would hide gradient bugs)."""
    gen = torch.Generator().manual_seed(seed)
    state = {k: 0.1 * torch.randn(v.shape, generator=gen) for k, v in model.lora_state().items()}
    model.load_lora_state(state)
    return state


def cuts(num_layers: int) -> list[Cut]:
    """Every head/tail split (0 and L included: all layers on one side), then every U-shaped
    split with layers in each of its three pieces."""
    return [(k,) for k in range(num_layers + 1)] + [
        (k1, k2) for k1 in range(1, num_layers - 1) for k2 in range(k1 + 1, num_layers)]


def cut_errors(model: SplitModel, seed: int = 0) -> dict[Cut, dict[str, float]]:
    """For every cut, the largest absolute gap of the logits, of the loss and of any LoRA
    gradient (inf where a parameter got no gradient) from the unsplit model's."""
    ids, mask = padded_batch(seed, vocab=min(256, model.config.vocab_size))
    labels = labels_of(ids, mask)
    state = model.lora_state()
    reference = trainable_copy(state)
    with model.using_lora(reference):
        full = model.full(ids, mask, labels)
        full.loss.backward()
    errors = {}
    for cut in cuts(model.num_layers):
        params = trainable_copy(state)
        with model.using_lora(params):
            out = _run_cut(model, ids, mask, labels, cut)
        errors[cut] = {
            "logits": float((out.logits - full.logits).detach().abs().max()),
            "loss": abs(out.loss.item() - full.loss.item()),
            "grad": max(float("inf") if p.grad is None else
                        float((p.grad - reference[k].grad).abs().max())
                        for k, p in params.items()),
        }
    return errors


def _run_cut(model: SplitModel, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
             cut: Cut) -> CausalLMOutput:
    """Forward and backward through the pieces of one cut, each crossing detached."""
    outputs = [model.head(ids, mask, cut[0])]  # each piece's output, and what the next receives
    received = []
    for start, stop in zip(cut, [*cut[1:], None], strict=True):
        received.append(outputs[-1].detach().requires_grad_())  # what crosses the wire
        if stop is None:
            out = model.tail(received[-1], mask, start, labels)
        else:
            outputs.append(model.body(received[-1], mask, start, stop))
    out.loss.backward()
    for output, sent in zip(reversed(outputs), reversed(received), strict=True):
        if output.requires_grad:  # a head of 0 layers holds no LoRA: nothing to send back
            output.backward(sent.grad)  # the gradient sent back over the wire
    return out
