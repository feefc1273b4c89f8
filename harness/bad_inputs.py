"""Malformed payloads and configurations against the server: the case table and its runner.

Every case runs one real round in-process (tiny-llama, 3 clients, 2 local steps) in which node 2
misbehaves in one way: a tampered Flower reply (through `InProcessGrid`'s fault hook), a rogue
device speaking the stream protocol badly, or a bad profile or evaluation reply; configuration
cases start a run with one bad value. The server must not raise, must drop the bad client with
a reason naming the problem, let the other clients complete, and end with a finite global
adapter equal to what the honest clients alone produce. `tests/strategies/test_bad_inputs.py`
asserts that of every case; `python -m experiments.bad_inputs` reports them as a table.
"""

from __future__ import annotations

import queue
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import torch
from flwr.app import Array, ConfigRecord, Error, Message, MetricRecord, RecordDict

from clients.stream_client import StreamLink
from edgesplit import framing
from edgesplit.protocol import (
    ACTIVATIONS,
    CONFIG,
    EVALUATE,
    GRADIENT,
    HELLO,
    LORA,
    METHOD_PATH,
    METRICS,
    PROFILE,
    QUERY_PROFILE,
    STREAM,
    TRAIN_START,
    TRAIN_STEP,
    TRAIN_STREAM,
    RoundTask,
)
from edgesplit.records import TENSORS, Spec, to_record, unpack
from fl_app.client_app import app as client_app
from fl_app.run_config import parse
from fl_app.server_app import build_strategy, train
from harness.configs import tiny_run_config
from harness.inprocess import Fault, InProcessGrid

NODES, BAD = 3, 2  # node 2 misbehaves; nodes 1 and 3 are honest
# The data files of the bad-data cases, written by `Bench` under its folder ("{data}" in a
# case's corpus).
DATA_FILES = {"no-output.jsonl": '{"instruction": "Say hi.", "response": "hi"}\n' * 12,
              "empty.jsonl": "",
              "two-users.csv": "user,text\n" + "ann,Hello there.\nbob,Good day.\n" * 12}
# faults.step-timeout-s bounds a hang; it is never reached when all goes well.
BASE = tiny_run_config(local_steps=2, step_timeout_s=10.0)
FINAL = (TRAIN_STEP, TRAIN_STREAM)  # messages whose reply carries the trained adapter

Tensors = dict[str, torch.Tensor]
FaultMaker = Callable[[InProcessGrid, Spec], Fault]  # (grid, activation spec) -> node 2's fault


@dataclass(frozen=True)
class Case:
    """One kind of bad input.

    `plane` is the transport the round runs on ("flower" or "stream"), or "config";
    `expect` is a regex the recorded reason must match; `trains` marks faults after training
    (evaluation), where the client's adapter rightly counts; `compare` is False where no
    reference adapter applies (a two-round case)."""

    plane: str
    kind: str
    sent: str
    expect: str
    fault: FaultMaker | None = None
    overrides: Mapping = field(default_factory=dict)
    trains: bool = False
    compare: bool = True


@dataclass
class Result:
    """What the server did with one case."""

    case: Case
    reason: str = ""  # the failure/refusal recorded for node 2, or the configuration error
    error: str = ""  # an exception that escaped the server (payload cases: a crash)
    completed: int = 0
    sampled: int = 0
    finite: bool = True
    matches_reference: bool | None = None

    def problems(self) -> list[str]:
        """Everything that breaks the contract (empty = the case was handled)."""
        case, found = self.case, []
        if not re.search(case.expect, self.reason):
            found.append(f"reason {self.reason!r} does not match {case.expect!r}")
        if case.plane == "config":
            return found
        if self.error:
            found.append(f"server raised {self.error}")
        if self.completed != self.sampled - (0 if case.trains else 1):
            found.append(f"{self.completed} of {self.sampled} clients completed")
        if not self.finite:
            found.append("global adapter not finite")
        if self.matches_reference is False:
            found.append("global adapter differs from the honest clients' result")
        return found

    def outcome(self) -> str:
        case = self.case
        if case.plane == "config":
            text = "run refused at start" if self.reason else "run started"
        elif self.error:
            text = "server crashed"
        else:
            text = (("evaluation dropped" if case.trains else "client dropped")
                    + f", round completed {self.completed}/{self.sampled}, global adapter "
                    + ("finite" if self.finite else "NOT finite"))
            if self.matches_reference:
                text += ", = honest-only" if not case.trains else ", = fault-free run"
        problems = self.problems()
        return text + (f"; PROBLEM: {'; '.join(problems)}" if problems else "")


# ---- node 2's faults ---------------------------------------------------------------------------
def _ours(msg: Message, types: tuple[str, ...]) -> bool:
    return msg.metadata.dst_node_id == BAD and msg.metadata.message_type in types


def tamper(edit: Callable[[RecordDict], object], types: tuple[str, ...], record: str
           ) -> FaultMaker:
    """Node 2 runs its real handler, then `edit` changes the reply in place (only replies that
    carry `record`)."""
    def make(grid: InProcessGrid, _spec: Spec) -> Fault:
        def fault(msg: Message) -> Message | None:
            if not _ours(msg, types):
                return None
            reply = grid.app(msg, grid.contexts[BAD])
            if not reply.has_error() and record in reply.content:
                edit(reply.content)
            return reply
        return fault
    return make


def reply_with(content: Callable[[Message], RecordDict | Error], types: tuple[str, ...]
               ) -> FaultMaker:
    """Node 2 answers `types` with `content(message)` instead of running its handler."""
    def make(_grid: InProcessGrid, _spec: Spec) -> Fault:
        def fault(msg: Message) -> Message | None:
            return Message(content(msg), reply_to=msg) if _ours(msg, types) else None
        return fault
    return make


def crash(types: tuple[str, ...]) -> FaultMaker:
    return reply_with(lambda _: Error(code=2, reason="RuntimeError: device out of memory"),
                      types)


def early_adapter(msg: Message) -> RecordDict:
    """The adapter it was sent, returned as if trained, without doing the steps."""
    return RecordDict({LORA: msg.content[LORA], METRICS: MetricRecord({"num-examples": 100})})


def edit_tensors(record: str, change: Callable[[Tensors], Tensors]) -> Callable[[RecordDict],
                                                                                 None]:
    def edit(content: RecordDict) -> None:
        content[record] = to_record(change(unpack(content[record])))
    return edit


def drop(name: str) -> Callable[[RecordDict | ConfigRecord], None]:
    def edit(record: RecordDict | ConfigRecord) -> None:
        del record[name]
    return edit


def rename(old: str, new: str) -> Callable[[RecordDict], None]:
    def edit(content: RecordDict) -> None:
        content[new] = content[old]
        del content[old]
    return edit


def set_metric(value: int | float | None) -> Callable[[RecordDict], None]:
    def edit(content: RecordDict) -> None:
        if value is None:
            del content[METRICS]["num-examples"]
        else:
            content[METRICS]["num-examples"] = value
    return edit


def corrupt(content: RecordDict) -> None:
    """Cut the serialised activations short (the buffer no longer parses)."""
    array = content[ACTIVATIONS][TENSORS]
    content[ACTIVATIONS][TENSORS] = Array(dtype=array.dtype, shape=array.shape,
                                          stype=array.stype, data=array.data[: len(array.data)
                                                                             // 2])


def foreign_stype(content: RecordDict) -> None:
    array = content[ACTIVATIONS][TENSORS]
    content[ACTIVATIONS][TENSORS] = Array(dtype=array.dtype, shape=array.shape,
                                          stype="torch.Tensor", data=array.data)


# Changes to a set of tensors: activations (both planes) or an adapter.
def poke(value: float, key: str | None = None) -> Callable[[Tensors], Tensors]:
    """Set the first element of `key` (default: the first tensor) to `value`."""
    def change(t: Tensors) -> Tensors:
        name = key or next(iter(t))
        tensor = t[name].clone()
        tensor.view(-1)[0] = value
        return {**t, name: tensor}
    return change


def fill(key: str, value: float) -> Callable[[Tensors], Tensors]:
    return lambda t: {**t, key: torch.full_like(t[key], value)}


def rows(n: int) -> Callable[[Tensors], Tensors]:
    return lambda t: {k: v[:1].expand(n, *v.shape[1:]).contiguous() for k, v in t.items()}


def cast(key: str, dtype: torch.dtype) -> Callable[[Tensors], Tensors]:
    return lambda t: {**t, key: t[key].to(dtype)}


def widen(key: str) -> Callable[[Tensors], Tensors]:
    return lambda t: {**t, key: torch.cat([t[key], t[key][..., :1]], dim=-1)}


def without(key: str) -> Callable[[Tensors], Tensors]:
    return lambda t: {k: v for k, v in t.items() if k != key}


def extra(t: Tensors) -> Tensors:
    return {**t, "extra": torch.zeros(1)}


def outside_head(t: Tensors) -> Tensors:
    """Add a key of layer 3, which no client's head holds (splits are at most 3)."""
    key = next(iter(t))
    return {**t, re.sub(r"\.layers\.\d+\.", ".layers.3.", key): t[key]}


def activations(change: Callable[[Tensors], Tensors], on: str = TRAIN_START) -> FaultMaker:
    return tamper(edit_tensors(ACTIVATIONS, change), (on,), ACTIVATIONS)


def adapter(change: Callable[[Tensors], Tensors]) -> FaultMaker:
    return tamper(edit_tensors(LORA, change), FINAL, LORA)


def profile(edit: Callable[[ConfigRecord], object]) -> FaultMaker:
    return tamper(lambda content: edit(content[PROFILE]), (QUERY_PROFILE,), PROFILE)


# ---- a rogue device on the stream --------------------------------------------------------------
Script = Callable[[StreamLink, Tensors], list[bytes]]


def dial(script: Script) -> FaultMaker:
    """Node 2 dials the round's stream and sends `script`'s frames, then replies through Flower
    with the stream's error, as the real device does."""
    def make(_grid: InProcessGrid, spec: Spec) -> Fault:
        def fault(msg: Message) -> Message | None:
            if not _ours(msg, (TRAIN_STREAM,)):
                return None
            link = StreamLink.from_record(msg.content[STREAM])
            task = RoundTask.from_record(msg.content[CONFIG])
            zeros = {k: torch.zeros(shape, dtype=dtype) for k, (shape, dtype)
                     in framing.with_batch(spec, task.batch_size).items()}
            outbox: queue.Queue[bytes | None] = queue.Queue()
            for frame in [*script(link, zeros), None]:
                outbox.put(frame)
            reason = "the stream ended"
            with link.channel(2**26) as channel:
                try:
                    for _ in channel.stream_stream(METHOD_PATH)(iter(outbox.get, None),
                                                                        timeout=10):
                        pass
                except grpc.RpcError as exc:
                    reason = f"{exc.code().name}: {exc.details()}"
            return Message(Error(code=2, reason=f"ConnectionError: {reason}"), reply_to=msg)
        return fault
    return make


def hello(link: StreamLink, **changes: object) -> bytes:
    return framing.encode({"kind": HELLO, "node": link.node_id, "secret": link.secret,
                           **changes})


def frame(step: int, tensors: Tensors, kind: str = ACTIVATIONS,
          wire: torch.dtype = torch.float32) -> bytes:
    return framing.encode({"kind": kind, "step": step}, tensors, wire)


def steps(change: Callable[[Tensors], Tensors] | None = None, then: Callable[[bytes], bytes]
          | None = None) -> Script:
    """Hello, then step 0's activations changed by `change` (bytes by `then`)."""
    def script(link: StreamLink, acts: Tensors) -> list[bytes]:
        raw = frame(0, change(acts) if change else acts)
        return [hello(link), then(raw) if then else raw]
    return script


class StaleSecret:
    """Round 1 runs normally; in round 2 node 2 dials with its round-1 secret."""

    def __call__(self, grid: InProcessGrid, spec: Spec) -> Fault:
        first: list[str] = []
        rogue = dial(lambda link, _acts: [hello(link, secret=first[0])])(grid, spec)

        def fault(msg: Message) -> Message | None:
            if not _ours(msg, (TRAIN_STREAM,)):
                return None
            if not first:
                first.append(msg.content[STREAM]["secret"])
                return None
            return rogue(msg)
        return fault


def _lie_about_shape(raw: bytes) -> bytes:
    """Declare 99 hidden units in the header while the payload holds fewer bytes."""
    return re.sub(rb'("hidden", "float32", \[\d+, \d+, )\d+\]', rb"\g<1>99]", raw, count=1)


# ---- the cases ---------------------------------------------------------------------------------
F, S, C = "flower", "stream", "config"
CASES: list[Case] = [
    # Activations (Flower messages).
    Case(F, "missing activations", "train.start reply without the activations record",
         "reply lacks activations", tamper(drop(ACTIVATIONS), (TRAIN_START,), ACTIVATIONS)),
    Case(F, "extra tensor", "activations plus an `extra` tensor", r"unexpected \['extra'\]",
         activations(extra)),
    Case(F, "missing tensor", "activations without `labels`", r"missing \['labels'\]",
         activations(without("labels"))),
    Case(F, "wrong float dtype", "hidden states in float64", "hidden: dtype torch.float64",
         activations(cast("hidden", torch.float64))),
    Case(F, "wrong int dtype", "attention mask in int32", "attention_mask: dtype torch.int32",
         activations(cast("attention_mask", torch.int32))),
    Case(F, "wrong shape", "hidden states one unit too wide", r"hidden: shape \(4, 16, 65\)",
         activations(widen("hidden"))),
    Case(F, "wrong batch size", "3 rows for a batch of 4", "batch of 3 rows, expected 4",
         activations(rows(3))),
    Case(F, "oversized batch", "256 rows for a batch of 4 (64x the bytes)",
         "batch of 256 rows, expected 4", activations(rows(256))),
    Case(F, "NaN", "one NaN in the hidden states", "hidden: non-finite",
         activations(poke(float("nan"), "hidden"))),
    Case(F, "inf", "one -inf in the hidden states", "hidden: non-finite",
         activations(poke(float("-inf"), "hidden"))),
    Case(F, "huge finite values", "hidden states of 3e38 (finite; overflow in the tail)",
         "non-finite loss or gradient", activations(fill("hidden", 3e38))),
    Case(F, "no predicted token", "every label -100 (a 0/0 loss)",
         "non-finite loss or gradient", activations(fill("labels", -100))),
    Case(F, "labels outside the vocabulary", "labels = 10^9", "out of bounds",
         activations(fill("labels", 1e9))),
    Case(F, "truncated buffer", "the activations' packed .npy bytes cut in half",
         "unreadable packed tensors", tamper(corrupt, (TRAIN_START,), ACTIVATIONS)),
    Case(F, "foreign serialisation", "packed activations with stype torch.Tensor",
         "unreadable packed tensors", tamper(foreign_stype, (TRAIN_START,), ACTIVATIONS)),
    Case(F, "client error reply", "an Error reply to train.start", "client error 2",
         crash((TRAIN_START,))),
    Case(F, "reply to the wrong step (early)", "the final adapter in reply to step 0",
         "reply lacks activations", reply_with(early_adapter, (TRAIN_START,))),
    Case(F, "reply to the wrong step (late)", "activations in reply to the last gradient",
         "final reply lacks the head adapter",
         tamper(rename(LORA, ACTIVATIONS), FINAL, LORA)),
    # The trained head adapter (the final reply; both transports read it the same way).
    Case(F, "adapter key outside the head", "a LoRA tensor of layer 3 (split <= 3)",
         r"unexpected \['base_model", adapter(outside_head)),
    Case(S, "adapter key outside the head (stream)", "a LoRA tensor of layer 3 (split <= 3)",
         r"unexpected \['base_model", adapter(outside_head)),
    Case(F, "adapter missing a key", "the head adapter without its first tensor",
         r"missing \['base_model", adapter(lambda t: dict(list(t.items())[1:]))),
    Case(F, "adapter wrong shape", "a LoRA matrix one column wider", "shape",
         adapter(lambda t: widen(next(iter(t)))(t))),
    Case(F, "adapter wrong dtype", "a LoRA matrix in float64", "dtype torch.float64",
         adapter(lambda t: cast(next(iter(t)), torch.float64)(t))),
    Case(S, "adapter NaN (stream)", "one NaN in the head adapter", "non-finite",
         adapter(poke(float("nan")))),
    Case(F, "num-examples zero", "num-examples = 0", "num-examples 0 is not",
         tamper(set_metric(0), FINAL, LORA)),
    Case(F, "num-examples negative", "num-examples = -5", "num-examples -5 is not",
         tamper(set_metric(-5), FINAL, LORA)),
    Case(S, "num-examples float (stream)", "num-examples = 2.5", "num-examples 2.5 is not",
         tamper(set_metric(2.5), FINAL, LORA)),
    Case(F, "num-examples missing", "metrics without num-examples",
         "num-examples None is not", tamper(set_metric(None), FINAL, LORA)),
    Case(F, "metrics record missing", "the final reply without its metrics",
         "lacks the head adapter or its metrics",
         tamper(drop(METRICS), FINAL, LORA)),
    Case(S, "client error reply (stream)", "an Error reply to train.stream", "client error 2",
         crash((TRAIN_STREAM,))),
    Case(S, "reply before streaming", "the adapter it was sent, with no step streamed",
         "replied after 0 of 2 steps", reply_with(early_adapter, (TRAIN_STREAM,))),
    # Stream frames from a rogue device.
    Case(S, "bad magic (hello)", "a hello frame starting b'XXXX'",
         "bad hello frame: not a tensor frame",
         dial(lambda link, _: [b"XXXX" + hello(link)[4:]])),
    Case(S, "first frame not a hello", "an (empty) activation frame before any hello",
         "first frame is not a hello", dial(lambda *_: [frame(0, {})])),
    Case(S, "wrong secret", "a hello with 64 zeros as the secret", "wrong secret",
         dial(lambda link, _: [hello(link, secret="0" * 64)])),
    Case(S, "stale secret", "round 2: the hello carries its round-1 secret",
         r"stale secret \(an earlier round's\)", StaleSecret(),
         {"train.rounds": 2}, compare=False),
    Case(S, "unselected node", "a hello claiming node 99 (with node 2's secret)",
         "node not selected this round", dial(lambda link, _: [hello(link, node=99)])),
    Case(S, "node id of the wrong type", 'a hello claiming node "2" (a string)',
         "node not selected this round", dial(lambda link, _: [hello(link, node="2")])),
    Case(S, "bad magic (activations)", "an activation frame starting b'XXXX'",
         "not a tensor frame", dial(steps(then=lambda raw: b"XXXX" + raw[4:]))),
    Case(S, "header lying about size", "a header declaring 99 hidden units (payload for 64)",
         "its header describes", dial(steps(then=_lie_about_shape))),
    Case(S, "truncated frame", "an activation frame missing its last 10 bytes",
         "its header describes", dial(steps(then=lambda raw: raw[:-10]))),
    Case(S, "corrupt header", "an activation frame whose JSON header is garbage",
         "unreadable frame header", dial(steps(then=lambda raw: raw[:8] + b"}" + raw[9:]))),
    Case(S, "repeated tensor name", "a header naming `hidden` twice", "repeats a tensor name",
         dial(steps(then=lambda raw: raw.replace(b'"labels"', b'"hidden"', 1)))),
    Case(S, "frame over the byte limit", "activations of 64x the batch (about 1 MB)",
         "RESOURCE_EXHAUSTED|cancelled|exceeds the limit", dial(steps(rows(256)))),
    Case(S, "wrong step number", "step 0's activations labelled step 1",
         "expected activations of step 0",
         dial(lambda link, acts: [hello(link), frame(1, acts)])),
    Case(S, "wrong frame kind", "a gradient frame instead of activations",
         "expected activations of step 0",
         dial(lambda link, acts: [hello(link), frame(0, acts, GRADIENT)])),
    Case(S, "frame after the last step", "a third activation frame in a 2-step round",
         "a frame after the last of 2 steps",
         dial(lambda link, acts: [hello(link), *(frame(s, acts) for s in range(3))])),
    Case(S, "NaN (stream)", "one NaN in the hidden states", "hidden: non-finite",
         dial(steps(poke(float("nan"), "hidden")))),
    Case(S, "wrong wire dtype", "float16 activations on a float32 stream",
         r"hidden: .*torch\.float16.*float32",
         dial(lambda link, acts: [hello(link), frame(0, acts, wire=torch.float16)])),
    Case(S, "wrong batch size (stream)", "3 rows for a batch of 4", r"shape \(3, 16, 64\)",
         dial(steps(rows(3)))),
    Case(S, "missing tensor (stream)", "activations without `labels`",
         r"missing \['labels'\]", dial(steps(without("labels")))),
    Case(S, "labels outside the vocabulary (stream)", "labels = 10^9", "out of bounds",
         dial(steps(fill("labels", 1e9)))),
    Case(S, "huge finite values (stream)", "hidden states of 3e38",
         "non-finite loss or gradient", dial(steps(fill("hidden", 3e38)))),
    # Device profiles.
    Case(F, "profile missing a key", "a profile without `cores`", "profile: KeyError: 'cores'",
         profile(drop("cores"))),
    Case(F, "profile NaN", "cpu_freq_hz = NaN", r"profile cpu_freq_hz = nan outside \[1e\+06",
         profile(lambda p: p.__setitem__("cpu_freq_hz", float("nan")))),
    Case(F, "profile negative", "tx_power_w = -1", r"profile tx_power_w = -1.0 outside",
         profile(lambda p: p.__setitem__("tx_power_w", -1.0))),
    Case(F, "profile absurd but finite", "distance_m = 1e300 (crashed the fp allocator)",
         r"profile distance_m = 1e\+300 outside \[1, 100000\]",
         profile(lambda p: p.__setitem__("distance_m", 1e300)), {"allocation.method": "fp"},
         compare=False),
    Case(F, "profile wrong type", 'cores = "many"', "could not convert string",
         profile(lambda p: p.__setitem__("cores", "many"))),
    Case(F, "profile bad partition", 'partition-id = "two"',
         "profile partition-id = 'two' is not a partition index",
         profile(lambda p: p.__setitem__("partition-id", "two"))),
    Case(F, "profile error reply", "an Error reply to query.profile", "client error 2",
         crash((QUERY_PROFILE,))),
    # Evaluation (always Flower messages; after aggregation, so the adapter is unaffected).
    Case(F, "evaluation NaN", "one NaN in the validation activations", "hidden: non-finite",
         activations(poke(float("nan"), "hidden"), EVALUATE), {"eval.every": 1}, trains=True),
    Case(F, "evaluation too many rows", "256 validation rows (8 asked)",
         "256 validation rows, asked for 1 to 8",
         activations(rows(256), EVALUATE), {"eval.every": 1}, trains=True),
    Case(F, "evaluation with no predicted token", "every validation label -100",
         "non-finite validation loss", activations(fill("labels", -100), EVALUATE),
         {"eval.every": 1}, trains=True),
    Case(F, "evaluation error reply", "an Error reply to evaluate", "client error 2",
         crash((EVALUATE,)), {"eval.every": 1}, trains=True),
    # Configuration (the run stops before any client is contacted).
    Case(C, "unknown model", 'model.name = "gpt-17"', "unknown model 'gpt-17'",
         overrides={"model.name": "gpt-17"}),
    Case(C, "model folder that is not a checkpoint", 'model.name = "/tmp"',
         "unknown model|not a usable", overrides={"model.name": "/"}),
    Case(C, "split 0", "allocation.fixed-split = 0",
         "config allocation.fixed-split = 0: must be >= 1",
         overrides={"allocation.fixed-split": 0}),
    Case(C, "allocation.fixed-split = L", "allocation.fixed-split = 4 on a 4-layer model",
         r"split 4 outside \[1, 3\]",
         overrides={"allocation.fixed-split": 4}),
    Case(C, "negative bandwidth", "allocation.server-bandwidth-hz = -1e6",
         "allocation.server-bandwidth-hz",
         overrides={"allocation.server-bandwidth-hz": -1e6}),
    Case(C, "negative cell band", "allocation.cell-bandwidth-hz = -1e6",
         "allocation.cell-bandwidth-hz",
         overrides={"allocation.cell-bandwidth-hz": -1e6}),
    Case(C, "cell under the paper model", 'allocation.cell-bandwidth-hz = 20e6, '
                                          'allocation.cost-model = "paper"',
         "allocation.cell-bandwidth-hz", overrides={"allocation.cell-bandwidth-hz": 20e6,
                                                    "allocation.cost-model": "paper"}),
    Case(C, "unknown allocator", 'allocation.method = "magic"',
         "config allocation.method = 'magic'",
         overrides={"allocation.method": "magic"}),
    Case(C, "unknown server queue", 'allocation.server-queue = "lifo"',
         "config allocation.server-queue = 'lifo'",
         overrides={"allocation.server-queue": "lifo"}),
    Case(C, "fifo server under the paper model", 'allocation.server-queue = "fifo", '
                                                 'allocation.cost-model = "paper"',
         "allocation.server-queue", overrides={"allocation.server-queue": "fifo",
                                               "allocation.cost-model": "paper"}),
    Case(C, "wrong type", 'train.local-steps = "2"', "config train.local-steps = '2': expected int",
         overrides={"train.local-steps": "2"}),
    Case(C, "bool for an int", "train.rounds = true", "expected int",
         overrides={"train.rounds": True}),
    Case(C, "float for an int", "train.batch-size = 2.5", "expected int",
         overrides={"train.batch-size": 2.5}),
    Case(C, "unknown aggregation", 'train.aggregation = "mean"',
         "config train.aggregation = 'mean'",
         overrides={"train.aggregation": "mean"}),
    Case(C, "trim fraction 0.5", "train.trim-fraction = 0.5", "train.trim-fraction",
         overrides={"train.trim-fraction": 0.5}),
    Case(C, "unknown transport", 'stream.transport = "udp"', "config stream.transport = 'udp'",
         overrides={"stream.transport": "udp"}),
    Case(C, "unknown wire dtype", 'stream.dtype = "float64"', "config stream.dtype = 'float64'",
         overrides={"stream.dtype": "float64"}),
    Case(C, "negative step timeout", "faults.step-timeout-s = -1", "faults.step-timeout-s",
         overrides={"faults.step-timeout-s": -1.0}),
    Case(C, "negative connect resends", "faults.connect-resends = -1", "faults.connect-resends",
         overrides={"faults.connect-resends": -1}),
    Case(C, "LoRA rank 0", "lora.rank = 0", "lora.rank", overrides={"lora.rank": 0}),
    Case(C, "unknown LoRA target", 'lora.targets = "nope_proj"', "nope_proj.*not found",
         overrides={"lora.targets": "nope_proj"}),
    Case(C, "unknown corpus", 'data.corpus = "klingon"', "corpus 'klingon': no such file or folder",
         overrides={"data.corpus": "klingon"}),
    Case(C, "data file without the output field", "an instruction JSONL with no 'output'",
         r"no-output.jsonl' has no field 'output' \(set by data.output-field\)",
         overrides={"data.corpus": "{data}/no-output.jsonl", "data.format": "instruction"}),
    Case(C, "empty data file", "data.corpus = an empty .jsonl file", "empty.jsonl' is empty",
         overrides={"data.corpus": "{data}/empty.jsonl"}),
    Case(C, "fewer data groups than clients", "data.partition-by a column with 2 values, 3 clients",
         "groups by field 'user'.*3 clients but only 2 natural groups",
         overrides={"data.corpus": "{data}/two-users.csv", "data.partition-by": "user"}),
    Case(C, "chat format on a built-in corpus", 'data.format = "chat", corpus synthetic',
         "config data.format = 'chat': the built-in corpus synthetic is plain text",
         overrides={"data.format": "chat"}),
    Case(C, "TLS certificate without key", 'stream.tls-certfile = "cert.pem" only',
         "stream.tls-keyfile",
         overrides={"stream.tls-certfile": "cert.pem"}),
    Case(C, "TLS files missing", "stream.tls-certfile/keyfile naming absent files",
         "No such file", overrides={"stream.transport": "stream",
                                    "stream.tls-certfile": "/absent.pem",
                                    "stream.tls-keyfile": "/absent.key"}),
    Case(C, "stream port out of range", "stream.port = 70000", "stream.port",
         overrides={"stream.port": 70000}),
    Case(C, "rl-split without a policy", 'allocation.method = "rl-split", no allocation.rl-policy',
         "allocation.rl-policy",
         overrides={"allocation.method": "rl-split"}),
    Case(C, "resume from nothing", 'run.resume-from = "/absent"', "does not exist",
         overrides={"run.resume-from": "/absent"}),
    Case(C, "DP frames on a two-part split", "privacy.epsilon = 8, privacy.device-tail-layers = 0",
         "privacy.epsilon = 8.0: differentially private activations need "
         "privacy.device-tail-layers",
         overrides={"privacy.epsilon": 8.0}),
    Case(C, "privacy delta of 1", "privacy.delta = 1", "config privacy.delta = 1.0: must be",
         overrides={"privacy.delta": 1.0}),
    Case(C, "negative activation clip", "privacy.activation-clip = -1",
         "config privacy.activation-clip",
         overrides={"privacy.activation-clip": -1.0}),
    Case(C, "DP adapters with the median", 'privacy.adapter-epsilon = 8, train.aggregation = '
                                           '"median"',
         "privacy.adapter-epsilon = 8.0: DP-FedAvg", overrides={"privacy.adapter-epsilon": 8.0,
                                                         "train.aggregation": "median"}),
    Case(C, "more clients required than exist", "train.min-clients = 5 with 3 nodes",
         "fewer than 5 nodes connected", overrides={"train.min-clients": 5,
                                                    "faults.reply-timeout-s": 1.0}),
    Case(C, "old key beside its new key",
         "local-steps = 2 and train.local-steps = 5",  # rename-keys: keep
         "config local-steps = 2 and train.local-steps = 5 are both set",  # rename-keys: keep
         overrides={"local-steps": 2, "train.local-steps": 5}),  # rename-keys: keep
]


# ---- running them ------------------------------------------------------------------------------
class Bench:
    """Runs cases under `folder` (one run folder each) and keeps the reference adapters."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._references: dict[bool, dict[str, torch.Tensor]] = {}
        (folder / "data").mkdir(parents=True, exist_ok=True)
        for name, text in DATA_FILES.items():
            (folder / "data" / name).write_text(text)

    def _config(self, name: str, plane: str, overrides: Mapping) -> dict:
        data = str(self.folder / "data")
        return {**BASE, "stream.transport": plane, "run.output-dir": str(self.folder),
                "run.name": name,
                **{k: v.replace("{data}", data) if isinstance(v, str) else v
                   for k, v in overrides.items()}}

    def reference(self, fault_free: bool) -> dict[str, torch.Tensor]:
        """The global adapter of a fault-free round, or of one where node 2 is dropped at once
        (the honest clients alone: the others' training does not depend on node 2)."""
        if fault_free not in self._references:
            config = self._config(f"reference-{fault_free}", F, {})
            grid = InProcessGrid(client_app, config, NODES,
                                 fault=None if fault_free else crash((TRAIN_START,))(None, {}))
            self._references[fault_free] = build_strategy(parse(config), grid).run(grid)
        return self._references[fault_free]

    def run(self, case: Case) -> Result:
        name = re.sub(r"\W+", "-", f"{case.plane}-{case.kind}").strip("-")
        config = self._config(name, "flower" if case.plane == C else case.plane, case.overrides)
        grid = InProcessGrid(client_app, config, NODES, concurrent=case.plane == S)
        result = Result(case)
        if case.plane == C:
            try:
                train(grid, parse(config))
            except Exception as exc:  # the point: a clear error at start
                result.reason = f"{type(exc).__name__}: {exc}"
            return result
        strategy = build_strategy(parse(config), grid)
        grid.fault = case.fault(grid, strategy.evaluator.spec)
        try:
            final = strategy.run(grid)
        except Exception as exc:  # a crash: reported, never hidden
            result.error = f"{type(exc).__name__}: {exc}"
            return result
        row = strategy.recorder.rows[-1]
        refusals = [f"refused: {r.reason}" for r in getattr(strategy.transport, "refusals", [])]
        reasons = [row["failures"].get(str(BAD)), row.get("eval_failures", {}).get(str(BAD)),
                   *refusals]
        result.reason = " | ".join(r for r in reasons if r)
        result.completed, result.sampled = row["completed"], row["sampled"]
        result.finite = all(bool(torch.isfinite(v).all()) for v in final.values())
        if case.compare:
            reference = self.reference(fault_free=case.trains)
            result.matches_reference = all(torch.equal(final[k], reference[k])
                                           for k in reference)
        return result
