"""EdgeSplit ServerApp: the edge server runs every client's tail and aggregates the adapters."""

from __future__ import annotations

import time
from logging import INFO

from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from allocation.allocators import SystemAllocator, check_split
from fl_app.config import Settings
from fl_app.protocol import Spec, activation_spec
from fl_app.resources import federated_text
from fl_app.split_model import SplitModel
from strategies.aggregation import make_aggregator
from strategies.outputs import RunRecorder, load_checkpoint
from strategies.split_fed import SplitFedStrategy
from strategies.stream_transport import StreamTransport, TlsFiles
from strategies.transport import FlowerTransport, Transport

app = ServerApp()


def build_strategy(settings: Settings, grid: Grid) -> SplitFedStrategy:
    """Wire the pieces a run needs from its settings (raises ValueError on a bad config)."""
    model = SplitModel(settings.model_name, settings.lora, seed=settings.seed)
    if settings.device_tail_layers > model.num_layers - 2:
        raise ValueError(f"config device-tail-layers = {settings.device_tail_layers}: at most "
                         f"{model.num_layers - 2} for a {model.num_layers}-layer model (the "
                         "head and the server's body need a layer each)")
    check_split(settings.split, model.num_layers - settings.device_tail_layers)
    allocator = SystemAllocator(settings.allocator, settings.split, settings.seed,
                                settings.server_bandwidth_hz,
                                split_policy=settings.rl_policy or None,
                                fading_m=settings.nakagami_m)
    spec = activation_spec(model.config.hidden_size, settings.block_size)
    recorder = RunRecorder(settings.output_dir, settings.run_name, settings.as_dict())
    heldout = federated_text(settings, num_partitions=1).heldout
    return SplitFedStrategy(settings, model, allocator, build_transport(settings, grid, spec),
                            make_aggregator(settings.aggregation, settings.trim_fraction),
                            recorder, heldout, spec)


def build_transport(settings: Settings, grid: Grid, spec: Spec) -> Transport:
    """The data plane named by `transport` (flower messages, or the ServerApp's gRPC stream)."""
    if settings.transport == "flower":
        return FlowerTransport(grid, spec, settings.step_timeout_s)
    tls = (TlsFiles(settings.tls_certfile, settings.tls_keyfile, settings.tls_ca_certfile)
           if settings.tls_certfile else None)
    return StreamTransport(grid, spec, settings.step_timeout_s,
                           connect_timeout_s=settings.reply_timeout_s, host=settings.stream_host,
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
    """Run (or resume) the configured training, then export the final peft adapter."""
    strategy = build_strategy(settings, grid)
    first_round = (strategy.resume(load_checkpoint(settings.resume_from))
                   if settings.resume_from else 1)
    wait_for_nodes(grid, settings.min_train_clients, settings.reply_timeout_s)
    started = time.perf_counter()
    final = strategy.run(grid, first_round)
    adapter = strategy.recorder.folder / "adapter"
    strategy.model.save_adapter(final, adapter)
    log(INFO, "done in %.1f s; adapter: %s (PeftModel.from_pretrained(base, folder); base: %s)",
        time.perf_counter() - started, adapter, strategy.model.folder)
    return strategy


@app.main()
def main(grid: Grid, context: Context) -> None:
    train(grid, Settings.from_run_config(context.run_config))
