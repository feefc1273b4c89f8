"""The server's half of one client's round: a private copy of the tail LoRA and its optimizer."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fl_app.optim import make_optimizer
from fl_app.protocol import RoundTask
from fl_app.split_model import SplitModel, trainable_copy


class TailSession:
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

    def __init__(self, model: SplitModel, lora: Mapping[str, torch.Tensor],
                 task: RoundTask) -> None:
        self.model, self.task = model, task
        self.params = trainable_copy(lora)
        self.optimizer = make_optimizer(self.params, task.optimizer, task.learning_rate)
        self.losses: list[float] = []

    def step(self, activations: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Tail forward + backward + optimizer step; returns d loss / d activations."""
        hidden = activations["hidden"].detach().requires_grad_()
        with self.model.training(), self.model.using_lora(self.params):
            out = self.model.tail(hidden, activations["attention_mask"], self.task.split,
                                  activations["labels"])
        out.loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.losses.append(out.loss.item())
        return hidden.grad

    def lora(self) -> dict[str, torch.Tensor]:
        return {k: p.detach() for k, p in self.params.items()}
