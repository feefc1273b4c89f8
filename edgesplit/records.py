"""Tensors in and out of Flower records, one implementation for both sides, with validation.

Everything a peer sends is checked before use: the expected keys, dtypes, shapes and finite
values. A violation raises `PayloadError`, which the receiver turns into "drop this client from
the round" rather than a crash or a poisoned aggregate.

A set of tensors travels as one ArrayRecord of two Arrays: every tensor's bytes back to back
(`tensors`) and their index (`index`: JSON of each tensor's name, dtype and shape, in order).
Flower 1.41 moves each Array of a deployed message as objects of its own, each an HTTP request
between SuperNode and SuperLink: a LoRA adapter sent as one Array per tensor cost two requests
per tensor and message (a tiny-llama head of 42 tensors took 10 s to leave a SuperNode on a
loaded machine, SmolLM2's heads have hundreds), and every request is work for the SuperLink's
database. Packed, an adapter costs a handful.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, RecordDict

Spec = Mapping[str, tuple[tuple[int, ...], torch.dtype]]

TENSORS, INDEX = "tensors", "index"  # the two Arrays of a packed record
# What a packed tensor may be (the specs ask for float32 and int64; the rest are refused there).
_DTYPES = frozenset({"float16", "float32", "float64", "int32", "int64", "uint8", "bool"})
MAX_INDEX_BYTES = 1 << 20
_MAX_DIMS = 8


class PayloadError(ValueError):
    """A peer's message does not have the expected content."""


def to_record(tensors: Mapping[str, torch.Tensor | np.ndarray]) -> ArrayRecord:
    """Pack tensors (detached, CPU; bfloat16 widened, which numpy lacks) into an ArrayRecord
    (little-endian bytes and their index)."""
    index, parts = [], []
    for key, value in tensors.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            if value.dtype == torch.bfloat16:
                value = value.float()
            value = value.numpy()
        value = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<"))
        index.append([key, value.dtype.name, list(value.shape)])
        parts.append(value.tobytes())
    data = np.frombuffer(b"".join(parts), dtype=np.uint8)
    meta = np.frombuffer(json.dumps(index).encode(), dtype=np.uint8)
    return ArrayRecord({TENSORS: Array(data), INDEX: Array(meta)})


def unpack(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """The tensors of a record `to_record` made, as sent (PayloadError when it is not one)."""
    if not isinstance(record, ArrayRecord):
        raise PayloadError(f"expected an ArrayRecord, got {type(record).__name__}")
    if set(record.keys()) != {TENSORS, INDEX}:
        raise PayloadError(f"expected packed tensors ({TENSORS!r} and {INDEX!r}), got "
                           f"{sorted(record.keys())[:4]}")
    try:
        data, meta = record[TENSORS].numpy(), record[INDEX].numpy()
    except Exception as exc:  # a corrupt buffer raises from numpy's deserialiser
        raise PayloadError(f"unreadable packed tensors ({exc})") from exc
    if data.dtype != np.uint8 or data.ndim != 1 or meta.dtype != np.uint8 or meta.ndim != 1:
        raise PayloadError("packed tensors are not flat bytes")
    if meta.size > MAX_INDEX_BYTES:
        raise PayloadError(f"an index of {meta.size} bytes (at most {MAX_INDEX_BYTES})")
    try:
        index = json.loads(meta.tobytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"unreadable index of packed tensors ({exc})") from None
    if not isinstance(index, list):
        raise PayloadError("the index of packed tensors is not a list")
    buffer, offset, tensors = data.tobytes(), 0, {}
    for entry in index:
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                and entry[1] in _DTYPES and isinstance(entry[2], list)
                and len(entry[2]) <= _MAX_DIMS
                and all(type(n) is int and n >= 0 for n in entry[2])):
            raise PayloadError(f"bad index entry {str(entry)[:120]}")
        key, dtype, shape = entry[0], np.dtype(entry[1]).newbyteorder("<"), entry[2]
        if key in tensors:
            raise PayloadError(f"the index names {key!r} twice")
        count = math.prod(shape)
        if offset + count * dtype.itemsize > len(buffer):
            raise PayloadError(f"{key}: the packed bytes end before it")
        array = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset)
        tensors[key] = torch.from_numpy(array.astype(dtype.newbyteorder("="))
                                        .reshape(shape))
        offset += count * dtype.itemsize
    if offset != len(buffer):
        raise PayloadError(f"{len(buffer) - offset} packed bytes beyond the index")
    return tensors


def from_record(record: ArrayRecord, spec: Spec) -> dict[str, torch.Tensor]:
    """Unpack an ArrayRecord and validate it with `check_tensors` (fp32 floats)."""
    return check_tensors(unpack(record), spec)


def check_tensors(tensors: Mapping[str, torch.Tensor], spec: Spec,
                  wire_dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Validate received tensors against `spec`, widening floats from the wire dtype.

    Exactly the keys of `spec`; integer tensors in the spec's dtype, floating ones in
    `wire_dtype`; shapes as in the spec (-1 accepts any size along that axis); finite values.
    Serves both data planes: Flower records and stream frames.
    """
    missing, extra = set(spec) - set(tensors), set(tensors) - set(spec)
    if missing or extra:
        raise PayloadError(f"keys differ: missing {sorted(missing)[:3]}, unexpected "
                           f"{sorted(extra)[:3]}")
    out = {}
    for key, (shape, dtype) in spec.items():
        tensor = tensors[key]
        sent_as = wire_dtype if dtype.is_floating_point else dtype
        if tensor.dtype != sent_as:
            raise PayloadError(f"{key}: dtype {tensor.dtype}, expected {sent_as}")
        if tensor.dim() != len(shape) or any(
                want not in (-1, got) for want, got in zip(shape, tensor.shape, strict=True)):
            raise PayloadError(f"{key}: shape {tuple(tensor.shape)}, expected {shape}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise PayloadError(f"{key}: non-finite values")
        out[key] = tensor.to(dtype)
    return out


def client_error(reply: Message) -> str:
    """A client's error reply in one line: its code and the last line of its reason (Ray
    simulation wraps the device's exception in a multi-line traceback)."""
    lines = [line.strip() for line in reply.error.reason.splitlines() if line.strip()]
    return f"client error {reply.error.code}: {lines[-1][-300:] if lines else '(no reason)'}"


def reply_content(reply: Message | None, what: str) -> RecordDict:
    """The content of a client's reply to a query; TimeoutError when it never came ("no
    <what> reply"), RuntimeError with `client_error` when the client answered with an error."""
    if reply is None:
        raise TimeoutError(f"no {what} reply")
    if reply.has_error():
        raise RuntimeError(client_error(reply))
    return reply.content


def lora_spec(state: Mapping[str, torch.Tensor]) -> Spec:
    """The spec a returned adapter must match: the keys and shapes that were sent out."""
    return {k: (tuple(v.shape), torch.float32) for k, v in state.items()}
