"""Split-federated LoRA training: the round loop the ServerApp runs.

One round: sample clients -> ask the profiles of those not asked yet -> allocate split points and
resources -> train (each client's head on the device, its private tail copy here, over the
transport) -> aggregate every layer's LoRA over all clients -> evaluate (and write sample
generations) -> record metrics and a checkpoint. A device's profile (with its calibration) is
asked once per run, so in the steady state a device gets one message a round, plus evaluation
when it is due.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from logging import INFO, WARNING

import numpy as np
import torch
from flwr.app import Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from allocation import ModelCost
from allocation.allocators import ClientAllocation, SystemAllocator
from edgesplit import framing
from edgesplit.memory import peak_rss_mb, release_free_memory, rss_mb
from edgesplit.protocol import CALIBRATION, PROFILE, QUERY_PROFILE, RoundTask
from edgesplit.records import reply_content
from edgesplit.settings import Settings, key_of, new_keys
from edgesplit.split_model import SplitModel
from edgesplit.splits import device_layers
from strategies.aggregation import AdapterPrivacy, Aggregator, update_norm
from strategies.batched_tail import serve_requests
from strategies.calibration import Calibrator
from strategies.evaluation import Evaluator
from strategies.exchange import send_and_collect
from strategies.outputs import RunRecorder
from strategies.round_metrics import progress_line, round_costs
from strategies.samples import sample_generations
from strategies.tail import BodySession, TailSession
from strategies.transport import TrainJob, TrainOutcome, Transport

# Settings a resumed run may change without leaving the uninterrupted trajectory.
RESUMABLE_CHANGES = frozenset(key_of(a) for a in (
    "num_server_rounds", "resume_from", "run_name", "output_dir", "step_timeout_s",
    "reply_timeout_s", "stream_host", "stream_public_host", "stream_port", "pace_links",
    "tls_certfile", "tls_keyfile", "tls_ca_certfile", "eval_every", "inject_faults",
    "sample_prompts", "sample_tokens", "fault_rate", "fault_kinds", "connect_resends"))
# What a device profile may claim: generous physical ranges (the simulated devices sit well
# inside). Finite but absurd values (a 1e300 m link, 1e-300 W) would make the allocator fail
# for everyone; 1 mW is the system model's minimum transmit power.
# GPU devices report CUDA cores or shader ALUs as `cores`.
PROFILE_BOUNDS = {"cpu_freq_hz": (1e6, 1e11), "cores": (1, 1e6), "flops_per_cycle": (0.01, 1e4),
                  "memory_gb": (0.01, 1e5), "power_w": (0.01, 1e5), "tx_power_w": (1e-3, 100.0),
                  "uplink_bps": (1e3, 1e12), "distance_m": (1.0, 1e5),
                  "num-examples": (1, 1e12)}
_MAX_CLASS_NAME = 64  # a device class is a catalogue name or a short label


def checked_profile(record: Mapping) -> dict:
    """A device's profile record as the allocator reads it; ValueError naming what is wrong."""
    profile = {k: float(record[k]) for k in PROFILE_BOUNDS}
    for key, (low, high) in PROFILE_BOUNDS.items():
        if not low <= profile[key] <= high:  # NaN fails too
            raise ValueError(f"profile {key} = {profile[key]!r} outside [{low:g}, {high:g}]")
    names = {}
    for key in ("device_class", "label"):
        name = record.get(key, "")
        if not isinstance(name, str) or len(name) > _MAX_CLASS_NAME:
            raise ValueError(f"profile {key} = {name!r:.80} is not a name of at most "
                             f"{_MAX_CLASS_NAME} characters")
        names[key] = name
    partition = record.get("partition-id", -1)  # absent from older devices
    if not isinstance(partition, int) or partition < -1:
        raise ValueError(f"profile partition-id = {partition!r:.80} is not a partition index")
    downlink = float(record.get("downlink_bps", 0.0))
    if downlink != 0.0 and not 1e3 <= downlink <= 1e12:
        raise ValueError(f"profile downlink_bps = {downlink!r} outside [1e3, 1e12]")
    efficiency = float(record.get("spectral_efficiency", 0.0))
    if not 0.0 <= efficiency <= 100.0:
        raise ValueError(f"profile spectral_efficiency = {efficiency!r} outside [0, 100] "
                         "bit/s/Hz")
    return {**profile, **names, "partition_id": partition, "downlink_bps": downlink,
            "link_shaped": bool(record.get("link_shaped", 0.0)),
            "cell": bool(record.get("cell", 0.0)), "spectral_efficiency": efficiency}


def model_cost(settings: Settings, model: SplitModel) -> ModelCost:
    """What the cost models need to know of this run's model and batches."""
    config = model.config
    return ModelCost(layers=model.num_layers, hidden_size=config.hidden_size,
                     batch_size=settings.batch_size, seq_len=settings.block_size,
                     activation_bits=framing.bits_per_value(  # as sent on the wire
                         settings.stream_dtype if settings.transport == "stream"
                         else "float32", config.hidden_size),
                     device_tail_layers=settings.device_tail_layers,
                     vocab_size=config.vocab_size, attention_heads=config.num_attention_heads,
                     layer_params=model.parameter_count(0),
                     embedding_params=model.parameter_count(),
                     adapter_params_per_layer=sum(  # the device's reply carries its layers'
                         p.numel() for p in model.lora_parameters([0]).values())
                     if settings.adapter_upload else 0)


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
    evaluator : Evaluator
    calibrator : Calibrator, optional
        Measures devices and the server (`allocation.calibration = "measure"`, or "track": rescaled
        after every round by what it measured); None: catalogue only.
    adapter_privacy : AdapterPrivacy, optional
        DP-FedAvg of the global adapter (`privacy.adapter-epsilon`) in place of `aggregate`.
    """

    def __init__(self, settings: Settings, model: SplitModel, allocator: SystemAllocator,
                 transport: Transport, aggregate: Aggregator, recorder: RunRecorder,
                 evaluator: Evaluator, calibrator: Calibrator | None = None,
                 adapter_privacy: AdapterPrivacy | None = None) -> None:
        self.settings, self.model, self.allocator = settings, model, allocator
        self.transport, self.aggregate, self.recorder = transport, aggregate, recorder
        self.evaluator, self.calibrator = evaluator, calibrator
        self.adapter_privacy = adapter_privacy
        self.global_lora = model.lora_state()  # seeded peft init: B = 0, so the base model
        self.costs = model_cost(settings, model)
        self.profiles: dict[int, dict] = {}  # each node's profile, asked once per run
        self.startup_s: dict[int, float] = {}  # each node's latest measured start-up

    # ---- one round, step by step -------------------------------------------------------------
    def sample(self, node_ids: list[int], server_round: int) -> list[int]:
        s = self.settings
        wanted = max(s.min_train_clients, math.ceil(s.fraction_train * len(node_ids)))
        rng = np.random.default_rng([s.seed, server_round])
        # Draw positions, not ids: node ids are unsigned 64-bit and numpy may round them.
        ordered = sorted(node_ids)
        picks = rng.choice(len(ordered), size=min(wanted, len(ordered)), replace=False)
        return sorted(ordered[i] for i in picks)

    def query_profiles(self, grid: Grid, nodes: list[int]) -> tuple[dict[int, dict], dict,
                                                                  dict]:
        """The profiles of `nodes`. Each node is asked once per run (the answer is kept); the
        first time, the calibrator (if any) also has it time its training steps in the same
        message. Returns (profiles, failures, what the calibration learnt for the metrics)."""
        new = [n for n in nodes if n not in self.profiles]
        calibrate = set(self.calibrator.wanted(new)) if self.calibrator else set()
        msgs = [Message(RecordDict({CALIBRATION: self.calibrator.request()}
                                   if n in calibrate else {}),
                        dst_node_id=n, message_type=QUERY_PROFILE) for n in new]
        replies = send_and_collect(grid, msgs, self.settings.reply_timeout_s)
        # A device's answer to its profile query: its start-up as the stream transport expects
        # it (`exchange`), until the device's first round measures it on the stream itself.
        self.startup_s.update(replies.seconds)
        failures, contents = {}, {}
        for node in new:
            try:
                contents[node] = reply_content(replies.by_node.get(node), "profile")
                self.profiles[node] = checked_profile(contents[node][PROFILE])
            except Exception as exc:  # a bad profile excludes the client, never the server
                failures[node] = f"profile: {type(exc).__name__}: {exc}"
        # Calibrate only devices with a profile; the others are asked again with it.
        asked = sorted(n for n in calibrate if n in self.profiles)
        learnt = self.calibrator.learn(asked, contents) if asked else {}
        return {n: self.profiles[n] for n in nodes if n in self.profiles}, failures, learnt

    def calibrate_server(self) -> dict:
        """Have the server's tail timed, once (no-op without a calibrator); the metrics entry."""
        if self.calibrator is None:
            return {}
        batch = self.evaluator.heldout_blocks.batch(0, self.settings.batch_size)
        return self.calibrator.measure_server(self.model, batch)

    def split_global(self, split: int) -> tuple[dict, dict]:
        """The global adapter cut for one client: (the device's layers, the server's)."""
        t, layers = self.settings.device_tail_layers, self.model.num_layers
        return self.model.split_state(self.global_lora, device_layers(split, layers, t))

    def task(self, server_round: int, allocation: ClientAllocation) -> RoundTask:
        s = self.settings
        return RoundTask(server_round=server_round, split=allocation.split,
                         local_steps=s.local_steps, batch_size=s.batch_size,
                         learning_rate=s.learning_rate, optimizer=s.optimizer, seed=s.seed,
                         device_tail_layers=s.device_tail_layers,
                         pace_bps=(allocation.rate_bps or 0.0) if s.pace_links else 0.0)

    def train(self, server_round: int, allocations: Mapping[int, ClientAllocation],
              profiles: Mapping[int, Mapping] | None = None
              ) -> tuple[dict[int, TrainOutcome], dict[int, TailSession | BodySession]]:
        jobs, parts = [], {}
        for node, alloc in allocations.items():
            task = self.task(server_round, alloc)
            device, server = self.split_global(task.split)
            profile = (profiles or {}).get(node, {})
            # A shaped downlink (the testbed's) carries the frames at its own rate after pacing.
            downlink = (profile.get("downlink_bps") or math.inf) if profile.get(
                "link_shaped") else math.inf
            jobs.append(TrainJob(node, task, device, downlink_bps=downlink,
                                 expected_start_s=self.startup_s.get(node)))
            part = BodySession if task.u_shaped else TailSession
            parts[node] = part(self.model, server, task)
        outcomes = self.transport.train_round(
            jobs, lambda requests: serve_requests(parts, requests, self.settings.batch_tails))
        self.startup_s.update({n: o.start_s for n, o in outcomes.items() if o.start_s})
        return outcomes, parts

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
        # A checkpoint of EdgeSplit 0.1 holds the old flat keys.
        saved, now = new_keys(checkpoint.get("config", {}))[0], self.settings.as_dict()
        changed = sorted(k for k in saved if k not in RESUMABLE_CHANGES and saved[k] != now.get(k))
        if (now["privacy.epsilon"] or now["privacy.adapter-epsilon"]) and "train.rounds" in saved \
                and not now["privacy.rounds"] and saved["train.rounds"] != \
                now["train.rounds"]:  # the noise was planned for the old number
            changed.append("train.rounds (the privacy budgets' plan: set privacy.rounds "
                           f"= {saved['train.rounds']} to keep it)")
        if changed:  # the continuation would silently follow another trajectory
            raise ValueError("cannot resume: the run config changed since the checkpoint: "
                             + ", ".join(f"{k} {saved[k]!r} -> {now.get(k)!r}" for k in changed))
        self.global_lora = dict(lora)
        self.recorder.restore(checkpoint["metrics"])
        if self.calibrator is not None:
            self.calibrator.restore(checkpoint["metrics"])
        return int(checkpoint["round"]) + 1

    def run(self, grid: Grid, first_round: int = 1) -> dict[str, torch.Tensor]:
        s = self.settings
        for server_round in range(first_round, s.num_server_rounds + 1):
            privacy = self.adapter_privacy
            if privacy and privacy.spent(server_round) > s.adapter_epsilon + 0.01:
                log(WARNING, "stopping before round %d: adapter privacy budget spent (a round "
                    "more takes epsilon to %.4g > privacy.adapter-epsilon %g, planned for %d "
                    "rounds)",
                    server_round, privacy.spent(server_round), s.adapter_epsilon,
                    s.planned_privacy_rounds)
                break
            row = self.play_round(grid, server_round)
            # The round's sessions, adapters and optimizer states died with play_round: hand
            # their pages back to the OS, then record what the process really holds.
            release_free_memory()
            row.update({"server_rss_mb": rss_mb(), "server_peak_rss_mb": peak_rss_mb()})
            self.recorder.log_round(row)
            self.recorder.checkpoint(server_round, self.global_lora)
            log(INFO, progress_line(row, s.num_server_rounds))
        return self.global_lora

    def play_round(self, grid: Grid, server_round: int) -> dict:
        """One round, from sampling to evaluation; returns its metrics row."""
        s = self.settings
        started = time.perf_counter()
        nodes = self.sample(list(grid.get_node_ids()), server_round)
        profiles, failures, calibration = self.query_profiles(grid, nodes)
        ordered = sorted(profiles)
        if ordered:
            calibration.update(self.calibrate_server())
        t_calibrate = time.perf_counter()
        plan = self.allocator.allocate(
            server_round, [profiles[n] for n in ordered], self.costs,
            *((self.calibrator.measured(ordered), self.calibrator.server)
              if self.calibrator else ()), client_ids=ordered,
            start_s=self.calibrator.start_offsets(ordered) if self.calibrator else None
        ) if ordered else None
        excluded = plan.excluded if plan else {}
        failures.update({ordered[i]: f"allocation: {r}" for i, r in excluded.items()})
        allocs = dict(zip([n for i, n in enumerate(ordered) if i not in excluded],
                          plan.clients if plan else [], strict=True))
        t_alloc = time.perf_counter()
        outcomes, tails = self.train(server_round, allocs, profiles)
        t_train = time.perf_counter()
        done = [o for o in outcomes.values() if o.failure is None]
        failures.update({o.node_id: o.failure for o in outcomes.values() if o.failure})
        row = {"round": server_round, "sampled": len(nodes), "completed": len(done)}
        if len(done) >= s.min_train_clients:
            adapters = [{**o.head_lora, **tails[o.node_id].lora()} for o in done]
            # What privacy.adapter-clip is measured against: each client's update this round.
            row["update_norm_median"] = float(np.median([update_norm(a, self.global_lora)
                                                         for a in adapters]))
            if self.adapter_privacy:
                self.global_lora = self.adapter_privacy.aggregate(adapters, self.global_lora)
                row["adapter_epsilon"] = self.adapter_privacy.spent(server_round)
            else:
                self.global_lora = self.aggregate(adapters, [o.num_examples for o in done])
            losses = [x for o in done for x in tails[o.node_id].losses + o.device_losses]
            row["train_loss"] = float(np.mean(losses))
        else:
            row["skipped"] = f"{len(done)} clients completed, {s.min_train_clients} needed"
            log(WARNING, "round %d skipped: %s", server_round, row["skipped"])
        for node, reason in failures.items():
            log(WARNING, "round %d: client %s dropped: %s", server_round, node, reason)
        if s.eval_every and server_round % s.eval_every == 0:
            row.update(self.evaluate(grid, allocs, server_round))
        t_eval = time.perf_counter()
        row.update(round_costs(allocs, outcomes, failures, profiles, plan, s.local_steps))
        if self.calibrator is not None and s.calibration == "track":
            tracked = self.calibrator.track(row["clients"])
            if tracked:
                calibration = {**calibration, "tracked": tracked}
        if calibration:
            row["calibration"] = calibration
        row.update({"time_calibrate_s": t_calibrate - started,
                    "time_allocate_s": t_alloc - t_calibrate, "time_train_s": t_train - t_alloc,
                    "time_eval_s": t_eval - t_train, "time_round_s": t_eval - started})
        return row

    def evaluate(self, grid: Grid, allocations: Mapping[int, ClientAllocation],
                 server_round: int) -> dict:
        """The round's evaluation metrics: federated validation perplexity (not in a U-shaped
        split, whose validation labels never leave the devices), held-out perplexity, and the
        sample generations (written to the run folder).

        With `eval.overlap` the server computes its own part (held-out perplexity, samples)
        while the devices compute their validation activations, instead of after them: the
        same numbers, the server's compute no longer waits for the control plane's round trip.
        """
        row: dict = {}
        splits = {n: a.split for n, a in allocations.items()}
        federated = not self.settings.device_tail_layers
        with ThreadPoolExecutor(1, thread_name_prefix="eval-requests") as pool:
            asked = None
            if federated and self.settings.eval_overlap:
                asked = pool.submit(self.evaluator.ask_clients, grid, self.global_lora, splits)
            elif federated:
                replies = self.evaluator.ask_clients(grid, self.global_lora, splits)
            row.update(self.server_evaluation(server_round))
            if asked is not None:
                replies = asked.result()
        if federated:
            failures: dict[int, str] = {}
            val, val_clean = self.evaluator.score_clients(replies, self.global_lora, splits,
                                                          server_round, failures)
            row["eval_failures"] = {str(n): r for n, r in failures.items()}
            row["val_ppl"] = val.perplexity
            if val_clean is not None:
                row["val_ppl_clean"] = val_clean.perplexity
        return row

    def server_evaluation(self, server_round: int) -> dict:
        """What the server evaluates alone: held-out perplexity and the sample generations."""
        s = self.settings
        row: dict = {"heldout_ppl": self.evaluator.heldout(self.global_lora).perplexity}
        if s.prompts:
            t_samples = time.perf_counter()
            self.recorder.log_samples(server_round, sample_generations(
                self.model, self.global_lora, s.prompts, s.data_format, s.sample_tokens))
            row["time_samples_s"] = time.perf_counter() - t_samples  # in time_eval_s
        return row
