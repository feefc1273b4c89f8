"""The device's side of one training round: head forward, and backward from the server's gradient.

A `DeviceSession` is plain torch: it holds the client's head LoRA parameters and optimizer, and
can be packed into a state dict between messages (the autograd graph cannot survive a message,
so the backward of step s recomputes the forward of step s from the same batch).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from edgesplit.data import TokenBlocks
from edgesplit.optim import load_optimizer_state, make_optimizer, optimizer_state
from edgesplit.protocol import RoundTask
from edgesplit.split_model import SplitModel, trainable_copy


class DeviceSession:
    """One client's head (and, in a U-shaped split, tail) training for one round.

    Parameters
    ----------
    model : SplitModel
        A (possibly shared, process-cached) model holding at least `task.split` layers, or the
        whole model for a U-shaped split.
    data : TokenBlocks
        The client's training blocks.
    task : RoundTask
    lora : mapping of str to tensor
        Adapter of the device's layers (`edgesplit.splits.device_layers`) to start from.
    optim_state : mapping of str to tensor, optional
        Optimizer state saved by `export` (continuing a round across messages).
    """

    def __init__(self, model: SplitModel, data: TokenBlocks, task: RoundTask,
                 lora: Mapping[str, torch.Tensor],
                 optim_state: Mapping[str, torch.Tensor] | None = None) -> None:
        self.model, self.data, self.task = model, data, task
        self.params = trainable_copy(lora, model.device)
        self.optimizer = make_optimizer(self.params, task.optimizer, task.learning_rate)
        if optim_state:
            load_optimizer_state(self.optimizer, list(self.params), optim_state)
        self.losses: list[float] = []  # U-shaped: the loss is computed here, not on the server

    def _batch(self, step: int) -> dict[str, torch.Tensor]:
        return self.data.batch(self.task.batch_index(step), self.task.batch_size, self.task.seed)

    def _head(self, batch: Mapping[str, torch.Tensor], step: int) -> torch.Tensor:
        # The backward recomputes this forward: seed dropout so both passes draw the same masks.
        with torch.random.fork_rng(devices=[]), self.model.training(), \
                self.model.using_lora(self.params):
            torch.manual_seed(self.task.seed * 1_000_003 + self.task.batch_index(step))
            return self.model.head(batch["input_ids"], batch["attention_mask"], self.task.split)

    def activations(self, step: int) -> dict[str, torch.Tensor]:
        """What crosses the split at `step`: hidden states (on the CPU, in the base's dtype),
        padding mask and (unless the split is U-shaped) labels."""
        batch = self._batch(step)
        with torch.no_grad():
            hidden = self._head(batch, step).cpu()
        sent = {"hidden": hidden, "attention_mask": batch["attention_mask"]}
        if not self.task.u_shaped:
            sent["labels"] = batch["labels"]
        return sent

    def tail_backward(self, step: int, body_output: torch.Tensor) -> torch.Tensor:
        """U-shaped: run the device's tail and loss on the server's body output; return the
        gradient at that output. The tail's LoRA gradients wait for `apply_gradient`."""
        batch = self._batch(step)
        hidden = body_output.detach().requires_grad_()
        with self.model.training(), self.model.using_lora(self.params):
            tail_from = self.model.num_layers - self.task.device_tail_layers
            loss = self.model.tail(hidden, batch["attention_mask"], tail_from,
                                   batch["labels"]).loss
        loss.backward()
        self.losses.append(loss.item())
        return hidden.grad

    def apply_gradient(self, step: int, grad: torch.Tensor) -> None:
        """Recompute step `step`'s head forward, backpropagate the server's gradient, update
        (head and, U-shaped, tail together, as the unsplit model would)."""
        out = self._head(self._batch(step), step)
        out.backward(grad.to(out.device, out.dtype))  # the wire widens bfloat16 gradients
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def lora(self) -> dict[str, torch.Tensor]:
        return {k: p.detach().cpu() for k, p in self.params.items()}

    def optim_state(self) -> dict[str, torch.Tensor]:
        return {k: v.cpu() for k, v in optimizer_state(self.optimizer, list(self.params)).items()}


def validation_activations(model: SplitModel, data: TokenBlocks, split: int,
                           lora: Mapping[str, torch.Tensor], max_blocks: int
                           ) -> dict[str, torch.Tensor]:
    """Head activations of the first `max_blocks` validation blocks (for federated perplexity)."""
    n = min(len(data), max_blocks)
    batch = next(data.eval_batches(n)) if n else None
    if batch is None:
        raise ValueError("this client has no validation blocks")
    with torch.no_grad(), model.using_lora(lora):
        hidden = model.head(batch["input_ids"], batch["attention_mask"], split).cpu()
    return {"hidden": hidden, "attention_mask": batch["attention_mask"], "labels": batch["labels"]}
