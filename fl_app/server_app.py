"""EdgeSplit ServerApp: the edge server runs every client's tail and aggregates the adapters."""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping
from logging import ERROR, INFO, WARNING
from typing import Any

import torch
from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from allocation import Weights
from allocation.allocators import SystemAllocator
from edgesplit.data import federated_text
from edgesplit.placement import BASE_DTYPES, resolve_device
from edgesplit.protocol import activation_spec
from edgesplit.records import Spec
from edgesplit.settings import Settings, objective_weights
from edgesplit.split_model import SplitModel
from fl_app import provenance
from fl_app.run_config import check_against_model, lowest_split, read, summary
from fl_app.simulation_poll import in_simulation, skip_idle_nodes
from strategies.aggregation import AdapterPrivacy, make_aggregator
from strategies.calibration import Calibrator
from strategies.evaluation import Evaluator, evaluation_channel
from strategies.flower_transport import FlowerTransport
from strategies.outputs import RunRecorder, load_checkpoint
from strategies.split_fed import SplitFedStrategy
from strategies.stream_transport import StreamTransport, TlsFiles
from strategies.transport import Transport

app = ServerApp()


class RunFailed(RuntimeError):
    """The run stopped on an error; its message is the cause, the traceback is logged above."""


def build_strategy(settings: Settings, grid: Grid,
                   recorder: RunRecorder | None = None) -> SplitFedStrategy:
    """Wire the pieces a run needs from its settings (raises ValueError on a bad config); the
    run folder is made here unless ``recorder`` is given."""
    model = SplitModel(settings.model_name, settings.lora, seed=settings.seed,
                       dtype=BASE_DTYPES[settings.base_dtype],
                       device=resolve_device(settings.server_device, "compute.server-device"))
    log(INFO, "server model %s: %d layers, %s base on %s", settings.model_name,
        model.num_layers, settings.base_dtype, model.device)
    check_against_model(settings, model.num_layers)
    floor = lowest_split(settings, model.num_layers)
    if floor > 1:
        log(INFO, "split floor: every client keeps at least %d head layers", floor)
    allocator = SystemAllocator(settings.allocator, settings.split, settings.seed,
                                settings.server_bandwidth_hz,
                                Weights(*objective_weights(settings.objective_weights)),
                                split_policy=settings.rl_policy or None,
                                fading_m=settings.nakagami_m, cost_model=settings.cost_model,
                                server=settings.server_class, batch_tails=settings.batch_tails,
                                min_split=floor, server_queue=settings.server_queue_model,
                                local_steps=settings.local_steps,
                                cell_bandwidth_hz=settings.cell_bandwidth_hz,
                                cell_subchannels=settings.cell_subchannels)
    calibrator = None
    if settings.calibration != "none":
        calibrator = Calibrator(
            layers=min(4, model.num_layers - 1), batch_size=settings.batch_size,
            optimizer=settings.optimizer, learning_rate=settings.learning_rate,
            steps=settings.calibration_steps, batch_tails=settings.batch_tails)
    spec = activation_spec(model.config.hidden_size, settings.block_size)
    recorder = recorder or RunRecorder(settings.output_dir, settings.run_name,
                                       settings.as_dict())
    evaluator = Evaluator(
        model, federated_text(settings.data, settings.model_name, num_partitions=1).heldout,
        spec, batch_size=settings.batch_size, eval_batches=settings.eval_batches,
        reply_timeout_s=settings.reply_timeout_s, seed=settings.seed,
        channel=evaluation_channel(settings.channel, settings.channel_snr_db,
                                   settings.nakagami_m, settings.channel_bits))
    adapter_privacy = (AdapterPrivacy.plan(settings.adapter_epsilon, settings.privacy_delta,
                                           settings.adapter_clip,
                                           settings.planned_privacy_rounds)
                       if settings.adapter_epsilon else None)
    return SplitFedStrategy(settings, model, allocator, build_transport(settings, grid, spec),
                            make_aggregator(settings.aggregation, settings.trim_fraction),
                            recorder, evaluator, calibrator, adapter_privacy)


def build_transport(settings: Settings, grid: Grid, spec: Spec) -> Transport:
    """The data plane named by `transport` (flower messages, or the ServerApp's gRPC stream)."""
    if settings.transport == "flower":
        return FlowerTransport(grid, spec, settings.step_timeout_s)
    tls = (TlsFiles(settings.tls_certfile, settings.tls_keyfile, settings.tls_ca_certfile)
           if settings.tls_certfile else None)
    # A simulation message cannot be lost, and may wait for a free actor: never resend there.
    resends = 0 if in_simulation(grid) else settings.connect_resends
    return StreamTransport(grid, spec, settings.step_timeout_s,
                           connect_timeout_s=settings.reply_timeout_s, connect_resends=resends,
                           host=settings.stream_host,
                           port=settings.stream_port, public_host=settings.stream_public_host,
                           wire_dtype=settings.stream_dtype, tls=tls)


def wait_for_nodes(grid: Grid, minimum: int, timeout_s: float) -> None:
    """Deployment: SuperNodes may connect after the run starts."""
    deadline = time.monotonic() + timeout_s
    while len(list(grid.get_node_ids())) < minimum:
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {minimum} nodes connected within {timeout_s:.0f} s")
        time.sleep(1.0)


def train(grid: Grid, settings: Settings) -> SplitFedStrategy:
    """Run (or resume) the configured training, then export the final peft adapter.

    The run folder's status.json says "running", then "completed" or "failed" with the cause.
    """
    recorder = RunRecorder(settings.output_dir, settings.run_name, settings.as_dict())
    recorder.status("running", runtime=provenance.runtime())
    if settings.server_threads:  # every thread's torch ops: the tails' worker, evaluation
        torch.set_num_threads(settings.server_threads)
    try:
        strategy = build_strategy(settings, grid, recorder)
        first_round = (strategy.resume(load_checkpoint(settings.resume_from))
                       if settings.resume_from else 1)
        wait_for_nodes(grid, settings.min_train_clients, settings.reply_timeout_s)
        # Bad data stops the run here, before any training. Simulation gives each node its
        # own partition, so the nodes connected now are at most the partitions there are.
        federated_text(settings.data, settings.model_name,
                       num_partitions=len(list(grid.get_node_ids()))).check()
        started = time.perf_counter()
        try:
            final = strategy.run(grid, first_round)
        finally:
            strategy.transport.close()
        adapter = recorder.folder / "adapter"
        strategy.model.save_adapter(final, adapter)
    except Exception as exc:
        recorder.status("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    recorder.status("completed", adapter=str(adapter), base=str(strategy.model.folder))
    log(INFO, "done in %.1f s; adapter: %s (PeftModel.from_pretrained(base, folder); base: %s)",
        time.perf_counter() - started, adapter, strategy.model.folder)
    return strategy


def log_runtime() -> None:
    """Say which Python and packages serve this run, and warn where they are not the
    project's (a local SuperLink started from another environment)."""
    info = provenance.runtime()
    log(INFO, "EdgeSplit ServerApp: python %s; app %s; %s", info["python"], info["app"],
        ", ".join(f"{p} {v}" for p, v in info["versions"].items()))
    for problem in info["mismatches"]:
        log(WARNING, "environment differs from the project: %s. A local SuperLink keeps the "
            "environment it was started from: stop it (see README, 'Checking a run') and "
            "start `flwr run` again from this project's environment", problem)


def read_settings(run_config: Mapping[str, Any]) -> Settings:
    """The run's settings, logged: a warning for each old key used and each changed key the run
    does not read, then the effective settings that matter."""
    settings, warnings = read(run_config)
    for message in warnings:
        log(WARNING, "%s", message)
    log(INFO, "effective settings (* = changed from the default; keys this run does not read "
        "are left out; reference: docs/config.md):\n  %s", "\n  ".join(summary(settings)))
    return settings


@app.main()
def main(grid: Grid, context: Context) -> None:
    log_runtime()
    skip_idle_nodes(grid)  # Ray simulation: a tick of Flower's poller no longer grows with N
    try:
        train(grid, read_settings(context.run_config))
    except Exception as exc:
        # `flwr run` exits 0 whatever the ServerApp does: make the failure the last word of the
        # log. The full traceback goes first; Flower then prints only RunFailed's few frames.
        cause = f"{type(exc).__name__}: {exc}"
        log(ERROR, "%s", traceback.format_exc().rstrip())
        log(ERROR, "run failed: %s (`flwr ls` lists the run as finished:failed; the run "
            "folder's status.json holds the cause)", cause)
        raise RunFailed(cause) from None
