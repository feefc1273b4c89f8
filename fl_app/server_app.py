"""EdgeSplit ServerApp: the edge server runs every client's tail and aggregates the adapters."""

from __future__ import annotations

import time
from logging import INFO

from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from allocation.allocators import SystemAllocator
from edgesplit.data import federated_text
from edgesplit.protocol import activation_spec
from edgesplit.records import Spec
from edgesplit.settings import Settings
from edgesplit.split_model import SplitModel
from fl_app.run_config import check_against_model, lowest_split, parse
from strategies.aggregation import make_aggregator
from strategies.evaluation import Evaluator, evaluation_channel
from strategies.flower_transport import FlowerTransport
from strategies.outputs import RunRecorder, load_checkpoint
from strategies.split_fed import SplitFedStrategy
from strategies.stream_transport import StreamTransport, TlsFiles
from strategies.transport import Transport

app = ServerApp()


def build_strategy(settings: Settings, grid: Grid) -> SplitFedStrategy:
    """Wire the pieces a run needs from its settings (raises ValueError on a bad config)."""
    model = SplitModel(settings.model_name, settings.lora, seed=settings.seed)
    check_against_model(settings, model.num_layers)
    floor = lowest_split(settings, model.num_layers)
    if floor > 1:
        log(INFO, "split floor: every client keeps at least %d head layers", floor)
    allocator = SystemAllocator(settings.allocator, settings.split, settings.seed,
                                settings.server_bandwidth_hz,
                                split_policy=settings.rl_policy or None,
                                fading_m=settings.nakagami_m, min_split=floor)
    spec = activation_spec(model.config.hidden_size, settings.block_size)
    recorder = RunRecorder(settings.output_dir, settings.run_name, settings.as_dict())
    evaluator = Evaluator(
        model, federated_text(settings.data, settings.model_name, num_partitions=1).heldout,
        spec, batch_size=settings.batch_size, eval_batches=settings.eval_batches,
        reply_timeout_s=settings.reply_timeout_s, seed=settings.seed,
        channel=evaluation_channel(settings.channel, settings.channel_snr_db,
                                   settings.nakagami_m, settings.channel_bits))
    return SplitFedStrategy(settings, model, allocator, build_transport(settings, grid, spec),
                            make_aggregator(settings.aggregation, settings.trim_fraction),
                            recorder, evaluator)


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
    train(grid, parse(context.run_config))
