"""Evaluation of the global adapter: federated perplexity through each client's split, and the
server's own held-out perplexity.

Federated validation asks every client for the head activations of a few validation blocks
(under the global adapter, at its split), runs the tail here and sums the token losses; with a
`channel`, the activations first cross that simulated link (split inference over a lossy
channel) and the clean loss of the same activations is reported beside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from logging import WARNING

import numpy as np
import torch
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from edgesplit.channel import Channel, make_channel
from edgesplit.data import TokenBlocks
from edgesplit.protocol import ACTIVATIONS, CONFIG, EVALUATE, LORA
from edgesplit.records import PayloadError, Spec, client_error, from_record, to_record
from edgesplit.split_model import SplitModel
from strategies.exchange import send_and_collect


@dataclass
class TokenLoss:
    """Summed next-token negative log-likelihood and the number of predicted tokens."""

    nll: float = 0.0
    tokens: int = 0

    def add(self, mean_loss: torch.Tensor, labels: torch.Tensor) -> None:
        count = int((labels[:, 1:] != -100).sum())
        self.nll += float(mean_loss) * count
        self.tokens += count

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll / self.tokens) if self.tokens else float("nan")


def evaluation_channel(kind: str, snr_db: float, nakagami_m: float, bits: int) -> Channel | None:
    """The link validation activations cross (run config `channel`), or None for a clean one
    (`"none"`); training never crosses it."""
    if kind == "none":
        return None
    params = {"erasure": {"m": nakagami_m}, "noise": {"fading_m": nakagami_m},
              "quantise-flip": {"bits": bits}}[kind]
    return make_channel(kind, snr_db=snr_db, **params)


class Evaluator:
    """Scores a global adapter.

    Parameters
    ----------
    model : SplitModel
        The server's full model.
    heldout : TokenBlocks
        The server's held-out set.
    activation_spec : Spec
        What a client's validation activations must look like.
    batch_size, eval_batches : int
        Validation blocks asked of each client: `eval_batches * batch_size`; the held-out set
        uses four times as many.
    reply_timeout_s : float
        How long to wait for the clients' replies.
    seed : int
        Seeds the channel's draws (with the round and node).
    channel : Channel, optional
    """

    def __init__(self, model: SplitModel, heldout: TokenBlocks, activation_spec: Spec, *,
                 batch_size: int, eval_batches: int, reply_timeout_s: float, seed: int,
                 channel: Channel | None = None) -> None:
        self.model, self.heldout_blocks, self.spec = model, heldout, activation_spec
        self.batch_size, self.max_blocks = batch_size, eval_batches * batch_size
        self.reply_timeout_s, self.seed, self.channel = reply_timeout_s, seed, channel

    def clients(self, grid: Grid, global_lora: Mapping[str, torch.Tensor],
                splits: Mapping[int, int], server_round: int, failures: dict[int, str]
                ) -> tuple[TokenLoss, TokenLoss | None]:
        """Federated validation perplexity through each client's split (`splits`: node ->
        split).

        Returns (perplexity as the server receives the activations, clean perplexity, or None
        without a channel). A client whose reply is missing or invalid is left out, with its
        reason in `failures`.
        """
        replies = self.ask_clients(grid, global_lora, splits)
        return self.score_clients(replies, global_lora, splits, server_round, failures)

    def ask_clients(self, grid: Grid, global_lora: Mapping[str, torch.Tensor],
                    splits: Mapping[int, int]) -> list[Message]:
        """Send each client its head of the global adapter; wait for the validation
        activations (the first half of `clients`: no torch work here, so the server may run its
        own evaluation meanwhile)."""
        msgs = []
        for node, split in splits.items():
            head, _ = self.model.split_state(global_lora, range(split))
            config = ConfigRecord({"split": split, "max-blocks": self.max_blocks})
            msgs.append(Message(RecordDict({CONFIG: config, LORA: to_record(head)}),
                                dst_node_id=node, message_type=EVALUATE))
        return list(send_and_collect(grid, msgs, self.reply_timeout_s).by_node.values())

    def score_clients(self, replies: list[Message], global_lora: Mapping[str, torch.Tensor],
                      splits: Mapping[int, int], server_round: int, failures: dict[int, str]
                      ) -> tuple[TokenLoss, TokenLoss | None]:
        """The second half of `clients`: the tails over the replies' activations."""
        total, clean = TokenLoss(), TokenLoss() if self.channel else None
        failures.update({n: "evaluate: no reply" for n in
                         set(splits) - {r.metadata.src_node_id for r in replies}})
        for reply in replies:
            node = reply.metadata.src_node_id
            try:
                losses, labels = self._client_losses(reply, global_lora, splits[node],
                                                     server_round)
                for acc, loss in zip((total, clean), losses, strict=False):
                    acc.add(loss, labels)
            except Exception as exc:  # a bad reply leaves the client out, never the server
                failures[node] = f"evaluate: {type(exc).__name__}: {exc}"
                log(WARNING, "evaluation: client %s dropped: %s", node, failures[node])
        return total, clean

    def _client_losses(self, reply: Message, global_lora: Mapping[str, torch.Tensor],
                       split: int, server_round: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        if reply.has_error():
            raise PayloadError(client_error(reply))
        acts = from_record(reply.content[ACTIVATIONS], self.spec)
        if not 1 <= len(acts["hidden"]) <= self.max_blocks:
            raise PayloadError(f"{len(acts['hidden'])} validation rows, asked for 1 to "
                               f"{self.max_blocks}")
        received = [acts["hidden"]]
        if self.channel:
            node = reply.metadata.src_node_id
            seed = np.random.SeedSequence([self.seed, server_round, node])
            generator = torch.Generator().manual_seed(int(seed.generate_state(1)[0]))
            received.insert(0, self.channel(acts["hidden"], generator))
        with torch.no_grad(), self.model.using_lora(global_lora):
            losses = [self.model.tail(h, acts["attention_mask"], split, acts["labels"]).loss
                      for h in received]
        if not all(torch.isfinite(loss) for loss in losses):
            raise PayloadError("non-finite validation loss")
        return losses, acts["labels"]

    @torch.no_grad()
    def heldout(self, global_lora: Mapping[str, torch.Tensor]) -> TokenLoss:
        """Server-side perplexity of the global adapter on the held-out set (unsplit)."""
        total = TokenLoss()
        limit = self.max_blocks * 4
        data = self.heldout_blocks.first(limit)
        with self.model.using_lora(global_lora):
            for batch in data.eval_batches(self.batch_size):
                out = self.model.full(batch["input_ids"], batch["attention_mask"],
                                      batch["labels"])
                total.add(out.loss, batch["labels"])
        return total
