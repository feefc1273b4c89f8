"""Run settings: `[tool.flwr.app.config]` read once into a typed object, with its range checks.

Each field's kebab-case key is the field name with `_` -> `-` (dotted groups for LoRA). Types and
numeric ranges are checked here, so a wrong value stops the run with an error naming the key.
Which names are valid (allocators, partitionings, wire dtypes...) is known only to the modules
that implement them: `fl_app.run_config` checks those once, at the top, with every registry in
reach. This module imports nothing of ours, so every floor can take its settings from here.

The dataclass defaults are the one home of every default: `pyproject.toml` repeats them because
Flower needs each key there, and a test keeps the two equal.
"""

from __future__ import annotations

import dataclasses
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


def _key(name: str) -> str:
    return name.replace("lora_", "lora.").replace("_", "-")


def _attr(key: str) -> str:
    return key.replace("lora.", "lora_").replace("-", "_")


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
    server_queue: str = "shares"  # makespan model: shares (processor sharing) | fifo (1 at a time)
    calibration: str = "measure"  # measure: time devices and server at the start | track: and
    # rescale their speeds after every round by the round's measured times | none
    calibration_steps: int = 3  # timed training steps per head size (after one warm-up)
    device_tail_layers: int = 0  # U-shaped split: the device also runs the last N layers + LM head
    split: int = 4  # `fixed`: everyone's split; `heterogeneous-fixed`: the deepest split
    server_bandwidth_hz: float = 20e6
    objective_weights: str = "1,1,1"  # the allocator's weights of time, energy, stability
    rl_policy: str = ""  # rl-split: folder of a trained split policy (experiments.split_rl)
    min_device_layers: int = 0  # split floor: every client keeps at least this many head layers
    max_token_recovery: float = 1.0  # leakage budget read from privacy-report; 1 = none
    privacy_report: str = ""  # CSV of `python -m experiments.privacy` (for max-token-recovery)
    activation_noise_std: float = 0.0  # device: noise on sent activations, x median token RMS
    nakagami_m: float = 1.0  # fading shape of the SNR -> loss-rate mapping and the channel
    channel: str = "none"  # evaluation only: the link the validation activations cross
    channel_snr_db: float = 10.0
    channel_bits: int = 8  # quantise-flip: bits per activation value
    transport: str = "stream"
    stream_host: str = "127.0.0.1"  # the stream server binds here
    stream_public_host: str = ""  # the host devices dial; empty = stream-host
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
    fault_kinds: str = "raise,silent,crash,disconnect,straggle"  # what fault-rate draws from
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
        """Build from `context.run_config`; unknown keys are ignored, wrong ones raise."""
        values = {}
        for f in dataclasses.fields(cls):
            key = _key(f.name)
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
            ("dirichlet-alpha", self.dirichlet_alpha > 0, "must be > 0"),
            ("block-size", self.block_size >= 2, "must be >= 2"),
            ("val-fraction", 0 < self.val_fraction < 1, "must be in (0, 1)"),
            ("heldout-fraction", 0 < self.heldout_fraction < 1, "must be in (0, 1)"),
            ("num-server-rounds", self.num_server_rounds >= 1, "must be >= 1"),
            ("fraction-train", 0 < self.fraction_train <= 1, "must be in (0, 1]"),
            ("min-train-clients", self.min_train_clients >= 1, "must be >= 1"),
            ("local-steps", self.local_steps >= 1, "must be >= 1"),
            ("batch-size", self.batch_size >= 1, "must be >= 1"),
            ("learning-rate", self.learning_rate > 0, "must be > 0"),
            ("trim-fraction", 0 <= self.trim_fraction < 0.5, "must be in [0, 0.5)"),
            ("device-tail-layers", self.device_tail_layers >= 0, "must be >= 0 (0 = two-part)"),
            ("split", self.split >= 1, "must be >= 1"),
            ("calibration-steps", self.calibration_steps >= 1, "must be >= 1"),
            ("server-bandwidth-hz", self.server_bandwidth_hz > 0, "must be > 0"),
            ("min-device-layers", self.min_device_layers >= 0, "must be >= 0 (0 = no floor)"),
            ("max-token-recovery", 0 <= self.max_token_recovery <= 1,
             "must be in [0, 1] (1 = no budget)"),
            ("max-token-recovery", self.max_token_recovery == 1 or self.device_tail_layers > 0,
             "a leakage budget needs device-tail-layers >= 1: the two-part split sends the "
             "labels, that is the text itself, to the server"),
            ("privacy-report", self.max_token_recovery == 1 or bool(self.privacy_report),
             "max-token-recovery < 1 reads its floor from a report (`python -m "
             "experiments.privacy` writes one)"),
            ("activation-noise-std", self.activation_noise_std >= 0, "must be >= 0 (0 = off)"),
            ("nakagami-m", self.nakagami_m >= 0.5, "must be >= 0.5"),
            ("channel-bits", 1 <= self.channel_bits <= 32, "must be in [1, 32]"),
            ("stream-port", 0 <= self.stream_port <= 65535, "must be in [0, 65535]"),
            ("tls-keyfile", bool(self.tls_certfile) == bool(self.tls_keyfile),
             "tls-certfile and tls-keyfile go together"),
            ("tls-ca-certfile", not self.tls_ca_certfile or bool(self.tls_certfile),
             "needs tls-certfile and tls-keyfile"),
            ("step-timeout-s", self.step_timeout_s > 0, "must be > 0"),
            ("reply-timeout-s", self.reply_timeout_s > 0, "must be > 0"),
            ("connect-resends", self.connect_resends >= 0, "must be >= 0 (0 = never)"),
            ("eval-every", self.eval_every >= 0, "must be >= 0 (0 = never)"),
            ("fault-rate", 0 <= self.fault_rate <= 1, "must be in [0, 1]"),
            ("eval-batches", self.eval_batches >= 1, "must be >= 1"),
            ("server-threads", self.server_threads >= 0, "must be >= 0 (0 = torch's default)"),
            ("client-threads", self.client_threads >= 1, "must be >= 1"),
            ("sample-tokens", self.sample_tokens >= 1, "must be >= 1"),
        ]
        fields = [("text-field", self.text_field), ("instruction-field", self.instruction_field),
                  ("output-field", self.output_field), ("messages-field", self.messages_field)]
        checks += [(key, bool(value.strip()), "must name a column") for key, value in fields]
        for key, ok, rule in checks:
            if not ok:
                raise self.error(key, rule)

    def error(self, key: str, rule: str) -> ValueError:
        """The error every check raises: `config <key> = <value>: <rule>`."""
        return ValueError(f"config {key} = {getattr(self, _attr(key))!r}: {rule}")

    @property
    def lora(self) -> LoraSettings:
        targets = tuple(t.strip() for t in self.lora_targets.split(",") if t.strip())
        return LoraSettings(rank=self.lora_rank, alpha=self.lora_alpha,
                            dropout=self.lora_dropout, target_modules=targets or None)

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
        return {_key(f.name): getattr(self, f.name) for f in dataclasses.fields(self)}


def objective_weights(text: str) -> tuple[float, float, float]:
    """`"w_time,w_energy,w_stability"` -> three finite weights >= 0, not all 0 (ValueError)."""
    try:
        weights = tuple(float(x) for x in text.split(","))
    except ValueError:
        weights = ()
    if len(weights) != 3 or not all(0 <= w < float("inf") for w in weights) or not any(weights):
        raise ValueError(f"objective-weights = {text!r}: give three finite weights >= 0, not all "
                         "0, as \"time,energy,stability\" (e.g. \"1,0,0\": makespan only)")
    return weights  # type: ignore[return-value]
