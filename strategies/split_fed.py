"""Split-federated LoRA training: the round loop the ServerApp runs.

One round: sample clients -> ask their profiles -> allocate split points and resources -> train
(each client's head on the device, its private tail copy here, over the transport) -> aggregate
every layer's LoRA over all clients -> evaluate -> record metrics and a checkpoint.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Mapping
from dataclasses import dataclass
from logging import INFO, WARNING

import numpy as np
import torch
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from allocation import ModelCost
from allocation.allocators import ClientAllocation, RoundAllocation, SystemAllocator
from fl_app import framing
from fl_app.channel import Channel, make_channel
from fl_app.config import Settings
from fl_app.data import TokenBlocks
from fl_app.protocol import (
    ACTIVATIONS,
    CONFIG,
    EVALUATE,
    LORA,
    PROFILE,
    QUERY_PROFILE,
    RoundTask,
    Spec,
    device_layers,
)
from fl_app.records import PayloadError, client_error, from_record, to_record
from fl_app.split_model import SplitModel
from strategies.aggregation import Aggregator
from strategies.batched_tail import serve_requests
from strategies.outputs import RunRecorder
from strategies.tail import BodySession, TailSession
from strategies.transport import TrainJob, TrainOutcome, Transport

# Run-config keys a resumed run may change without leaving the uninterrupted trajectory.
RESUMABLE_CHANGES = frozenset({"num-server-rounds", "resume-from", "run-name", "output-dir",
                               "step-timeout-s", "reply-timeout-s", "stream-host",
                               "stream-public-host",
                               "stream-port", "tls-certfile", "tls-keyfile", "tls-ca-certfile",
                               "eval-every", "inject-faults"})
# What a device profile may claim: generous physical ranges (the simulated devices sit well
# inside). Finite but absurd values (a 1e300 m link, 1e-300 W) would make the allocator fail
# for everyone; 1 mW is the system model's minimum transmit power.
PROFILE_BOUNDS = {"cpu_freq_hz": (1e6, 1e11), "cores": (1, 1024), "flops_per_cycle": (0.01, 1e4),
                  "memory_gb": (0.01, 1e5), "tx_power_w": (1e-3, 100.0),
                  "distance_m": (1.0, 1e5), "num-examples": (1, 1e12)}


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


class SplitFedStrategy:
    """Owns the round loop of split-federated training.

    Parameters
    ----------
    settings : Settings
    model : SplitModel
        The server's full model; its frozen base serves every client's tail.
    allocator : SystemAllocator
    transport : Transport
    aggregate : Aggregator
    recorder : RunRecorder
    heldout : TokenBlocks
        The server's global held-out set.
    activation_spec : Spec
        What a client's evaluation activations must look like.
    """

    def __init__(self, settings: Settings, model: SplitModel, allocator: SystemAllocator,
                 transport: Transport, aggregate: Aggregator, recorder: RunRecorder,
                 heldout: TokenBlocks, activation_spec: Spec) -> None:
        self.settings, self.model, self.allocator = settings, model, allocator
        self.transport, self.aggregate, self.recorder = transport, aggregate, recorder
        self.heldout, self.activation_spec = heldout, activation_spec
        self.global_lora = model.lora_state()  # seeded peft init: B = 0, so the base model
        self.costs = ModelCost(layers=model.num_layers, hidden_size=model.config.hidden_size,
                               batch_size=settings.batch_size, seq_len=settings.block_size,
                               activation_bits=framing.bits_per_value(  # as sent on the wire
                                   settings.stream_dtype if settings.transport == "stream"
                                   else "float32", model.config.hidden_size),
                               device_tail_layers=settings.device_tail_layers)
        # U-shaped split: the device's tail starts here (0 = head/tail split).
        self.tail_from = (model.num_layers - settings.device_tail_layers
                          if settings.device_tail_layers else 0)

    # ---- one round, step by step -------------------------------------------------------------
    def sample(self, node_ids: list[int], server_round: int) -> list[int]:
        s = self.settings
        wanted = max(s.min_train_clients, math.ceil(s.fraction_train * len(node_ids)))
        rng = np.random.default_rng([s.seed, server_round])
        # Draw positions, not ids: node ids are unsigned 64-bit and numpy may round them.
        ordered = sorted(node_ids)
        picks = rng.choice(len(ordered), size=min(wanted, len(ordered)), replace=False)
        return sorted(ordered[i] for i in picks)

    def query_profiles(self, grid: Grid, nodes: list[int]) -> tuple[dict[int, dict], dict]:
        msgs = [Message(RecordDict(), dst_node_id=n, message_type=QUERY_PROFILE) for n in nodes]
        replies = {r.metadata.src_node_id: r for r in
                   grid.send_and_receive(msgs, timeout=self.settings.reply_timeout_s)}
        profiles, failures = {}, {}
        for node in nodes:
            reply = replies.get(node)
            try:
                if reply is None:
                    raise TimeoutError("no profile reply")
                if reply.has_error():
                    raise RuntimeError(client_error(reply))
                record = reply.content[PROFILE]
                profile = {k: float(record[k]) for k in PROFILE_BOUNDS}
                for key, (low, high) in PROFILE_BOUNDS.items():
                    if not low <= profile[key] <= high:  # NaN fails too
                        raise ValueError(f"profile {key} = {profile[key]!r} outside "
                                         f"[{low:g}, {high:g}]")
                profiles[node] = profile
            except Exception as exc:  # a bad profile excludes the client, never the server
                failures[node] = f"profile: {type(exc).__name__}: {exc}"
        return profiles, failures

    def split_global(self, split: int, tail_from: int = 0) -> tuple[dict, dict]:
        """The global adapter cut for one client: (the device's layers, the server's)."""
        mine = set(device_layers(split, tail_from, self.model.num_layers))
        device = {k: v for k, v in self.global_lora.items() if self.model.layer_of(k) in mine}
        server = {k: v for k, v in self.global_lora.items() if k not in device}
        return device, server

    def task(self, server_round: int, allocation: ClientAllocation) -> RoundTask:
        s = self.settings
        return RoundTask(server_round=server_round, split=allocation.split,
                         local_steps=s.local_steps, batch_size=s.batch_size,
                         learning_rate=s.learning_rate, optimizer=s.optimizer, seed=s.seed,
                         tail_from=self.tail_from)

    def train(self, server_round: int, allocations: Mapping[int, ClientAllocation]
              ) -> tuple[dict[int, TrainOutcome], dict[int, TailSession | BodySession]]:
        jobs, parts = [], {}
        for node, alloc in allocations.items():
            task = self.task(server_round, alloc)
            device, server = self.split_global(task.split, task.tail_from)
            jobs.append(TrainJob(node, task, device))
            part = BodySession if task.u_shaped else TailSession
            parts[node] = part(self.model, server, task)
        outcomes = self.transport.train_round(
            jobs, lambda requests: serve_requests(parts, requests, self.settings.batch_tails))
        return outcomes, parts

    def eval_channel(self) -> Channel | None:
        """The link validation activations cross (run config `channel`), or None for a clean
        one; training never crosses it."""
        s = self.settings
        if s.channel == "none":
            return None
        params = {"erasure": {"m": s.nakagami_m}, "noise": {"fading_m": s.nakagami_m},
                  "quantise-flip": {"bits": s.channel_bits}}[s.channel]
        return make_channel(s.channel, snr_db=s.channel_snr_db, **params)

    def evaluate_clients(self, grid: Grid, allocations: Mapping[int, ClientAllocation],
                         server_round: int = 0, failures: dict[int, str] | None = None
                         ) -> tuple[TokenLoss, TokenLoss | None]:
        """Federated validation perplexity through each client's split.

        Returns (perplexity as the server receives the activations, clean perplexity). With a
        `channel` configured, each client's activations cross it before the tail (seeded by
        seed, round and node) and the clean loss of the same activations comes second;
        without one the second is None. A client whose reply is missing or invalid is left
        out, with its reason in `failures`.
        """
        channel = self.eval_channel()
        failures = {} if failures is None else failures
        max_blocks = self.settings.eval_batches * self.settings.batch_size
        msgs = []
        for node, alloc in allocations.items():
            head, _ = self.split_global(alloc.split)
            config = ConfigRecord({"split": alloc.split, "max-blocks": max_blocks})
            msgs.append(Message(RecordDict({CONFIG: config, LORA: to_record(head)}),
                                dst_node_id=node, message_type=EVALUATE))
        total, clean = TokenLoss(), TokenLoss() if channel else None
        replies = grid.send_and_receive(msgs, timeout=self.settings.reply_timeout_s)
        failures.update({n: "evaluate: no reply" for n in
                         set(allocations) - {r.metadata.src_node_id for r in replies}})
        for reply in replies:
            node = reply.metadata.src_node_id
            try:
                if reply.has_error():
                    raise PayloadError(client_error(reply))
                acts = from_record(reply.content[ACTIVATIONS], self.activation_spec)
                if not 1 <= len(acts["hidden"]) <= max_blocks:
                    raise PayloadError(f"{len(acts['hidden'])} validation rows, asked for 1 to "
                                       f"{max_blocks}")
                received = [acts["hidden"]]
                if channel:
                    seed = np.random.SeedSequence([self.settings.seed, server_round, node])
                    generator = torch.Generator().manual_seed(int(seed.generate_state(1)[0]))
                    received.insert(0, channel(acts["hidden"], generator))
                with torch.no_grad(), self.model.using_lora(self.global_lora):
                    losses = [self.model.tail(h, acts["attention_mask"], allocations[node].split,
                                              acts["labels"]).loss for h in received]
                if not all(torch.isfinite(loss) for loss in losses):
                    raise PayloadError("non-finite validation loss")
                for acc, loss in zip((total, clean), losses, strict=False):
                    acc.add(loss, acts["labels"])
            except Exception as exc:  # a bad reply leaves the client out, never the server
                failures[node] = f"evaluate: {type(exc).__name__}: {exc}"
                log(WARNING, "evaluation: client %s dropped: %s", node, failures[node])
        return total, clean

    @torch.no_grad()
    def evaluate_heldout(self) -> TokenLoss:
        """Server-side perplexity of the global adapter on the held-out set (unsplit)."""
        total = TokenLoss()
        limit = self.settings.eval_batches * self.settings.batch_size * 4
        data = TokenBlocks(self.heldout.input_ids[:limit], self.heldout.attention_mask[:limit])
        with self.model.using_lora(self.global_lora):
            for batch in data.eval_batches(self.settings.batch_size):
                out = self.model.full(batch["input_ids"], batch["attention_mask"],
                                      batch["labels"])
                total.add(out.loss, batch["labels"])
        return total

    # ---- the loop ----------------------------------------------------------------------------
    def resume(self, checkpoint: Mapping) -> int:
        """Continue after a checkpoint's round; returns the next round to run.

        Every random draw of a round (sampling, fading, batches, LoRA init) is seeded by
        (seed, round), so a resumed run repeats an uninterrupted one bit for bit.
        """
        lora = checkpoint["lora"]
        if lora.keys() != self.global_lora.keys() or any(
                lora[k].shape != v.shape for k, v in self.global_lora.items()):
            raise ValueError("checkpoint adapter does not match this model and LoRA config")
        saved, now = checkpoint.get("config", {}), self.settings.as_dict()
        changed = sorted(k for k in saved if k not in RESUMABLE_CHANGES and saved[k] != now.get(k))
        if changed:  # the continuation would silently follow another trajectory
            raise ValueError("cannot resume: the run config changed since the checkpoint: "
                             + ", ".join(f"{k} {saved[k]!r} -> {now.get(k)!r}" for k in changed))
        self.global_lora = dict(lora)
        self.recorder.restore(checkpoint["metrics"])
        return int(checkpoint["round"]) + 1

    def run(self, grid: Grid, first_round: int = 1) -> dict[str, torch.Tensor]:
        s = self.settings
        for server_round in range(first_round, s.num_server_rounds + 1):
            started = time.perf_counter()
            nodes = self.sample(list(grid.get_node_ids()), server_round)
            profiles, failures = self.query_profiles(grid, nodes)
            ordered = sorted(profiles)
            plan = self.allocator.allocate(server_round, [profiles[n] for n in ordered],
                                           self.costs) if ordered else None
            allocs = dict(zip(ordered, plan.clients if plan else [], strict=True))
            t_alloc = time.perf_counter()
            outcomes, tails = self.train(server_round, allocs)
            t_train = time.perf_counter()
            done = [o for o in outcomes.values() if o.failure is None]
            failures.update({o.node_id: o.failure for o in outcomes.values() if o.failure})
            row = {"round": server_round, "sampled": len(nodes), "completed": len(done)}
            if len(done) >= s.min_train_clients:
                adapters = [{**o.head_lora, **tails[o.node_id].lora()} for o in done]
                self.global_lora = self.aggregate(adapters, [o.num_examples for o in done])
                losses = [x for o in done for x in tails[o.node_id].losses + o.device_losses]
                row["train_loss"] = float(np.mean(losses))
            else:
                row["skipped"] = f"{len(done)} clients completed, {s.min_train_clients} needed"
                log(WARNING, "round %d skipped: %s", server_round, row["skipped"])
            for node, reason in failures.items():
                log(WARNING, "round %d: client %s dropped: %s", server_round, node, reason)
            if s.eval_every and server_round % s.eval_every == 0:
                if not self.tail_from:  # U-shaped: validation labels never leave the device
                    eval_failures: dict[int, str] = {}
                    val, val_clean = self.evaluate_clients(grid, allocs, server_round,
                                                           eval_failures)
                    row["eval_failures"] = {str(n): r for n, r in eval_failures.items()}
                    row["val_ppl"] = val.perplexity
                    if val_clean is not None:
                        row["val_ppl_clean"] = val_clean.perplexity
                row["heldout_ppl"] = self.evaluate_heldout().perplexity
            t_eval = time.perf_counter()
            row.update(self._round_costs(allocs, outcomes, failures, profiles, plan))
            row.update({"time_allocate_s": t_alloc - started, "time_train_s": t_train - t_alloc,
                        "time_eval_s": t_eval - t_train, "time_round_s": t_eval - started,
                        "server_peak_rss_mb": _peak_rss_mb()})
            self.recorder.log_round(row)
            self.recorder.checkpoint(server_round, self.global_lora)
            log(INFO, _progress_line(row, s.num_server_rounds))
        return self.global_lora

    def _round_costs(self, allocs, outcomes, failures, profiles,
                     plan: RoundAllocation | None) -> dict:
        steps = [t for o in outcomes.values() for t in o.step_times]
        per_step_wait = [o.transport_s / max(1, len(o.step_times) + 1) for o in outcomes.values()
                         if o.failure is None]
        return {
            "clients": [{"node": n, "split": a.split, "bandwidth_hz": a.bandwidth_hz,
                         "power_w": a.power_w, "user_freq_hz": a.user_freq_hz,
                         "examples": int(profiles[n]["num-examples"]),
                         **({} if a.loss_rate is None else {"loss_rate": a.loss_rate})}
                        for n, a in allocs.items()],
            "modelled_objective": plan.objective if plan else None,
            "modelled_energy_j": plan.energy_j if plan else None,
            "modelled_delay_s": plan.delay_s if plan else None,
            "modelled_stability": plan.stability if plan else None,
            "failures": {str(n): r for n, r in failures.items()},
            "bytes_up": sum(o.bytes_up for o in outcomes.values()),
            "bytes_down": sum(o.bytes_down for o in outcomes.values()),
            "server_tail_step_s": float(np.mean(steps)) if steps else None,
            "client_exchange_s": float(np.mean(per_step_wait)) if per_step_wait else None,
        }


def _peak_rss_mb() -> float:
    """Peak resident memory of the process hosting the ServerApp so far (Linux: KiB units)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _progress_line(row: Mapping, rounds: int) -> str:
    parts = [f"round {row['round']}/{rounds}", f"clients {row['completed']}/{row['sampled']}"]
    for key, fmt in (("train_loss", "loss {:.4f}"), ("val_ppl", "val ppl {:.2f}"),
                     ("heldout_ppl", "held-out ppl {:.2f}")):
        if row.get(key) is not None:
            parts.append(fmt.format(row[key]))
    splits = sorted(c["split"] for c in row["clients"])
    parts.append(f"splits {splits}")
    parts.append(f"{row['time_round_s']:.1f} s")
    return " | ".join(parts)
