"""Per-row LoRA routing: one batched pass through a peft model, each row through its own adapter.

The analogue of peft's `layer.py` for many clients sharing one frozen base: inside
`per_client_lora`, every LoRA-adapted linear adds each batch row's delta through its own client's
A and B (gathered per row, applied with `torch.bmm`). Gradients reach each client's own tensors,
and each client's weight gradient is summed over its rows in the order `F.linear` sums it in a
sequential step, so batched and one-by-one training agree bit for bit on our CPUs (tested to
1e-5: BLAS kernels may round per-row products differently elsewhere). Only with LoRA dropout 0:
a batched pass draws its dropout masks in a different order.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from peft.tuners.lora import Linear as LoraLinear
from torch import nn

from edgesplit.split_model import SplitModel

ADAPTER = "default"  # SplitModel attaches one peft adapter, under peft's default name
_LORA_KEY = re.compile(r"^(?P<layer>.+)\.lora_(?P<factor>[AB])\.weight$")


class _RoutedMatmul(torch.autograd.Function):
    """`x[i] @ weight[rows[i]].T` for every batch row i.

    Forward and input gradient are one batched product each. The weight gradient of each client
    is one product over all its rows, as `F.linear` computes it in a sequential step, so that it
    sums in the same order and comes out bit for bit the same (a gather's backward would add
    per-row partial sums instead).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, rows: torch.Tensor,
                sizes: list[int]) -> torch.Tensor:
        ctx.save_for_backward(x, weight, rows)
        ctx.sizes = sizes
        return torch.bmm(x, weight[rows].transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, rows = ctx.saved_tensors
        grad_x = torch.bmm(grad, weight[rows]) if ctx.needs_input_grad[0] else None
        per_client = zip(x.split(ctx.sizes), grad.split(ctx.sizes), strict=True)
        grad_weight = torch.stack([gc.flatten(0, -2).t().mm(xc.flatten(0, -2))
                                   for xc, gc in per_client])
        return grad_x, grad_weight, None, None


class _PerRowLinear(nn.Module):
    """Stands in for a peft `lora_A` / `lora_B` linear: batch row i uses `weight[rows[i]]`.

    `weight` (clients, out, in) is a stack of the clients' live parameters, so autograd carries
    each client's gradient back to its own tensor; peft reads `weight.dtype`. Rows come grouped
    by client, `sizes[c]` rows of client c.
    """

    def __init__(self, weight: torch.Tensor, rows: torch.Tensor, sizes: list[int]) -> None:
        super().__init__()
        self.weight, self.rows, self.sizes = weight, rows, sizes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1, x.shape[-1])
        out = _RoutedMatmul.apply(flat, self.weight, self.rows, self.sizes)
        return out.reshape(*x.shape[:-1], out.shape[-1])


@contextmanager
def per_client_lora(model: SplitModel, params: Sequence[Mapping[str, torch.Tensor]],
                    sizes: Sequence[int]) -> Iterator[None]:
    """Within: the first `sizes[0]` rows of a batch run through the LoRA tensors `params[0]`
    (no copy), the next `sizes[1]` through `params[1]`, and so on.

    Every adapter key of `params[0]` is routed (all clients must share the keys); the model's own
    LoRA modules are put back on exit, also on error.
    """
    sizes = list(sizes)
    rows = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)).to(model.device)
    patched: list[tuple[nn.ModuleDict, nn.Module]] = []
    try:
        for key in params[0]:
            match = _LORA_KEY.match(key)
            layer = None if match is None else model.peft_model.get_submodule(match["layer"])
            if not isinstance(layer, LoraLinear):  # e.g. fused MoE experts (peft ParamWrapper)
                raise ValueError(f"batched tails route LoRA linear layers only, not {key!r}")
            factors = getattr(layer, f"lora_{match['factor']}")
            weight = torch.stack([client[key] for client in params])
            patched.append((factors, factors[ADAPTER]))
            factors[ADAPTER] = _PerRowLinear(weight, rows, sizes)
        yield
    finally:
        for factors, original in reversed(patched):
            factors[ADAPTER] = original
