"""The stream data plane's wire protocol: tensor frames without pickle, shared by both ends.

A frame is one gRPC message::

    b"ESF1" | uint32 little-endian header length | JSON header | payload

The header is ``{"meta": {...}, "tensors": [[name, dtype, shape], ...]}``: ``meta`` holds the
frame's control fields (kind, step, node id, secret) as JSON scalars, and each tensor's raw
little-endian bytes follow in the payload in header order, each starting on an 8-byte boundary
(the header is space-padded so the payload starts on one too). Offsets are never sent: the
receiver derives them from the dtypes and shapes, so a frame cannot make tensors overlap or point
outside itself, and its total length must match exactly.

Floating-point tensors travel in the run's wire dtype (float32, float16 or bfloat16): the sender
casts to it and the receiver refuses any other float dtype, then widens to the dtype the spec
expects. bfloat16 is carried as its own 2-byte pattern (never widened on the wire, unlike Flower
records, which reject it), so a bf16 tensor round-trips bit for bit; fp32 -> bf16/fp16 rounds,
and a value beyond fp16's range becomes inf and is refused by the finite check.
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from math import prod

import torch

from fl_app.records import PayloadError, Spec

if sys.byteorder != "little":  # the payload is raw native bytes, specified as little-endian
    raise ImportError("fl_app.framing supports little-endian hosts only")

# gRPC method of the stream, served with generic handlers and raw-bytes (de)serialisers.
SERVICE, METHOD = "edgesplit.SplitStream", "Train"
METHOD_PATH = f"/{SERVICE}/{METHOD}"
TRAIN_STREAM = "train.stream"  # Flower message type: round task + head adapter + stream address
STREAM = "stream"  # record name of the stream's address, secret and wire dtype in that message

# Frame kinds: device -> server "hello" then "activations" per step; server -> device "gradient".
HELLO, ACTIVATIONS, GRADIENT = "hello", "activations", "gradient"

WIRE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_DTYPES = {**WIRE_DTYPES, "int64": torch.int64, "int32": torch.int32, "uint8": torch.uint8,
           "bool": torch.bool}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
_MAGIC = b"ESF1"
_PREFIX = struct.Struct("<4sI")
MAX_HEADER_BYTES = 16 * 1024  # a header lists a few tensors and control fields
_MAX_DIMS = 8

Meta = Mapping[str, str | int | float | bool]


@dataclass(frozen=True)
class Frame:
    """A decoded frame: control fields and tensors (as sent: not yet checked against a spec)."""

    meta: dict
    tensors: dict[str, torch.Tensor]


def _aligned(n: int) -> int:
    return (n + 7) & ~7


def _nbytes(dtype: torch.dtype, shape: tuple[int, ...]) -> int:
    return prod(shape) * torch.empty((), dtype=dtype).element_size()


def encode(meta: Meta, tensors: Mapping[str, torch.Tensor] | None = None,
           wire_dtype: torch.dtype = torch.float32) -> bytes:
    """Pack control fields and tensors (floating ones cast to `wire_dtype`) into one frame."""
    entries, chunks, offset = [], [], 0
    for name, tensor in (tensors or {}).items():
        tensor = tensor.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.to(wire_dtype)
        if tensor.dtype not in _NAMES:
            raise TypeError(f"{name}: dtype {tensor.dtype} cannot be framed")
        entries.append([name, _NAMES[tensor.dtype], list(tensor.shape)])
        raw = tensor.contiguous().reshape(-1).view(torch.uint8).numpy()
        start = _aligned(offset)
        chunks += [bytes(start - offset), raw.data]
        offset = start + raw.nbytes
    header = json.dumps({"meta": dict(meta), "tensors": entries}).encode()
    header += b" " * (_aligned(_PREFIX.size + len(header)) - _PREFIX.size - len(header))
    return b"".join([_PREFIX.pack(_MAGIC, len(header)), header, *chunks])


def decode(frame: bytes, max_bytes: int) -> Frame:
    """Parse a frame of at most `max_bytes`; raise PayloadError on anything malformed."""
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
        start = _aligned(offset)
        layout.append((name, dtype, shape, start))
        offset = start + _nbytes(dtype, shape)
    if offset != len(frame) or len({name for name, *_ in layout}) != len(layout):
        raise PayloadError(f"frame of {len(frame)} bytes, its header describes {offset} "
                           "(or repeats a tensor name)")
    # One writable copy backs every tensor (torch cannot safely alias immutable bytes).
    buffer = bytearray(frame)
    tensors = {name: torch.frombuffer(buffer, dtype=dtype, count=prod(shape), offset=start)
               .reshape(shape) if prod(shape) else torch.empty(shape, dtype=dtype)
               for name, dtype, shape, start in layout}
    return Frame(meta, tensors)


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
