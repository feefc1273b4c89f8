"""Tensors in and out of Flower records, one implementation for both sides, with validation.

Everything a peer sends is checked before use: the expected keys, dtypes, shapes and finite
values. A violation raises `PayloadError`, which the receiver turns into "drop this client from
the round" rather than a crash or a poisoned aggregate.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, RecordDict

Spec = Mapping[str, tuple[tuple[int, ...], torch.dtype]]


class PayloadError(ValueError):
    """A peer's message does not have the expected content."""


def to_record(tensors: Mapping[str, torch.Tensor | np.ndarray]) -> ArrayRecord:
    """Pack tensors (detached, CPU; bfloat16 widened, which Flower rejects) into an ArrayRecord."""
    arrays = {}
    for key, value in tensors.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            if value.dtype == torch.bfloat16:
                value = value.float()
            value = value.numpy()
        arrays[key] = Array(np.ascontiguousarray(value))
    return ArrayRecord(arrays)


def from_record(record: ArrayRecord, spec: Spec) -> dict[str, torch.Tensor]:
    """Unpack an ArrayRecord and validate it with `check_tensors` (fp32 floats)."""
    if not isinstance(record, ArrayRecord):
        raise PayloadError(f"expected an ArrayRecord, got {type(record).__name__}")
    tensors = {}
    for key in record.keys():
        try:
            tensors[key] = torch.from_numpy(record[key].numpy().copy())
        except Exception as exc:  # a corrupt buffer raises from numpy's deserialiser
            raise PayloadError(f"{key}: unreadable array ({exc})") from exc
    return check_tensors(tensors, spec)


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
