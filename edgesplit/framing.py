"""The stream data plane's wire protocol: tensor frames without pickle, shared by both ends.

A frame is one gRPC message::

    b"ESF1" | uint32 little-endian header length | JSON header | payload

The header is ``{"meta": {...}, "tensors": [[name, dtype, shape], ...]}``: ``meta`` holds the
frame's control fields (kind, step, node id, secret) as JSON scalars, and each tensor's raw
little-endian bytes follow in the payload in header order, each starting on an 8-byte boundary
(the header is space-padded so the payload starts on one too). Offsets are never sent: the
receiver derives them from the dtypes and shapes, so a frame cannot make tensors overlap or point
outside itself, and its total length must match exactly.

Floating-point tensors travel in the run's wire dtype (float32, float16, bfloat16 or int8): the
sender casts to it and the receiver refuses any other float dtype, then widens to the dtype the
spec expects. bfloat16 is carried as its own 2-byte pattern (never widened on the wire, unlike
Flower records, which reject it), so a bf16 tensor round-trips bit for bit; fp32 -> bf16/fp16
rounds, and a value beyond fp16's range becomes inf and is refused by the finite check.

int8 is a codec, not a cast: each row of the last dimension (one token's hidden vector) is sent
as one float32 scale (its absmax / 127) followed by the row's values rounded to int8, the scales
of a tensor first, then its values (``4 * rows + numel`` bytes). `decode` dequantises to float32,
refusing a missing (wrong length), negative or non-finite scale, so a transport sees float32
tensors and never the codec. Integer tensors (masks, labels) are never cast or quantised.

Why not the `safetensors` bytes format, which also carries dtype and shape in a JSON header:
measured side by side (`python -m experiments.bench_framing`), its frames are 32-104 bytes larger
(offsets in the header) and a SmolLM2 step's four encodes and decodes took 204 us against our
163 us; it has no int8 codec, and its offsets are one more thing a receiver must distrust.
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from math import prod

import torch

from edgesplit.records import PayloadError, Spec

if sys.byteorder != "little":  # the payload is raw native bytes, specified as little-endian
    raise ImportError("edgesplit.framing supports little-endian hosts only")

# Floating tensors' formats on the wire; torch.int8 stands for the per-row absmax codec.
WIRE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
               "int8": torch.int8}
_INTEGERS = {"int64": torch.int64, "int32": torch.int32, "uint8": torch.uint8, "bool": torch.bool}
_DTYPES = {**WIRE_DTYPES, **_INTEGERS}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
_INT8_LEVELS = 127  # symmetric: -127..127, so a row's absmax maps exactly to +-127
_MAGIC = b"ESF1"
_PREFIX = struct.Struct("<4sI")
MAX_HEADER_BYTES = 16 * 1024  # a header lists a few tensors and control fields
_MAX_DIMS = 8

Meta = Mapping[str, str | int | float | bool]


@dataclass(frozen=True)
class Frame:
    """A decoded frame: control fields and tensors (as sent, int8 dequantised: not yet checked
    against a spec)."""

    meta: dict
    tensors: dict[str, torch.Tensor]


def _aligned(n: int) -> int:
    return (n + 7) & ~7


def _rows(shape: tuple[int, ...]) -> int:
    return prod(shape[:-1])  # a 0-d tensor is one row of one value


def _as_rows(tensor: torch.Tensor) -> torch.Tensor:
    shape = tuple(tensor.shape)
    return tensor.reshape(_rows(shape), shape[-1] if shape else 1)


def _nbytes(dtype: torch.dtype, shape: tuple[int, ...]) -> int:
    if dtype == torch.int8:  # a float32 scale per row, then one byte per value
        return 4 * _rows(shape) + prod(shape)
    return prod(shape) * torch.empty((), dtype=dtype).element_size()


def bits_per_value(wire: str, row_size: int) -> float:
    """Bits one activation value costs on the wire in format `wire` (a `WIRE_DTYPES` key), rows
    of `row_size` values (the hidden size) sharing int8's scale: what the system model charges."""
    dtype = WIRE_DTYPES[wire]
    return 8 * _nbytes(dtype, (1, row_size)) / row_size


def decoded_dtype(wire_dtype: torch.dtype) -> torch.dtype:
    """The dtype `decode` gives floating tensors sent in `wire_dtype` (int8 is dequantised): what
    `check_tensors` must expect."""
    return torch.float32 if wire_dtype == torch.int8 else wire_dtype


def int8_rows_encode(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmax int8 per row of the last dim: (float32 scales of shape[:-1], int8 values).

    Rounds to nearest, so every value is within scale / 2 of its original. Why not stochastic
    rounding or error feedback: error feedback carries a residual into the next step's tensor,
    but each step sends the activations (and their gradient) of a fresh batch, whose positions
    have nothing to do with the last batch's; stochastic rounding is unbiased but doubles the
    error variance, and at 8 bits the bias it removes is below the noise it adds. Measured on
    smollm2-135m (client 0's first batch, splits 1-25), int8 activation gradients perturb the
    head's LoRA gradient by 0.6-0.8 % (relative L2, cosine > 0.9999) rounding to nearest against
    0.9-1.3 % for one stochastic draw (0.3 % averaged over 8 draws: unbiased, but a step sends
    one), while two batches' gradients differ by 122 % (split 4).
    """
    rows = _as_rows(tensor.detach().float())
    scales = rows.abs().amax(1) / _INT8_LEVELS if rows.shape[1] else rows.new_zeros(len(rows))
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))[:, None]
    values = torch.round(rows / safe).clamp(-_INT8_LEVELS, _INT8_LEVELS).to(torch.int8)
    return scales.reshape(tensor.shape[:-1]), values.reshape(tensor.shape)


def int8_rows_decode(scales: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """float32 values back from `int8_rows_encode`'s output."""
    return (_as_rows(values.float()) * scales.reshape(-1, 1)).reshape(values.shape)


def encode(meta: Meta, tensors: Mapping[str, torch.Tensor] | None = None,
           wire_dtype: torch.dtype = torch.float32) -> bytes:
    """Pack control fields and tensors (floating ones cast to `wire_dtype`, or quantised for
    int8) into one frame."""
    entries, chunks, offset = [], [], 0
    for name, tensor in (tensors or {}).items():
        tensor = tensor.detach().cpu()
        parts = [tensor]
        if tensor.is_floating_point():
            parts = ([*int8_rows_encode(tensor)] if wire_dtype == torch.int8
                     else [tensor.to(wire_dtype)])
            dtype = wire_dtype
        elif tensor.dtype in _INTEGERS.values():
            dtype = tensor.dtype
        else:
            raise TypeError(f"{name}: dtype {tensor.dtype} cannot be framed")
        entries.append([name, _NAMES[dtype], list(tensor.shape)])
        start = _aligned(offset)
        chunks.append(bytes(start - offset))
        offset = start
        for part in parts:  # views of the tensors' memory: the final join is the only copy
            raw = part.contiguous().reshape(-1).view(torch.uint8).numpy()
            chunks.append(raw.data)
            offset += raw.nbytes
    header = json.dumps({"meta": dict(meta), "tensors": entries}).encode()
    header += b" " * (_aligned(_PREFIX.size + len(header)) - _PREFIX.size - len(header))
    return b"".join([_PREFIX.pack(_MAGIC, len(header)), header, *chunks])


def decode(frame: bytes, max_bytes: int, wire_dtype: torch.dtype | None = None) -> Frame:
    """Parse a frame of at most `max_bytes`; raise PayloadError on anything malformed.

    With `wire_dtype`, floating tensors in any other format are refused (an int8 stream
    dequantises to float32, so `check_tensors` alone could not tell a float32 tensor apart).
    """
    if len(frame) > max_bytes:
        raise PayloadError(f"frame of {len(frame)} bytes exceeds the limit of {max_bytes}")
    if len(frame) < _PREFIX.size:
        raise PayloadError("frame shorter than its prefix")
    magic, header_len = _PREFIX.unpack_from(frame)
    if magic != _MAGIC or header_len > MAX_HEADER_BYTES:
        raise PayloadError("not a tensor frame (bad magic or oversized header)")
    body = _PREFIX.size + header_len
    try:
        header = json.loads(frame[_PREFIX.size:body])
        meta, entries = header["meta"], header["tensors"]
    except (ValueError, KeyError, TypeError) as exc:
        raise PayloadError(f"unreadable frame header ({exc})") from exc
    if not isinstance(meta, dict) or not isinstance(entries, list):
        raise PayloadError("frame header has the wrong structure")
    layout, offset = [], body
    for entry in entries:
        name, dtype, shape = _entry(entry)
        if wire_dtype is not None and dtype in WIRE_DTYPES.values() and dtype != wire_dtype:
            raise PayloadError(f"{name}: sent as {dtype}, the stream carries {wire_dtype}")
        start = _aligned(offset)
        layout.append((name, dtype, shape, start))
        offset = start + _nbytes(dtype, shape)
    if offset != len(frame) or len({name for name, *_ in layout}) != len(layout):
        raise PayloadError(f"frame of {len(frame)} bytes, its header describes {offset} "
                           "(or repeats a tensor name)")
    # One writable copy backs every tensor (torch cannot safely alias immutable bytes).
    buffer = bytearray(frame)
    return Frame(meta, {name: _tensor(buffer, name, dtype, shape, start)
                        for name, dtype, shape, start in layout})


def _tensor(buffer: bytearray, name: str, dtype: torch.dtype, shape: tuple[int, ...],
            start: int) -> torch.Tensor:
    """One tensor of a frame whose layout was checked: a view, or int8 dequantised."""
    def read(kind: torch.dtype, count: int, at: int) -> torch.Tensor:
        return (torch.frombuffer(buffer, dtype=kind, count=count, offset=at) if count
                else torch.empty(0, dtype=kind))

    if dtype != torch.int8:
        return read(dtype, prod(shape), start).reshape(shape)
    rows = _rows(shape)
    scales = read(torch.float32, rows, start)
    if not (torch.isfinite(scales).all() and (scales >= 0).all()):
        raise PayloadError(f"{name}: int8 scales must be finite and >= 0")
    values = read(torch.int8, prod(shape), start + 4 * rows).reshape(shape)
    return int8_rows_decode(scales, values)


def _entry(entry: object) -> tuple[str, torch.dtype, tuple[int, ...]]:
    if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
            and entry[1] in _DTYPES and isinstance(entry[2], list) and len(entry[2]) <= _MAX_DIMS
            and all(type(n) is int and n >= 0 for n in entry[2])):
        raise PayloadError(f"bad tensor entry in frame header: {str(entry)[:80]}")
    return entry[0], _DTYPES[entry[1]], tuple(entry[2])


def with_batch(spec: Spec, batch_size: int) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """`spec` with its open batch axis (-1 first) fixed: frames of one round are checked and
    limited exactly."""
    return {k: ((batch_size, *shape[1:]) if shape and shape[0] == -1 else shape, dtype)
            for k, (shape, dtype) in spec.items()}


def max_frame_bytes(spec: Spec, wire_dtype: torch.dtype = torch.float32) -> int:
    """The largest legitimate frame carrying tensors of `spec` (no -1 axes): gRPC's message limit
    on both ends and the frame check use it, so nothing larger is ever read."""
    payload = 0
    for shape, dtype in spec.values():
        if any(n < 0 for n in shape):
            raise ValueError(f"max_frame_bytes needs concrete shapes, got {shape}")
        payload = _aligned(payload) + _nbytes(wire_dtype if dtype.is_floating_point else dtype,
                                              shape)
    return _PREFIX.size + MAX_HEADER_BYTES + _aligned(payload)
