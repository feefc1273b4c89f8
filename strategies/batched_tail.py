"""Batched server tails: one pass trains the tails of all clients cut at the same layer.

Stepping client tails one after another runs the frozen base once per client; here the clients'
batches are concatenated, the base runs once over all rows, and every LoRA-adapted linear adds
each row's delta through its own client's A and B (gathered per row, applied with `torch.bmm`).
The loss is the sum of each client's own mean token loss, so one backward gives every client
exactly the gradients of its sequential `TailSession.step`; each then takes its own optimizer
step. Each client's weight gradient is summed in the sequential step's order, so gradients,
losses and adapters came out bit-identical to sequential steps on our CPUs (tested to 1e-5: BLAS
kernels may round per-row products differently elsewhere). Only with LoRA dropout 0: a batched
pass draws its dropout masks in a different order.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from fl_app.records import PayloadError
from fl_app.split_model import SplitModel
from strategies.tail import BodySession, TailSession, refuse_non_finite

ADAPTER = "default"  # SplitModel attaches one peft adapter, under peft's default name
# Tokens per batched pass. On 2 CPU cores (SmolLM2-135M, 1 thread, 16 clients x 4 x 32 tokens),
# passes of 512-1024 tokens took 0.83-0.87 of the sequential time, one pass of 2048 took 1.1
# (not profiled; likely activations and logits outgrowing the caches).
MAX_TOKENS = 1024
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
    rows = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    patched: list[tuple[nn.ModuleDict, nn.Module]] = []
    try:
        for key in params[0]:
            match = _LORA_KEY.match(key)
            if match is None:
                raise ValueError(f"batched tails support LoRA linear weights only, not {key!r}")
            layer = model.peft_model.get_submodule(match["layer"])
            factors = getattr(layer, f"lora_{match['factor']}")
            weight = torch.stack([client[key] for client in params])
            patched.append((factors, factors[ADAPTER]))
            factors[ADAPTER] = _PerRowLinear(weight, rows, sizes)
        yield
    finally:
        for factors, original in reversed(patched):
            factors[ADAPTER] = original


def batched_tail_step(sessions: Mapping[int, TailSession],
                      activations: Mapping[int, Mapping[str, torch.Tensor]],
                      max_tokens: int | None = MAX_TOKENS) -> dict[int, torch.Tensor]:
    """One training step of several clients' tails, in as few batched passes as fit.

    Parameters
    ----------
    sessions : mapping of node id to TailSession
        The clients' tail sessions; same model, same split, same adapter keys.
    activations : mapping of node id to activations
        Each client's `hidden`, `attention_mask` and `labels` (batch sizes may differ, the
        sequence length may not), as `TailSession.step` takes them.
    max_tokens : int or None (default: MAX_TOKENS)
        Tokens per pass: clients are packed in order into passes of at most this many tokens
        (a client larger than that gets a pass of its own); None puts all in one pass.

    Returns
    -------
    dict of node id to tensor
        d (client's loss) / d (client's hidden), as `TailSession.step` returns it; each session
        has taken its optimizer step and recorded its loss in `losses`.
    """
    nodes = list(sessions)
    if set(activations) != set(nodes):
        raise ValueError(f"activations for {sorted(activations)}, sessions for {sorted(nodes)}")
    first = sessions[nodes[0]]
    for node, session in sessions.items():
        if not isinstance(session, TailSession):
            raise TypeError(f"node {node}: batched steps need a TailSession, got {session}")
        if session.model is not first.model or session.task.split != first.task.split:
            raise ValueError(f"node {node}: all sessions must share the model and the split")
        if session.params.keys() != first.params.keys():
            raise ValueError(f"node {node}: adapter keys differ from node {nodes[0]}'s")
    lengths = {activations[n]["hidden"].shape[1] for n in nodes}
    if len(lengths) > 1:
        raise ValueError(f"all clients must send the same sequence length, got {sorted(lengths)}")

    grads = {}
    for group in _passes(nodes, activations, max_tokens):
        grads.update(_one_pass({n: sessions[n] for n in group},
                               {n: activations[n] for n in group}))
    return grads


def _passes(nodes: list[int], activations: Mapping[int, Mapping[str, torch.Tensor]],
            max_tokens: int | None) -> list[list[int]]:
    """Consecutive groups of nodes with at most `max_tokens` tokens each (at least one node)."""
    groups: list[list[int]] = [[]]
    tokens = 0
    for node in nodes:
        count = activations[node]["hidden"].shape[:2].numel()
        if groups[-1] and max_tokens is not None and tokens + count > max_tokens:
            groups.append([])
            tokens = 0
        groups[-1].append(node)
        tokens += count
    return groups


def _one_pass(sessions: Mapping[int, TailSession],
              activations: Mapping[int, Mapping[str, torch.Tensor]]) -> dict[int, torch.Tensor]:
    """Forward, backward and optimizer steps of a validated group in one batched pass."""
    nodes = list(sessions)
    if len(nodes) == 1:  # nothing to share: the plain step, without the routing's overhead
        return {nodes[0]: sessions[nodes[0]].step(activations[nodes[0]])}
    model, split = sessions[nodes[0]].model, sessions[nodes[0]].task.split
    acts = [activations[n] for n in nodes]
    sizes = [a["hidden"].shape[0] for a in acts]
    hidden = torch.cat([a["hidden"].detach() for a in acts]).requires_grad_()
    mask = torch.cat([a["attention_mask"] for a in acts])
    with model.training(), per_client_lora(model, [sessions[n].params for n in nodes], sizes):
        logits = model.tail(hidden, mask, split).logits
    losses = [model.base_model.loss_function(logits=part, labels=a["labels"],
                                             vocab_size=model.config.vocab_size)
              for part, a in zip(logits.split(sizes), acts, strict=True)]
    refuse_non_finite(*losses)
    torch.stack(losses).sum().backward()  # client c's parameters see only its own loss
    try:
        refuse_non_finite(*(p.grad for n in nodes for p in sessions[n].params.values()))
    except PayloadError:
        for node in nodes:  # nothing stepped yet: the caller can redo the group one by one
            sessions[node].optimizer.zero_grad(set_to_none=True)
        raise
    for node, loss in zip(nodes, losses, strict=True):
        session = sessions[node]
        session.optimizer.step()
        session.optimizer.zero_grad(set_to_none=True)
        session.losses.append(loss.item())
    return dict(zip(nodes, hidden.grad.split(sizes), strict=True))


Answer = torch.Tensor | Exception


def serve_requests(parts: Mapping[int, TailSession | BodySession],
                   requests: Mapping[int, Mapping[str, torch.Tensor]],
                   batch: bool = True) -> dict[int, Answer]:
    """Answer the data-plane requests that are waiting together, one answer (or the client's
    own error) per node.

    With `batch`, the head/tail clients at the same split share batched passes; U-shaped body
    exchanges and lone clients step one by one. A pass refused for a non-finite loss or
    gradient (nothing stepped) is redone client by client, so only the client that caused it
    fails.
    """
    answers: dict[int, Answer] = {}
    groups: dict[int, list[int]] = {}
    for node in requests:
        if batch and isinstance(parts[node], TailSession):
            groups.setdefault(parts[node].task.split, []).append(node)
        else:
            answers.update(_one_by_one(parts, requests, [node]))
    for nodes in groups.values():
        for group in _passes(nodes, requests, MAX_TOKENS):
            if len(group) == 1:
                answers.update(_one_by_one(parts, requests, group))
                continue
            try:
                answers.update(_one_pass({n: parts[n] for n in group},
                                         {n: requests[n] for n in group}))
            except Exception:  # redo alone: the error then belongs to its own client
                answers.update(_one_by_one(parts, requests, group))
    return answers


def _one_by_one(parts: Mapping[int, TailSession | BodySession],
                requests: Mapping[int, Mapping[str, torch.Tensor]],
                nodes: Sequence[int]) -> dict[int, Answer]:
    answers: dict[int, Answer] = {}
    for node in nodes:
        try:
            answers[node] = parts[node].step(requests[node])
        except Exception as exc:  # the transport drops this client with the reason
            answers[node] = exc
    return answers
