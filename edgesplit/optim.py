"""The local optimizer, shared by the device head and the server's per-client tail copies.

Both sides must build it identically: split training equals unsplit training only because the
optimizers are element-wise (no global clipping), so the head's and the tail's halves of one
AdamW step are exactly the full step.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

OPTIMIZERS = ("adamw", "sgd")


def make_optimizer(params: Mapping[str, nn.Parameter], name: str, lr: float
                   ) -> torch.optim.Optimizer:
    """AdamW (no weight decay: LoRA B starts at zero) or plain SGD over `params` in key order."""
    ordered = [params[k] for k in sorted(params)]
    if name == "adamw":
        return torch.optim.AdamW(ordered, lr=lr, weight_decay=0.0)
    if name == "sgd":
        return torch.optim.SGD(ordered, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}: one of {OPTIMIZERS}")


def optimizer_state(optimizer: torch.optim.Optimizer, keys: list[str]) -> dict[str, torch.Tensor]:
    """Flatten the per-parameter state to `{"<key>/<field>": tensor}` (keys in sorted order)."""
    state = optimizer.state_dict()["state"]
    return {f"{key}/{field}": torch.as_tensor(value)
            for index, key in enumerate(sorted(keys)) for field, value in
            state.get(index, {}).items()}


def load_optimizer_state(optimizer: torch.optim.Optimizer, keys: list[str],
                         flat: Mapping[str, torch.Tensor]) -> None:
    """Inverse of `optimizer_state`."""
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    index = {key: i for i, key in enumerate(sorted(keys))}
    for name, value in flat.items():
        key, field = name.rsplit("/", 1)
        per_param.setdefault(index[key], {})[field] = value
    full = optimizer.state_dict()
    full["state"] = per_param
    optimizer.load_state_dict(full)
