"""The run config, checked once at the top: each name against the registry of the module that
implements it, and the rules that span packages (allocator vs split, U-shaped split vs model,
the split floor vs model and privacy report).

`edgesplit.settings` checks types and numeric ranges; everything that needs a registry of an
upper floor is here, so no lower module imports one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from allocation.allocators import ALLOCATORS, COST_MODELS
from allocation.makespan_model import SERVER_QUEUES
from clients.faults import parse as parse_faults
from clients.faults import parse_kinds as parse_fault_kinds
from edgesplit.channel import CHANNELS
from edgesplit.corpus import BUILTIN_CORPORA, DATA_FORMATS
from edgesplit.data import PARTITIONINGS
from edgesplit.framing import WIRE_DTYPES
from edgesplit.hardware import SERVERS
from edgesplit.optim import OPTIMIZERS
from edgesplit.placement import BASE_DTYPES, check_device_name
from edgesplit.privacy_report import read_report, report_wire, split_floor
from edgesplit.settings import Settings, objective_weights
from edgesplit.splits import check_split, split_range
from strategies.aggregation import AGGREGATIONS
from strategies.calibration import CALIBRATIONS
from strategies.transport import TRANSPORTS


def parse(run_config: Mapping[str, Any]) -> Settings:
    """`context.run_config` -> checked Settings (ValueError naming the key otherwise)."""
    settings = Settings.from_run_config(run_config)
    check_names(settings)
    return settings


def check_names(settings: Settings) -> None:
    """Every name-valued key against its registry, and the allocator's own needs."""
    s = settings
    choices = [("data-format", s.data_format, DATA_FORMATS),
               ("partitioning", s.partitioning, PARTITIONINGS),
               ("optimizer", s.optimizer, OPTIMIZERS),
               ("aggregation", s.aggregation, AGGREGATIONS),
               ("allocator", s.allocator, tuple(ALLOCATORS)),
               ("cost-model", s.cost_model, COST_MODELS),
               ("server-class", s.server_class, tuple(SERVERS)),
               ("server-queue", s.server_queue, SERVER_QUEUES),
               ("calibration", s.calibration, CALIBRATIONS),
               ("channel", s.channel, ("none", *CHANNELS)),
               ("transport", s.transport, TRANSPORTS),
               ("stream-dtype", s.stream_dtype, tuple(WIRE_DTYPES)),
               ("base-dtype", s.base_dtype, tuple(BASE_DTYPES))]
    for key, value, valid in choices:
        if value not in valid:
            raise s.error(key, f"one of {valid}")
    check_device_name(s.server_device, "server-device")
    check_device_name(s.client_device, "client-device")
    if s.corpus in BUILTIN_CORPORA and s.data_format != "text":
        raise s.error("data-format", f"the built-in corpus {s.corpus} is plain text; instruction "
                      "and chat data come from a local path in corpus")
    if s.corpus in BUILTIN_CORPORA and s.partition_by:
        raise s.error("partition-by", f"the built-in corpus {s.corpus} is grouped by speaker; "
                      "partition-by names a column of a local dataset")
    if s.device_tail_layers and s.transport != "stream":
        raise s.error("device-tail-layers", 'a U-shaped split needs transport = "stream"')
    if s.adapter_epsilon and s.aggregation != "fedavg":
        raise s.error("adapter-epsilon", "DP-FedAvg averages the clipped updates: set "
                      'aggregation = "fedavg"')
    if ALLOCATORS[s.allocator].learned and not s.rl_policy:
        raise s.error("rl-policy", f"allocator {s.allocator} needs a trained split policy: train "
                      "one with `python -m experiments.split_rl --out DIR`, then set "
                      'rl-policy="DIR/policy"')
    if s.server_queue != "shares" and s.cost_model != "makespan":
        raise s.error("server-queue", 'the server\'s queue is part of cost-model = "makespan"')
    if s.cell_bandwidth_hz and s.cost_model != "makespan":
        raise s.error("cell-bandwidth-hz", 'a cell is part of cost-model = "makespan" (the '
                      "paper model's clients already share server-bandwidth-hz)")
    if ALLOCATORS[s.allocator].learned and s.cost_model != "paper":
        raise s.error("cost-model", f"allocator {s.allocator} reads the paper model's radio: "
                      'set cost-model = "paper"')
    try:
        objective_weights(s.objective_weights)
    except ValueError:
        raise s.error("objective-weights", 'three finite weights >= 0, not all 0, as '
                      '"time,energy,stability" (e.g. "1,0,0": makespan only)') from None
    parse_faults(s.inject_faults)  # their own errors say what is wrong with them
    parse_fault_kinds(s.fault_kinds)


def check_against_model(settings: Settings, num_layers: int) -> None:
    """The rules that need the model's depth: the U-shaped tail and, where the allocator reads
    it, the fixed split."""
    t = settings.device_tail_layers
    if t > num_layers - 2:
        raise settings.error("device-tail-layers", f"at most {num_layers - 2} for a "
                             f"{num_layers}-layer model (the head and the server's body need a "
                             "layer each)")
    if ALLOCATORS[settings.allocator].uses_split:
        try:
            check_split(settings.split, num_layers, t)
        except ValueError as exc:
            raise settings.error("split", f"allocator {settings.allocator} uses it: {exc}"
                                 ) from None


def lowest_split(settings: Settings, num_layers: int) -> int:
    """The split floor the allocator keeps every client at or above: `min-device-layers`,
    raised to the floor of the leakage budget `max-token-recovery` read from `privacy-report`
    (for this model, the wire format the activations travel in and `activation-noise-std`)."""
    s = settings
    valid = split_range(num_layers, s.device_tail_layers)
    floor = max(valid.start, s.min_device_layers)
    if floor not in valid:
        raise s.error("min-device-layers", f"leaves no valid split: a {num_layers}-layer model "
                      f"splits in [{valid.start}, {valid.stop - 1}]")
    if s.max_token_recovery < 1:
        try:
            rows = read_report(s.privacy_report)
        except ValueError as exc:
            raise s.error("privacy-report", str(exc)) from None
        wire = report_wire(s.stream_dtype if s.transport == "stream" else "float32")
        try:
            floor = max(floor, split_floor(rows, s.model_name, wire, s.activation_noise_std,
                                           s.max_token_recovery, valid))
        except ValueError as exc:
            raise s.error("max-token-recovery", str(exc)) from None
    return floor
