"""Run settings: `[tool.flwr.app.config]` read once into a typed object, with its range checks.

Each field's run-config key is a dotted `section.name` (the `KEYS` table); the old flat keys of
EdgeSplit 0.1 still work, with a `DeprecatedKeyWarning` naming the new key. Types and numeric
ranges are checked here, so a wrong value stops the run with an error naming the key.
Which names are valid (allocators, partitionings, wire dtypes...) is known only to the modules
that implement them: `fl_app.run_config` checks those once, at the top, with every registry in
reach. This module imports nothing of ours, so every floor can take its settings from here.

The dataclass defaults are the one home of every default: `pyproject.toml` repeats them because
Flower needs each key there, and a test keeps the two equal.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters.

    rank : int (default: 8)
    alpha : float (default: 16)
    dropout : float (default: 0.0)
        Zero keeps split and unsplit training bit-identical (no random numbers consumed).
    target_modules : tuple of str or None (default: None)
        Module names to adapt; None takes the family's attention + MLP projections.
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = field(default=None)


@dataclass(frozen=True)
class DataSettings:
    """How the corpus becomes per-client token blocks (see `edgesplit.data.FederatedText`).

    The field names and defaults are those of `Settings` (its run-config keys).
    """

    corpus: str = "shakespeare"
    data_format: str = "text"
    text_field: str = "text"
    instruction_field: str = "instruction"
    input_field: str = "input"
    output_field: str = "output"
    messages_field: str = "messages"
    partition_by: str = ""
    partitioning: str = "natural"
    dirichlet_alpha: float = 0.5
    block_size: int = 32
    val_fraction: float = 0.1
    heldout_fraction: float = 0.02
    seed: int = 0


@dataclass(frozen=True)
class PrivacySettings:
    """A device's differential privacy budget for what it sends (`clients.privacy`).

    epsilon, delta : float
        The (epsilon, delta) every block of the device's text keeps over the whole run.
    activation_clip : float (default: 1.0)
        Per-token L2 clip of the activations, in units of the median centred token norm of a
        public probe at the device's split (`edgesplit.dp.probe_scale`).
    gradient_clip : float (default: 1.0)
        Per-row L2 clip of the gradients a U-shaped device returns, in units of the probe's.
    planned_rounds : int (default: 1)
        Rounds the noise is planned for (the run's `train.rounds`): a device that trains
        in all of them ends the run with exactly its budget spent.
    """

    epsilon: float
    delta: float
    activation_clip: float = 1.0
    gradient_clip: float = 1.0
    planned_rounds: int = 1


# The run config's keys, section by section in the order pyproject.toml lists them (after its
# "start here" block): `Settings` attribute -> dotted key. Adding a key to a section is one line
# here (plus its line, with a comment, in pyproject.toml). A field missing here keeps its flat
# kebab-case name, and tests/edgesplit/test_settings.py says which section it lacks.
KEYS: dict[str, str] = {
    # model: what is fine-tuned
    "model_name": "model.name",
    "base_dtype": "model.base-dtype",
    # lora: the adapter
    "lora_rank": "lora.rank",
    "lora_alpha": "lora.alpha",
    "lora_dropout": "lora.dropout",
    "lora_targets": "lora.targets",
    # data: the corpus, its format and how clients share it
    "corpus": "data.corpus",
    "data_format": "data.format",
    "text_field": "data.text-field",
    "instruction_field": "data.instruction-field",
    "input_field": "data.input-field",
    "output_field": "data.output-field",
    "messages_field": "data.messages-field",
    "partition_by": "data.partition-by",
    "partitioning": "data.partitioning",
    "dirichlet_alpha": "data.dirichlet-alpha",
    "block_size": "data.block-size",
    "val_fraction": "data.val-fraction",
    "heldout_fraction": "data.heldout-fraction",
    # train: rounds, local steps, optimizer, aggregation
    "num_server_rounds": "train.rounds",
    "fraction_train": "train.client-fraction",
    "min_train_clients": "train.min-clients",
    "local_steps": "train.local-steps",
    "batch_size": "train.batch-size",
    "learning_rate": "train.learning-rate",
    "optimizer": "train.optimizer",
    "aggregation": "train.aggregation",
    "trim_fraction": "train.trim-fraction",
    # allocation: who splits where, and the cost model that decides it
    "allocator": "allocation.method",
    "cost_model": "allocation.cost-model",
    "objective_weights": "allocation.objective-weights",
    "split": "allocation.fixed-split",
    "server_class": "allocation.server-class",
    "server_queue": "allocation.server-queue",
    "adapter_upload": "allocation.adapter-upload",
    "calibration": "allocation.calibration",
    "calibration_steps": "allocation.calibration-steps",
    "server_bandwidth_hz": "allocation.server-bandwidth-hz",
    "cell_bandwidth_hz": "allocation.cell-bandwidth-hz",
    "cell_subchannels": "allocation.cell-subchannels",
    "rl_policy": "allocation.rl-policy",
    # privacy: what the server may see
    "device_tail_layers": "privacy.device-tail-layers",
    "min_device_layers": "privacy.min-device-layers",
    "max_token_recovery": "privacy.max-token-recovery",
    "privacy_report": "privacy.report",
    "activation_noise_std": "privacy.activation-noise-std",
    "privacy_epsilon": "privacy.epsilon",
    "privacy_delta": "privacy.delta",
    "privacy_rounds": "privacy.rounds",
    "activation_clip": "privacy.activation-clip",
    "gradient_clip": "privacy.gradient-clip",
    "adapter_epsilon": "privacy.adapter-epsilon",
    "adapter_clip": "privacy.adapter-clip",
    # channel: the lossy link of split inference (evaluation) and rl-split's radio
    "channel": "channel.kind",
    "channel_snr_db": "channel.snr-db",
    "channel_bits": "channel.bits",
    "nakagami_m": "channel.nakagami-m",
    # stream: the data plane of per-step activations and gradients
    "transport": "stream.transport",
    "stream_host": "stream.host",
    "stream_public_host": "stream.public-host",
    "stream_port": "stream.port",
    "stream_dtype": "stream.dtype",
    "pace_links": "stream.pace-links",
    "tls_certfile": "stream.tls-certfile",
    "tls_keyfile": "stream.tls-keyfile",
    "tls_ca_certfile": "stream.tls-ca-certfile",
    # compute: where and on how many threads the models run
    "server_device": "compute.server-device",
    "client_device": "compute.client-device",
    "server_threads": "compute.server-threads",
    "client_threads": "compute.client-threads",
    "batch_tails": "compute.batch-tails",
    # eval: validation, held-out perplexity and sample generations
    "eval_every": "eval.every",
    "eval_batches": "eval.batches",
    "eval_overlap": "eval.overlap",
    "sample_prompts": "eval.sample-prompts",
    "sample_tokens": "eval.sample-tokens",
    # faults: when a silent client is dropped, and injected faults for testing
    "step_timeout_s": "faults.step-timeout-s",
    "reply_timeout_s": "faults.reply-timeout-s",
    "connect_resends": "faults.connect-resends",
    "inject_faults": "faults.inject",
    "fault_rate": "faults.rate",
    "fault_kinds": "faults.kinds",
    # run: seed and run folder
    "seed": "run.seed",
    "output_dir": "run.output-dir",
    "run_name": "run.name",
    "resume_from": "run.resume-from",
}

#: The keys most runs change, listed first in pyproject.toml (a newcomer's one screen).
START_HERE = ("model.name", "data.corpus", "data.format", "data.text-field", "data.partition-by",
              "data.block-size", "train.rounds", "train.local-steps", "train.batch-size",
              "train.learning-rate", "lora.rank", "allocation.method", "compute.server-device",
              "run.name")


class DeprecatedKeyWarning(FutureWarning):
    """A run config used an old flat key (EdgeSplit 0.1); the message names its new key."""


def flat_name(attribute: str) -> str:
    """The EdgeSplit 0.1 key of a `Settings` attribute (kebab-case, `lora.` dotted)."""
    return attribute.replace("lora_", "lora.").replace("_", "-")


def key_of(attribute: str) -> str:
    """The run-config key of a `Settings` attribute."""
    return KEYS.get(attribute, flat_name(attribute))


def _attributes() -> list[str]:
    return [f.name for f in dataclasses.fields(Settings)]


def attribute_of(name: str) -> str:
    """The `Settings` attribute named by a key, an old flat key or the attribute itself."""
    attributes = _attributes()
    if name in attributes:
        return name
    by_name = {key_of(a): a for a in attributes} | {flat_name(a): a for a in attributes}
    if name not in by_name:
        raise KeyError(f"no run-config key {name!r}")
    return by_name[name]


def old_names() -> dict[str, str]:
    """Old flat key -> its new key, for every key that moved into a section (accepted with a
    `DeprecatedKeyWarning` until the next release)."""
    return {flat_name(a): key_of(a) for a in _attributes() if flat_name(a) != key_of(a)}


def new_keys(run_config: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Rename a run config's old flat keys to their new keys.

    Returns the renamed config and one deprecation message per old key set. pyproject.toml
    declares every old key with its new key's name as the value (Flower refuses an override of
    an undeclared key): an old key holding that value is not set. ValueError if an old key and
    its new key are both set to different values; a new key at its default counts as not set
    (under `flwr run` every key is present, at its default unless overridden).
    """
    moved, defaults = old_names(), Settings()
    renamed = {k: v for k, v in run_config.items() if k not in moved}
    messages = []
    for old, key in moved.items():
        if old not in run_config or run_config[old] == key:
            continue
        value, default = run_config[old], getattr(defaults, attribute_of(key))
        if key in run_config and run_config[key] not in (default, value):
            raise ValueError(f"config {old} = {value!r} and {key} = {run_config[key]!r} are both "
                             f"set: {old} is the old name of {key}, keep {key} only")
        renamed[key] = value
        messages.append(f"config key {old} is deprecated (removed in the next release): use "
                        f"{key} = {value!r}")
    return renamed, messages


@dataclass(frozen=True)
class Settings:
    """Every knob of a run (defaults = the built-in main job)."""

    model_name: str = "smollm2-135m"
    base_dtype: str = "float32"  # the frozen base's precision; LoRA and optimizer stay float32
    server_device: str = "auto"  # the server's model (every tail): auto | cpu | cuda | cuda:<i>
    client_device: str = "cpu"  # a device's head (simulation): auto | cpu | cuda | cuda:<i>
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: str = ""  # comma-separated module names; empty = the family's defaults
    corpus: str = "shakespeare"  # a built-in corpus or a local path (file, folder, save_to_disk)
    data_format: str = "text"  # text (packed) | instruction | chat (loss on responses only)
    text_field: str = "text"
    instruction_field: str = "instruction"
    input_field: str = "input"  # empty = the data has no input column
    output_field: str = "output"
    messages_field: str = "messages"
    partition_by: str = ""  # local data: the column naming each record's group
    partitioning: str = "natural"
    dirichlet_alpha: float = 0.5
    block_size: int = 32
    val_fraction: float = 0.1
    heldout_fraction: float = 0.02
    num_server_rounds: int = 3
    fraction_train: float = 1.0
    min_train_clients: int = 2
    local_steps: int = 4
    batch_size: int = 4
    learning_rate: float = 2e-3
    optimizer: str = "adamw"
    batch_tails: bool = False  # stream: serve same-split tails waiting together in one pass
    server_threads: int = 0  # the ServerApp's torch intra-op threads; 0 = torch's default
    client_threads: int = 1  # each ClientApp's torch intra-op threads (heads)
    aggregation: str = "fedavg"  # fedavg | median | trimmed-mean (robust to outlier clients)
    trim_fraction: float = 0.1  # trimmed-mean: share of clients cut at each end, per coordinate
    allocator: str = "fp"
    cost_model: str = "makespan"  # makespan (shared server, memory caps) | paper (seed A)
    server_class: str = "l4"  # makespan model: the edge server's catalogue class
    server_queue: str = "auto"  # makespan model: auto | shares (processor sharing) | fifo
    adapter_upload: bool = True  # makespan model: count each device's end-of-round upload
    calibration: str = "measure"  # measure: time devices and server at the start | track: and
    # rescale their speeds after every round by the round's measured times | none
    calibration_steps: int = 3  # timed training steps per head size (after one warm-up)
    device_tail_layers: int = 0  # U-shaped split: the device also runs the last N layers + LM head
    split: int = 4  # `fixed`: everyone's split; `heterogeneous-fixed`: the deepest split
    server_bandwidth_hz: float = 20e6
    cell_bandwidth_hz: float = 0.0  # makespan model: the band `cell` devices share; 0 = none
    cell_subchannels: int = 50  # makespan model: the cell's subchannels (resource blocks)
    objective_weights: str = "1,0,0"  # the allocator's weights of time, energy, stability
    rl_policy: str = ""  # rl-split: folder of a trained split policy (experiments.split_rl)
    min_device_layers: int = 0  # split floor: every client keeps at least this many head layers
    max_token_recovery: float = 1.0  # leakage budget read from privacy.report; 1 = none
    privacy_report: str = ""  # CSV of `python -m experiments.privacy` (for
                              # privacy.max-token-recovery)
    activation_noise_std: float = 0.0  # device: noise on sent activations, x median token RMS
    privacy_epsilon: float = 0.0  # device: (epsilon, delta)-DP of every frame it sends; 0 = off
    privacy_delta: float = 1e-5  # the delta of privacy.epsilon and privacy.adapter-epsilon
    privacy_rounds: int = 0  # rounds both budgets are planned for; 0 = train.rounds
    activation_clip: float = 1.0  # per-token L2 clip, x the probe's median centred token norm
    gradient_clip: float = 1.0  # U-shaped: per-row clip of returned gradients, x the probe's median
    adapter_epsilon: float = 0.0  # server: user-level DP of the global adapter; 0 = off
    adapter_clip: float = 0.05  # L2 clip of one client's adapter update in one round
    nakagami_m: float = 1.0  # fading shape of the SNR -> loss-rate mapping and the channel
    channel: str = "none"  # evaluation only: the link the validation activations cross
    channel_snr_db: float = 10.0
    channel_bits: int = 8  # quantise-flip: bits per activation value
    transport: str = "stream"
    stream_host: str = "127.0.0.1"  # the stream server binds here
    stream_public_host: str = ""  # the host devices dial; empty = stream.host
    stream_port: int = 0  # 0 = OS-chosen
    stream_dtype: str = "float32"
    pace_links: bool = False  # stream: pace each client's frames at its allocated link rate
    tls_certfile: str = ""  # PEM files protecting the stream; empty = no TLS
    tls_keyfile: str = ""
    tls_ca_certfile: str = ""  # the CA devices verify the server with; empty = the cert itself
    step_timeout_s: float = 300.0
    reply_timeout_s: float = 600.0  # profile and evaluation requests (cold starts included)
    connect_resends: int = 1  # deployment: round messages resent to a client late to connect
    eval_every: int = 1
    inject_faults: str = ""  # testing: "partition:kind,..." makes those clients misbehave
    fault_rate: float = 0.0  # testing: each client misbehaves in a round with this probability
    fault_kinds: str = "raise,silent,crash,disconnect,straggle"  # what faults.rate draws from
    eval_batches: int = 2
    eval_overlap: bool = False  # the server's own evaluation runs while the devices compute theirs
    # Greedy generations from these prompts ("|"-separated) each evaluation round; empty = none.
    sample_prompts: str = "To be, or not to be|My gracious lord,|Now is the winter of"
    sample_tokens: int = 32
    seed: int = 0
    output_dir: str = "outputs"
    run_name: str = ""  # empty = a timestamp
    resume_from: str = ""  # a checkpoint file or run folder to continue from; empty = fresh

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> Settings:
        """Build from `context.run_config`; unknown keys are ignored, wrong ones raise. Old flat
        keys are renamed with a `DeprecatedKeyWarning` naming the new key (`new_keys`)."""
        run_config, messages = new_keys(run_config)
        for message in messages:
            warnings.warn(message, DeprecatedKeyWarning, stacklevel=2)
        values = {}
        for f in dataclasses.fields(cls):
            key = key_of(f.name)
            if key not in run_config:
                continue
            value, expected = run_config[key], type(f.default)
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if type(value) is not expected:
                raise ValueError(f"config {key} = {value!r}: expected {expected.__name__}")
            values[f.name] = value
        settings = cls(**values)
        settings.check_ranges()
        return settings

    def check_ranges(self) -> None:
        """Raise ValueError naming the first key whose value is out of its numeric range."""
        checks = [
            ("lora.rank", self.lora_rank >= 1, "must be >= 1"),
            ("lora.alpha", self.lora_alpha > 0, "must be > 0"),
            ("lora.dropout", 0 <= self.lora_dropout < 1, "must be in [0, 1)"),
            ("data.dirichlet-alpha", self.dirichlet_alpha > 0, "must be > 0"),
            ("data.block-size", self.block_size >= 2, "must be >= 2"),
            ("data.val-fraction", 0 < self.val_fraction < 1, "must be in (0, 1)"),
            ("data.heldout-fraction", 0 < self.heldout_fraction < 1, "must be in (0, 1)"),
            ("train.rounds", self.num_server_rounds >= 1, "must be >= 1"),
            ("train.client-fraction", 0 < self.fraction_train <= 1, "must be in (0, 1]"),
            ("train.min-clients", self.min_train_clients >= 1, "must be >= 1"),
            ("train.local-steps", self.local_steps >= 1, "must be >= 1"),
            ("train.batch-size", self.batch_size >= 1, "must be >= 1"),
            ("train.learning-rate", self.learning_rate > 0, "must be > 0"),
            ("train.trim-fraction", 0 <= self.trim_fraction < 0.5, "must be in [0, 0.5)"),
            ("privacy.device-tail-layers", self.device_tail_layers >= 0,
             "must be >= 0 (0 = two-part)"),
            ("allocation.fixed-split", self.split >= 1, "must be >= 1"),
            ("allocation.calibration-steps", self.calibration_steps >= 1, "must be >= 1"),
            ("allocation.server-bandwidth-hz", self.server_bandwidth_hz > 0, "must be > 0"),
            ("allocation.cell-bandwidth-hz", self.cell_bandwidth_hz >= 0,
             "must be >= 0 (0 = no cell)"),
            ("allocation.cell-subchannels", self.cell_subchannels >= 1, "must be >= 1"),
            ("privacy.min-device-layers", self.min_device_layers >= 0,
             "must be >= 0 (0 = no floor)"),
            ("privacy.max-token-recovery", 0 <= self.max_token_recovery <= 1,
             "must be in [0, 1] (1 = no budget)"),
            ("privacy.max-token-recovery",
             self.max_token_recovery == 1 or self.device_tail_layers > 0,
             "a leakage budget needs privacy.device-tail-layers >= 1: the two-part split sends the "
             "labels, that is the text itself, to the server"),
            ("privacy.report", self.max_token_recovery == 1 or bool(self.privacy_report),
             "privacy.max-token-recovery < 1 reads its floor from a report (`python -m "
             "experiments.privacy` writes one)"),
            ("privacy.activation-noise-std", self.activation_noise_std >= 0,
             "must be >= 0 (0 = off)"),
            ("privacy.epsilon", self.privacy_epsilon >= 0, "must be >= 0 (0 = off)"),
            ("privacy.epsilon", self.privacy_epsilon == 0 or self.device_tail_layers > 0,
             "differentially private activations need privacy.device-tail-layers >= 1: the "
             "two-part split sends the labels, that is the text itself, to the server"),
            ("privacy.epsilon", self.privacy_epsilon == 0 or self.activation_noise_std == 0,
             "replaces privacy.activation-noise-std (set it to 0)"),
            ("privacy.delta", 0 < self.privacy_delta < 1, "must be in (0, 1)"),
            ("privacy.rounds", self.privacy_rounds >= 0, "must be >= 0 (0 = train.rounds)"),
            ("privacy.activation-clip", self.activation_clip > 0, "must be > 0"),
            ("privacy.gradient-clip", self.gradient_clip > 0, "must be > 0"),
            ("privacy.adapter-epsilon", self.adapter_epsilon >= 0, "must be >= 0 (0 = off)"),
            ("privacy.adapter-clip", self.adapter_clip > 0, "must be > 0"),
            ("channel.nakagami-m", self.nakagami_m >= 0.5, "must be >= 0.5"),
            ("channel.bits", 1 <= self.channel_bits <= 32, "must be in [1, 32]"),
            ("stream.port", 0 <= self.stream_port <= 65535, "must be in [0, 65535]"),
            ("stream.tls-keyfile", bool(self.tls_certfile) == bool(self.tls_keyfile),
             "stream.tls-certfile and stream.tls-keyfile go together"),
            ("stream.tls-ca-certfile", not self.tls_ca_certfile or bool(self.tls_certfile),
             "needs stream.tls-certfile and stream.tls-keyfile"),
            ("faults.step-timeout-s", self.step_timeout_s > 0, "must be > 0"),
            ("faults.reply-timeout-s", self.reply_timeout_s > 0, "must be > 0"),
            ("faults.connect-resends", self.connect_resends >= 0, "must be >= 0 (0 = never)"),
            ("eval.every", self.eval_every >= 0, "must be >= 0 (0 = never)"),
            ("faults.rate", 0 <= self.fault_rate <= 1, "must be in [0, 1]"),
            ("eval.batches", self.eval_batches >= 1, "must be >= 1"),
            ("compute.server-threads", self.server_threads >= 0,
             "must be >= 0 (0 = torch's default)"),
            ("compute.client-threads", self.client_threads >= 1, "must be >= 1"),
            ("eval.sample-tokens", self.sample_tokens >= 1, "must be >= 1"),
        ]
        fields = [("data.text-field", self.text_field), ("data.instruction-field",
                                                         self.instruction_field),
                  ("data.output-field", self.output_field), ("data.messages-field",
                                                             self.messages_field)]
        checks += [(key, bool(value.strip()), "must name a column") for key, value in fields]
        for key, ok, rule in checks:
            if not ok:
                raise self.error(key, rule)

    def error(self, name: str, rule: str) -> ValueError:
        """The error every check raises: `config <key> = <value>: <rule>`; `name` is the key,
        its old flat name or the attribute."""
        attribute = attribute_of(name)
        return ValueError(f"config {key_of(attribute)} = {getattr(self, attribute)!r}: {rule}")

    @property
    def lora(self) -> LoraSettings:
        targets = tuple(t.strip() for t in self.lora_targets.split(",") if t.strip())
        return LoraSettings(rank=self.lora_rank, alpha=self.lora_alpha,
                            dropout=self.lora_dropout, target_modules=targets or None)

    @property
    def privacy(self) -> PrivacySettings | None:
        """What a device needs to protect what it sends; None when `privacy.epsilon` is 0."""
        if not self.privacy_epsilon:
            return None
        return PrivacySettings(epsilon=self.privacy_epsilon, delta=self.privacy_delta,
                               activation_clip=self.activation_clip,
                               gradient_clip=self.gradient_clip,
                               planned_rounds=self.planned_privacy_rounds)

    @property
    def server_queue_model(self) -> str:
        """The makespan model's server queue: `auto` is `fifo` where the server runs one tail at a
        time, first come first served (the stream transport without batch-tails; the queue
        simulation, `experiments.queue_oracle`, found fp's choices under it closer to the best),
        and `shares` elsewhere."""
        if self.server_queue != "auto":
            return self.server_queue
        return "fifo" if self.transport == "stream" and not self.batch_tails else "shares"

    @property
    def planned_privacy_rounds(self) -> int:
        """Rounds `privacy.epsilon` and `privacy.adapter-epsilon` are planned for."""
        return self.privacy_rounds or self.num_server_rounds

    @property
    def data(self) -> DataSettings:
        return DataSettings(**{f.name: getattr(self, f.name)
                               for f in dataclasses.fields(DataSettings)})

    @property
    def prompts(self) -> tuple[str, ...]:
        """The sample prompts, split at "|" (blanks dropped)."""
        return tuple(p for p in (p.strip() for p in self.sample_prompts.split("|")) if p)

    def as_dict(self) -> dict[str, Any]:
        """Settings under their run-config keys (for the run folder's config snapshot)."""
        return {key_of(f.name): getattr(self, f.name) for f in dataclasses.fields(self)}


def objective_weights(text: str) -> tuple[float, float, float]:
    """`"w_time,w_energy,w_stability"` -> three finite weights >= 0, not all 0 (ValueError)."""
    try:
        weights = tuple(float(x) for x in text.split(","))
    except ValueError:
        weights = ()
    if len(weights) != 3 or not all(0 <= w < float("inf") for w in weights) or not any(weights):
        raise ValueError(f"allocation.objective-weights = {text!r}: give three finite weights >= "
                         "0, not all 0, as \"time,energy,stability\" (e.g. \"1,0,0\": makespan "
                         "only)")
    return weights  # type: ignore[return-value]
