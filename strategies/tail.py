"""The server's part of one client's round: a private copy of its LoRA layers and optimizer.

Head/tail split: `TailSession` trains layers [split, L) and computes the loss. U-shaped split:
`BodySession` trains layers [split, L - t) and never sees labels; the device computes the
loss. Both answer the data plane's requests through `step`, one call per exchange.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from edgesplit.optim import make_optimizer
from edgesplit.protocol import RoundTask
from edgesplit.records import PayloadError
from edgesplit.split_model import SplitModel, trainable_copy


class _ServerPart:
    """A client's server-side LoRA copy and its optimizer (the frozen base is shared)."""

    def __init__(self, model: SplitModel, lora: Mapping[str, torch.Tensor],
                 task: RoundTask) -> None:
        self.model, self.task = model, task
        self.params = trainable_copy(lora, model.device)
        self.optimizer = make_optimizer(self.params, task.optimizer, task.learning_rate)
        self.losses: list[float] = []  # the training loss, where this part computes it

    def _update(self) -> None:
        refuse_non_finite(*(p.grad for p in self.params.values()))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def lora(self) -> dict[str, torch.Tensor]:
        return {k: p.detach().cpu() for k, p in self.params.items()}


def refuse_non_finite(*tensors: torch.Tensor | None) -> None:
    """Finite but extreme activations (or labels that predict no token) can make the loss or
    a gradient non-finite: stop before they reach the client's LoRA copy and, through it, the
    global adapter."""
    if not all(t is None or bool(torch.isfinite(t).all()) for t in tensors):
        raise PayloadError("non-finite loss or gradient on this client's activations")


class TailSession(_ServerPart):
    """Trains layers [split, L) of one client's adapter on the activations it streams in.

    Parameters
    ----------
    model : SplitModel
        The server's full model (frozen base, shared by all sessions).
    lora : mapping of str to tensor
        Global adapter of layers [split, L) at the start of the round.
    task : RoundTask
        The client's round settings (split, optimizer, learning rate).
    """

    def step(self, activations: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Tail forward + backward + optimizer step; returns d loss / d activations."""
        hidden = activations["hidden"].detach().requires_grad_()
        with self.model.training(), self.model.using_lora(self.params):
            out = self.model.tail(hidden, activations["attention_mask"], self.task.split,
                                  activations["labels"])
        refuse_non_finite(out.loss)
        out.loss.backward()
        self._update()
        self.losses.append(out.loss.item())
        return hidden.grad


class BodySession(_ServerPart):
    """Trains layers [split, L - t) of one client's adapter in a U-shaped split.

    Each step takes two exchanges: the head's activations (hidden states and padding mask, no
    labels) -> the body's output; then the gradient at that output -> the gradient at the
    body's input, after the optimizer step. The forward graph waits in between.
    """

    def __init__(self, model: SplitModel, lora: Mapping[str, torch.Tensor],
                 task: RoundTask) -> None:
        super().__init__(model, lora, task)
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None  # (input, output)

    def step(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self._pending is None:
            hidden = tensors["hidden"].detach().requires_grad_()
            with self.model.training(), self.model.using_lora(self.params):
                out = self.model.body(hidden, tensors["attention_mask"], self.task.split,
                                      self.model.num_layers - self.task.device_tail_layers)
            self._pending = (hidden, out)
            return out.detach().cpu()
        hidden, out = self._pending
        self._pending = None
        out.backward(tensors["hidden"].to(out.device, out.dtype))
        self._update()
        return hidden.grad
