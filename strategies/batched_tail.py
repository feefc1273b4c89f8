"""Batched server tails: one pass trains the tails of all clients cut at the same layer.

Stepping client tails one after another runs the frozen base once per client; here the clients'
batches are concatenated, the base runs once over all rows, and `edgesplit.lora_routing` sends
each row through its own client's LoRA. The loss is the sum of each client's own mean token loss,
so one backward gives every client exactly the gradients of its sequential `TailSession.step`;
each then takes its own optimizer step (same results as one by one, see `lora_routing`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from edgesplit.lora_routing import per_client_lora
from edgesplit.records import PayloadError
from strategies.tail import BodySession, TailSession, refuse_non_finite

# Tokens per batched pass. On 2 CPU cores (SmolLM2-135M, 1 thread, 16 clients x 4 x 32 tokens),
# passes of 512-1024 tokens took 0.83-0.87 of the sequential time, one pass of 2048 took 1.1
# (not profiled; likely activations and logits outgrowing the caches).
MAX_TOKENS = 1024


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
    model, split = sessions[nodes[0]].model, sessions[nodes[0]].task.split
    acts = [activations[n] for n in nodes]
    sizes = [a["hidden"].shape[0] for a in acts]
    hidden = torch.cat([a["hidden"].detach() for a in acts]).requires_grad_()
    mask = torch.cat([a["attention_mask"] for a in acts])
    with model.training(), per_client_lora(model, [sessions[n].params for n in nodes], sizes):
        logits = model.tail(hidden, mask, split).logits
    losses = [model.loss(part, a["labels"]) for part, a in zip(logits.split(sizes), acts,
                                                                strict=True)]
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
                   batch: bool = True, max_tokens: int | None = MAX_TOKENS) -> dict[int, Answer]:
    """Answer the data-plane requests that are waiting together, one answer (or the client's
    own error) per node.

    With `batch`, the head/tail clients at the same split share batched passes of at most
    `max_tokens` tokens (None: one pass per split); U-shaped body exchanges and lone clients
    step one by one. A pass that fails (a non-finite loss or gradient, mismatched shapes:
    nothing stepped) is redone client by client, so only the client that caused it fails.
    """
    answers: dict[int, Answer] = {}
    groups: dict[int, list[int]] = {}
    for node in requests:
        if batch and isinstance(parts[node], TailSession):
            groups.setdefault(parts[node].task.split, []).append(node)
        else:
            answers.update(_one_by_one(parts, requests, [node]))
    for nodes in groups.values():
        for group in _passes(nodes, requests, max_tokens):
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
