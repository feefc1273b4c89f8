"""The stream's tensor frames: exact round trips per wire dtype, int8 within half a step, and
refusal of bad frames."""

import json
import struct

import pytest
import torch

from edgesplit import framing
from edgesplit.records import PayloadError, check_tensors

SPEC = {"hidden": ((-1, 3, 5), torch.float32), "attention_mask": ((-1, 3), torch.int64)}
FLOAT_WIRES = [torch.float32, torch.float16, torch.bfloat16]  # casts; int8 is a lossy codec


def tensors(dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    return {"hidden": (torch.randn(2, 3, 5, generator=gen) * 10).to(dtype),
            "attention_mask": torch.tensor([[1, 1, 0], [1, 1, 1]])}


def roundtrip(sent, wire, spec=SPEC, meta=None):
    raw = framing.encode(meta or {"kind": "activations", "step": 3}, sent, wire)
    frame = framing.decode(raw, framing.max_frame_bytes(framing.with_batch(spec, 2), wire), wire)
    return frame, check_tensors(frame.tensors, spec, framing.decoded_dtype(wire))


@pytest.mark.parametrize("wire", FLOAT_WIRES)
def test_round_trip_is_exact_in_the_wire_dtype(wire):
    sent = tensors()
    frame, got = roundtrip(sent, wire)
    assert frame.meta == {"kind": "activations", "step": 3}
    assert got["hidden"].dtype == torch.float32  # widened to the spec's dtype after the check
    assert torch.equal(got["hidden"], sent["hidden"].to(wire).float())  # the only loss: the cast
    assert torch.equal(got["attention_mask"], sent["attention_mask"])  # integers never cast
    if wire == torch.float32:
        assert torch.equal(got["hidden"], sent["hidden"])


@pytest.mark.parametrize("wire", [torch.float32, torch.bfloat16])
def test_bfloat16_tensors_are_carried_bit_for_bit(wire):
    """A bf16 model's activations: carried as bf16, or widened exactly to fp32, never rounded."""
    sent = tensors(torch.bfloat16)
    spec = {**SPEC, "hidden": ((-1, 3, 5), torch.bfloat16)}
    frame, got = roundtrip(sent, wire, spec)
    assert frame.tensors["hidden"].dtype == wire
    assert got["hidden"].dtype == torch.bfloat16
    assert torch.equal(got["hidden"].view(torch.int16), sent["hidden"].view(torch.int16))


def test_odd_sizes_empty_tensors_and_control_frames():
    sent = {"a": torch.arange(3, dtype=torch.uint8), "b": torch.ones(3, dtype=torch.float16),
            "c": torch.empty(0, 4), "d": torch.tensor(2.5)}
    frame = framing.decode(framing.encode({"k": "v"}, sent, torch.float16), 10_000)
    assert frame.tensors.keys() == sent.keys()
    for key, value in sent.items():
        want = value.half() if value.is_floating_point() else value
        assert torch.equal(frame.tensors[key], want)
        assert frame.tensors[key].data_ptr() % 8 == 0 or frame.tensors[key].numel() == 0
    hello = framing.decode(framing.encode({"kind": "hello", "node": 2**64 - 1, "secret": "s"}),
                           framing.max_frame_bytes({}))
    assert hello.meta["node"] == 2**64 - 1 and hello.tensors == {}


def test_int8_is_within_half_a_step_of_each_row_and_keeps_integers_exact():
    sent = tensors()
    sent["hidden"][0, 1] = 0.0  # an all-zero row: scale 0, sent exactly
    sent["hidden"][1, 2, 4] = 1e4  # an outlier coarsens only its own row
    frame, got = roundtrip(sent, torch.int8)
    hidden = sent["hidden"]
    step = hidden.abs().amax(-1, keepdim=True) / 127
    error = (got["hidden"] - hidden).abs()
    assert got["hidden"].dtype == torch.float32
    assert (error <= step / 2 * (1 + 1e-6)).all()  # round to nearest: half a step at most
    assert error.max() > 0 and torch.equal(got["hidden"][0, 1], torch.zeros(5))
    assert error[1, :2].max() < 1  # rows without the outlier keep their own fine step
    assert torch.equal(got["attention_mask"], sent["attention_mask"])
    raw = framing.encode({}, {"x": torch.ones(4, 8, 16)}, torch.int8)
    assert framing.decode(raw, 10**6).tensors["x"].equal(torch.ones(4, 8, 16))  # absmax exact


@pytest.mark.parametrize("wire", framing.WIRE_DTYPES)
def test_frame_limits_and_bits_per_value_are_what_is_sent(wire):
    """`max_frame_bytes` is exact (int8's scales included), and the system model's bits per
    value are the frame's payload bits per hidden value."""
    dtype, shape = framing.WIRE_DTYPES[wire], (4, 32, 576)
    spec = {"hidden": (shape, torch.float32), "attention_mask": (shape[:2], torch.int64)}
    sent = {"hidden": torch.randn(shape), "attention_mask": torch.ones(shape[:2], dtype=int)}
    raw = framing.encode({"kind": "activations", "step": 0}, sent, dtype)
    _, header_len = struct.unpack_from("<4sI", raw)
    payload = len(raw) - 8 - header_len
    assert framing.max_frame_bytes(spec, dtype) == 8 + framing.MAX_HEADER_BYTES + payload
    hidden_bytes = payload - 4 * 32 * 8  # the mask's int64 values follow the hidden tensor
    assert framing.bits_per_value(wire, 576) == pytest.approx(8 * hidden_bytes / (4 * 32 * 576))
    assert framing.bits_per_value(wire, 576) == {"float32": 32, "float16": 16, "bfloat16": 16,
                                                 "int8": 8 + 32 / 576}[wire]


def _forged(header: dict, payload: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-(8 + len(raw)) % 8)
    return struct.pack("<4sI", b"ESF1", len(raw)) + raw + payload


@pytest.mark.parametrize("frame, match", [
    (b"\x80\x04pickle", "prefix|magic"),
    (b"ESF0" + bytes(12), "magic"),
    (_forged({"meta": {}, "tensors": [["x", "float32", [4]]]}, bytes(8)), "describes"),
    (_forged({"meta": {}, "tensors": [["x", "float32", [2]]]}, bytes(12)), "describes"),
    (_forged({"meta": {}, "tensors": [["x", "object", [1]]]}, bytes(8)), "entry"),
    (_forged({"meta": {}, "tensors": [["x", "float32", [-1]]]}), "entry"),
    (_forged({"meta": {}, "tensors": [["x", "uint8", [1]], ["x", "uint8", [1]]]}, bytes(9)),
     "repeats"),
    (_forged({"meta": []}), "header"),
    (struct.pack("<4sI", b"ESF1", 6) + b"{nope}", "header"),
    (struct.pack("<4sI", b"ESF1", 10**6), "oversized"),
])
def test_malformed_frames_are_refused(frame, match):
    with pytest.raises(PayloadError, match=match):
        framing.decode(frame, 10**7)


def _scales(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


@pytest.mark.parametrize("frame, match", [
    (_forged({"meta": {}, "tensors": [["x", "int8", [2, 4]]]}, bytes(8)), "describes"),  # no scale
    (_forged({"meta": {}, "tensors": [["x", "int8", [2, 4]]]}, _scales(1.0) + bytes(8)),
     "describes"),  # one of two scales
    (_forged({"meta": {}, "tensors": [["x", "int8", [2, 4]]]}, _scales(1.0, float("nan"))
             + bytes(8)), "scales"),
    (_forged({"meta": {}, "tensors": [["x", "int8", [2, 4]]]}, _scales(float("inf"), 1.0)
             + bytes(8)), "scales"),
    (_forged({"meta": {}, "tensors": [["x", "int8", [2, 4]]]}, _scales(-1.0, 1.0) + bytes(8)),
     "scales"),
    (framing.encode({}, {"x": torch.ones(2, 4)}), "sent as torch.float32"),  # fp32 on int8
])
def test_malformed_int8_frames_are_refused(frame, match):
    with pytest.raises(PayloadError, match=match):
        framing.decode(frame, 10**7, torch.int8)


def test_int8_frames_are_refused_on_a_float_stream_and_integers_cannot_pose_as_int8():
    raw = framing.encode({}, {"x": torch.ones(2, 4)}, torch.int8)
    with pytest.raises(PayloadError, match="sent as torch.int8"):
        framing.decode(raw, 10**6, torch.float32)
    with pytest.raises(TypeError, match="cannot be framed"):
        framing.encode({}, {"x": torch.ones(2, 4, dtype=torch.int8)}, torch.int8)
    huge = _forged({"meta": {}, "tensors": [["hidden", "int8", [1, 1]]]},
                   _scales(3e38) + b"\x7f")  # finite scale, 127 x scale = inf
    with pytest.raises(PayloadError, match="non-finite"):
        check_tensors(framing.decode(huge, 10**6, torch.int8).tensors,
                      {"hidden": ((1, 1), torch.float32)}, torch.float32)


def test_size_limit_is_checked_before_parsing():
    raw = framing.encode({}, tensors())
    with pytest.raises(PayloadError, match="exceeds"):
        framing.decode(raw, len(raw) - 1)
    assert len(raw) <= framing.max_frame_bytes(framing.with_batch(SPEC, 2))


@pytest.mark.parametrize("change, match", [
    (lambda t: t.pop("attention_mask"), "missing"),
    (lambda t: t.update(extra=torch.zeros(1)), "unexpected"),
    (lambda t: t.update(hidden=torch.zeros(2, 3, 4)), "shape"),
    (lambda t: t.update(attention_mask=torch.zeros(2, 3, dtype=torch.int32)), "dtype"),
    (lambda t: t.update(hidden=torch.full((2, 3, 5), float("nan"))), "non-finite"),
    (lambda t: t.update(hidden=torch.full((2, 3, 5), 1e6)), "non-finite"),  # fp16 overflow
])
def test_check_refuses_what_the_spec_does_not_allow(change, match):
    sent = tensors()
    change(sent)
    raw = framing.encode({}, sent, torch.float16)
    with pytest.raises(PayloadError, match=match):
        check_tensors(framing.decode(raw, 10**6).tensors, SPEC, torch.float16)


def test_floats_in_another_dtype_than_the_wire_are_refused():
    raw = framing.encode({}, tensors(), torch.float32)
    with pytest.raises(PayloadError, match="dtype torch.float32"):
        check_tensors(framing.decode(raw, 10**6).tensors, SPEC, torch.float16)
