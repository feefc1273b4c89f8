"""The device's side of one training round: head forward, and backward from the server's gradient.

A `DeviceSession` is plain torch: it holds the client's head LoRA parameters and optimizer, and
can be packed into a state dict between messages (the autograd graph cannot survive a message,
so the backward of step s recomputes the forward of step s from the same batch).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from edgesplit.activation_noise import add_noise
from edgesplit.data import TokenBlocks
from edgesplit.dp import ReleaseNoise, clip_around
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
    noise_std : float (default: 0.0)
        Relative Gaussian noise added to the hidden states before they are sent
        (`edgesplit.activation_noise.add_noise`); 0 = none.
    release : ReleaseNoise, optional
        Differential privacy (`privacy.epsilon`): activations are clipped per token around
        the public centre and noised, and (U-shaped) the returned gradients clipped per row and
        noised; the head's backward runs through the same clipping. None = sent as computed.
    """

    def __init__(self, model: SplitModel, data: TokenBlocks, task: RoundTask,
                 lora: Mapping[str, torch.Tensor],
                 optim_state: Mapping[str, torch.Tensor] | None = None,
                 noise_std: float = 0.0, release: ReleaseNoise | None = None) -> None:
        self.model, self.data, self.task, self.noise_std = model, data, task, noise_std
        self.release = release
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
        """What crosses the split at `step`: hidden states (on the CPU, in the base's dtype;
        noisy when `noise_std` > 0; clipped and noised under `release`), padding mask and
        (unless the split is U-shaped) labels.

        The noise is only on what is sent: `apply_gradient` backpropagates the server's gradient
        through the clean (or clipped) head, as d(h + n)/dh = I.
        """
        batch = self._batch(step)
        with torch.no_grad():
            hidden = self._head(batch, step)
            hidden = (self.release.activations(hidden) if self.release
                      else add_noise(hidden, self.noise_std).cpu())
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
        return self.release.gradients(hidden.grad) if self.release else hidden.grad

    def apply_gradient(self, step: int, grad: torch.Tensor) -> None:
        """Recompute step `step`'s head forward, backpropagate the server's gradient, update
        (head and, U-shaped, tail together, as the unsplit model would)."""
        out = self._head(self._batch(step), step)
        if self.release:
            out = clip_around(out, self.release.activation_clip, self.release.centre)
        out.backward(grad.to(out.device, out.dtype))  # the wire widens bfloat16 gradients
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def lora(self) -> dict[str, torch.Tensor]:
        return {k: p.detach().cpu() for k, p in self.params.items()}

    def optim_state(self) -> dict[str, torch.Tensor]:
        return {k: v.cpu() for k, v in optimizer_state(self.optimizer, list(self.params)).items()}


def validation_activations(model: SplitModel, data: TokenBlocks, split: int,
                           lora: Mapping[str, torch.Tensor], max_blocks: int,
                           noise_std: float = 0.0) -> dict[str, torch.Tensor]:
    """Head activations of the first `max_blocks` validation blocks (for federated perplexity),
    with the same noise as training's when `noise_std` > 0 (they leave the device too)."""
    n = min(len(data), max_blocks)
    batch = next(data.eval_batches(n)) if n else None
    if batch is None:
        raise ValueError("this client has no validation blocks")
    with torch.no_grad(), model.using_lora(lora):
        hidden = add_noise(model.head(batch["input_ids"], batch["attention_mask"], split),
                           noise_std).cpu()
    return {"hidden": hidden, "attention_mask": batch["attention_mask"], "labels": batch["labels"]}
