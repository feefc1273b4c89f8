"""EdgeSplit ServerApp: the edge server runs every client's tail and aggregates the adapters."""

from __future__ import annotations

import time
from logging import INFO

from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from allocation.allocators import FixedAllocator, HeterogeneousFixedAllocator, check_split
from fl_app.config import Settings
from fl_app.protocol import activation_spec
from fl_app.resources import federated_text
from fl_app.split_model import SplitModel
from strategies.aggregation import fedavg
from strategies.outputs import RunRecorder
from strategies.split_fed import SplitFedStrategy
from strategies.transport import FlowerTransport

app = ServerApp()


def build_strategy(settings: Settings, grid: Grid) -> SplitFedStrategy:
    """Wire the pieces a run needs from its settings (raises ValueError on a bad config)."""
    model = SplitModel(settings.model_name, settings.lora, seed=settings.seed)
    check_split(settings.split, model.num_layers)
    allocator = (FixedAllocator(settings.split) if settings.allocator == "fixed"
                 else HeterogeneousFixedAllocator(max_split=settings.split))
    spec = activation_spec(model.config.hidden_size, settings.block_size)
    recorder = RunRecorder(settings.output_dir, settings.run_name, settings.as_dict())
    heldout = federated_text(settings, num_partitions=1).heldout
    return SplitFedStrategy(settings, model, allocator,
                            FlowerTransport(grid, spec, settings.step_timeout_s), fedavg,
                            recorder, heldout, spec)


def wait_for_nodes(grid: Grid, minimum: int, timeout_s: float) -> None:
    """Deployment: SuperNodes may connect after the run starts."""
    deadline = time.monotonic() + timeout_s
    while len(list(grid.get_node_ids())) < minimum:
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {minimum} nodes connected within {timeout_s:.0f} s")
        time.sleep(1.0)


@app.main()
def main(grid: Grid, context: Context) -> None:
    settings = Settings.from_run_config(context.run_config)
    strategy = build_strategy(settings, grid)
    wait_for_nodes(grid, settings.min_train_clients, settings.step_timeout_s)
    started = time.perf_counter()
    final = strategy.run(grid)
    adapter = strategy.recorder.folder / "adapter"
    strategy.model.save_adapter(final, adapter)
    log(INFO, "done in %.1f s; adapter: %s (PeftModel.from_pretrained(base, folder); base: %s)",
        time.perf_counter() - started, adapter, strategy.model.folder)
