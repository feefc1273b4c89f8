"""The run config, checked once at the top: each name against the registry of the module that
implements it, and the rules that span packages (allocator vs split, U-shaped split vs model,
the split floor vs model and privacy report).

`edgesplit.settings` checks types and numeric ranges; everything that needs a registry of an
upper floor is here, so no lower module imports one.
"""

from __future__ import annotations

import string
import warnings
from collections.abc import Callable, Mapping
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
from edgesplit.settings import (
    KEYS,
    START_HERE,
    DeprecatedKeyWarning,
    Settings,
    key_of,
    objective_weights,
)
from edgesplit.splits import check_split, split_range
from strategies.aggregation import AGGREGATIONS
from strategies.calibration import CALIBRATIONS
from strategies.transport import TRANSPORTS


def parse(run_config: Mapping[str, Any]) -> Settings:
    """`context.run_config` -> checked Settings (ValueError naming the key otherwise)."""
    settings = Settings.from_run_config(run_config)
    check_names(settings)
    return settings


def read(run_config: Mapping[str, Any]) -> tuple[Settings, list[str]]:
    """`parse`, and the warnings a run starts with: each old flat key used (with its new key),
    then each key changed from its default that these settings do not read (`ignored`)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeprecatedKeyWarning)
        settings = parse(run_config)
    deprecated = [str(w.message) for w in caught if issubclass(w.category, DeprecatedKeyWarning)]
    return settings, deprecated + ignored(settings)


# Keys read only under other settings: (attribute, whether it is read, when: the condition, with
# the deciding settings as {attribute} fields). A changed key its run does not read gets a
# warning naming them.
Rule = tuple[str, Callable[[Settings], bool], str]
RULES: list[Rule] = [
    *[(a, lambda s: s.corpus not in BUILTIN_CORPORA, "{corpus} is a local path")
      for a in ("text_field", "instruction_field", "input_field", "output_field",
                "messages_field", "partition_by")],
    ("text_field", lambda s: s.data_format == "text", '{data_format} = "text"'),
    *[(a, lambda s: s.data_format == "instruction", '{data_format} = "instruction"')
      for a in ("instruction_field", "input_field", "output_field")],
    ("messages_field", lambda s: s.data_format == "chat", '{data_format} = "chat"'),
    ("partition_by", lambda s: s.partitioning != "iid", '{partitioning} is not "iid"'),
    ("dirichlet_alpha", lambda s: s.partitioning == "dirichlet",
     '{partitioning} = "dirichlet"'),
    ("trim_fraction", lambda s: s.aggregation == "trimmed-mean",
     '{aggregation} = "trimmed-mean"'),
    ("split", lambda s: ALLOCATORS[s.allocator].uses_split,
     '{allocator} = "fixed" or "heterogeneous-fixed"'),
    ("rl_policy", lambda s: ALLOCATORS[s.allocator].learned, '{allocator} = "rl-split"'),
    *[(a, lambda s: s.cost_model == "makespan", '{cost_model} = "makespan"')
      for a in ("server_class", "server_queue", "adapter_upload")],
    ("server_bandwidth_hz", lambda s: s.cost_model == "paper", '{cost_model} = "paper"'),
    *[(a, lambda s: s.cost_model == "makespan", '{cost_model} = "makespan"')
      for a in ("cell_bandwidth_hz", "cell_subchannels")],
    ("cell_subchannels", lambda s: s.cell_bandwidth_hz > 0, "{cell_bandwidth_hz} > 0"),
    ("calibration_steps", lambda s: s.calibration != "none", '{calibration} is not "none"'),
    ("privacy_report", lambda s: s.max_token_recovery < 1, "{max_token_recovery} < 1"),
    *[(a, lambda s: s.privacy_epsilon > 0 or s.adapter_epsilon > 0,
       "{privacy_epsilon} > 0 or {adapter_epsilon} > 0") for a in ("privacy_delta",
                                                                   "privacy_rounds")],
    *[(a, lambda s: s.privacy_epsilon > 0, "{privacy_epsilon} > 0")
      for a in ("activation_clip", "gradient_clip")],
    ("adapter_clip", lambda s: s.adapter_epsilon > 0, "{adapter_epsilon} > 0"),
    *[(a, lambda s: s.channel != "none", '{channel} is not "none"')
      for a in ("channel_snr_db", "channel_bits")],
    ("channel_bits", lambda s: s.channel == "quantise-flip", '{channel} = "quantise-flip"'),
    ("nakagami_m", lambda s: ALLOCATORS[s.allocator].learned or s.channel in ("erasure", "noise"),
     '{allocator} = "rl-split" or {channel} is "erasure" or "noise"'),
    *[(a, lambda s: s.transport == "stream", '{transport} = "stream"')
      for a in ("stream_host", "stream_public_host", "stream_port", "stream_dtype", "pace_links",
                "tls_certfile", "tls_keyfile", "tls_ca_certfile", "connect_resends")],
    *[(a, lambda s: s.eval_every > 0, "{eval_every} > 0")
      for a in ("eval_batches", "eval_overlap", "sample_prompts", "sample_tokens", "channel",
                "channel_snr_db", "channel_bits")],
    *[(a, lambda s: not s.device_tail_layers,
       "{device_tail_layers} = 0 (a U-shaped split's server evaluates alone)")
      for a in ("eval_overlap", "channel", "channel_snr_db", "channel_bits")],
    ("sample_tokens", lambda s: bool(s.prompts), "{sample_prompts} is not empty"),
    ("fault_kinds", lambda s: s.fault_rate > 0, "{fault_rate} > 0"),
]


def deciders(when: str) -> list[str]:
    """The settings a rule's condition names (its {attribute} fields)."""
    return [name for _, name, _, _ in string.Formatter().parse(when) if name]


def condition(when: str) -> str:
    """A rule's condition with the run-config keys in place of its {attribute} fields."""
    return when.format(**{name: key_of(name) for name in deciders(when)})


def ignored(settings: Settings) -> list[str]:
    """One warning per key changed from its default that `settings` do not read, naming the
    setting that leaves it unread (the first rule it fails)."""
    defaults, messages, warned = Settings(), [], set()
    for attribute, is_read, when in RULES:
        value = getattr(settings, attribute)
        if attribute in warned or value == getattr(defaults, attribute) or is_read(settings):
            continue
        warned.add(attribute)
        now = ", ".join(f"{key_of(d)} = {getattr(settings, d)!r}" for d in deciders(when))
        messages.append(f"config {key_of(attribute)} = {value!r} has no effect: it is read only "
                        f"when {condition(when)} (this run: {now})")
    return messages


def is_read(settings: Settings, attribute: str) -> bool:
    """Whether a run with these settings reads this key (every rule on it holds)."""
    return all(read(settings) for a, read, _ in RULES if a == attribute)


# Beyond START_HERE, the keys a run's summary always shows (where they are read).
SUMMARY_KEYS = ("model.base-dtype", "data.partitioning", "train.aggregation",
                "allocation.cost-model", "allocation.calibration", "stream.transport",
                "stream.dtype", "eval.every", "run.seed")


def summary(settings: Settings) -> list[str]:
    """The effective settings that matter, one line per section: the start-here and summary keys,
    and every other key changed from its default; keys the run does not read are left out."""
    defaults, shown = Settings(), set(START_HERE) | set(SUMMARY_KEYS)
    lines: dict[str, list[str]] = {}
    for attribute, key in KEYS.items():
        value = getattr(settings, attribute)
        changed = value != getattr(defaults, attribute)
        if (key in shown or changed) and is_read(settings, attribute):
            section, name = key.split(".", 1)
            lines.setdefault(section, []).append(f"{name}={value!r}{'*' if changed else ''}")
    width = max(map(len, lines), default=0)
    return [f"{section:<{width}}  {' '.join(items)}" for section, items in lines.items()]


def check_names(settings: Settings) -> None:
    """Every name-valued key against its registry, and the allocator's own needs."""
    s = settings
    choices = [("data.format", s.data_format, DATA_FORMATS),
               ("data.partitioning", s.partitioning, PARTITIONINGS),
               ("train.optimizer", s.optimizer, OPTIMIZERS),
               ("train.aggregation", s.aggregation, AGGREGATIONS),
               ("allocation.method", s.allocator, tuple(ALLOCATORS)),
               ("allocation.cost-model", s.cost_model, COST_MODELS),
               ("allocation.server-class", s.server_class, tuple(SERVERS)),
               ("allocation.server-queue", s.server_queue, ("auto", *SERVER_QUEUES)),
               ("allocation.calibration", s.calibration, CALIBRATIONS),
               ("channel.kind", s.channel, ("none", *CHANNELS)),
               ("stream.transport", s.transport, TRANSPORTS),
               ("stream.dtype", s.stream_dtype, tuple(WIRE_DTYPES)),
               ("model.base-dtype", s.base_dtype, tuple(BASE_DTYPES))]
    for key, value, valid in choices:
        if value not in valid:
            raise s.error(key, f"one of {valid}")
    check_device_name(s.server_device, "compute.server-device")
    check_device_name(s.client_device, "compute.client-device")
    if s.corpus in BUILTIN_CORPORA and s.data_format != "text":
        raise s.error("data.format", f"the built-in corpus {s.corpus} is plain text; instruction "
                      "and chat data come from a local path in corpus")
    if s.corpus in BUILTIN_CORPORA and s.partition_by:
        raise s.error("data.partition-by", f"the built-in corpus {s.corpus} is grouped by speaker; "
                      "data.partition-by names a column of a local dataset")
    if s.device_tail_layers and s.transport != "stream":
        raise s.error("privacy.device-tail-layers",
                      'a U-shaped split needs stream.transport = "stream"')
    if s.adapter_epsilon and s.aggregation != "fedavg":
        raise s.error("privacy.adapter-epsilon", "DP-FedAvg averages the clipped updates: set "
                      'train.aggregation = "fedavg"')
    if ALLOCATORS[s.allocator].learned and not s.rl_policy:
        raise s.error("allocation.rl-policy", f"allocator {s.allocator} needs a trained split "
                      "policy: train one with `python -m experiments.split_rl --out DIR`, then set "
                      'allocation.rl-policy="DIR/policy"')
    if s.server_queue not in ("auto", "shares") and s.cost_model != "makespan":
        raise s.error("allocation.server-queue", 'the server\'s queue is part of '
                                                 'allocation.cost-model = "makespan"')
    if s.cell_bandwidth_hz and s.cost_model != "makespan":
        raise s.error("allocation.cell-bandwidth-hz",
                      'a cell is part of allocation.cost-model = "makespan" (the '
                      "paper model's clients already share allocation.server-bandwidth-hz)")
    if ALLOCATORS[s.allocator].learned and s.cost_model != "paper":
        raise s.error("allocation.cost-model", f"allocator {s.allocator} reads the paper model's "
                                               "radio: "
                      'set allocation.cost-model = "paper"')
    try:
        objective_weights(s.objective_weights)
    except ValueError:
        raise s.error("allocation.objective-weights", 'three finite weights >= 0, not all 0, as '
                      '"time,energy,stability" (e.g. "1,0,0": makespan only)') from None
    parse_faults(s.inject_faults)  # their own errors say what is wrong with them
    parse_fault_kinds(s.fault_kinds)


def check_against_model(settings: Settings, num_layers: int) -> None:
    """The rules that need the model's depth: the U-shaped tail and, where the allocator reads
    it, the fixed split."""
    t = settings.device_tail_layers
    if t > num_layers - 2:
        raise settings.error("privacy.device-tail-layers", f"at most {num_layers - 2} for a "
                             f"{num_layers}-layer model (the head and the server's body need a "
                             "layer each)")
    if ALLOCATORS[settings.allocator].uses_split:
        try:
            check_split(settings.split, num_layers, t)
        except ValueError as exc:
            raise settings.error("allocation.fixed-split",
                                 f"allocator {settings.allocator} uses it: {exc}"
                                 ) from None


def lowest_split(settings: Settings, num_layers: int) -> int:
    """The split floor the allocator keeps every client at or above: `privacy.min-device-layers`,
    raised to the floor of the leakage budget `privacy.max-token-recovery` read from
    `privacy.report`
    (for this model, the wire format the activations travel in and
    `privacy.activation-noise-std`)."""
    s = settings
    valid = split_range(num_layers, s.device_tail_layers)
    floor = max(valid.start, s.min_device_layers)
    if floor not in valid:
        raise s.error("privacy.min-device-layers",
                      f"leaves no valid split: a {num_layers}-layer model "
                      f"splits in [{valid.start}, {valid.stop - 1}]")
    if s.max_token_recovery < 1:
        try:
            rows = read_report(s.privacy_report)
        except ValueError as exc:
            raise s.error("privacy.report", str(exc)) from None
        wire = report_wire(s.stream_dtype if s.transport == "stream" else "float32")
        try:
            floor = max(floor, split_floor(rows, s.model_name, wire, s.activation_noise_std,
                                           s.max_token_recovery, valid))
        except ValueError as exc:
            raise s.error("privacy.max-token-recovery", str(exc)) from None
    return floor
