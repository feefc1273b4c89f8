"""Tensors in and out of Flower records, one implementation for both sides, with validation.

Everything a peer sends is checked before use: the expected keys, dtypes, shapes and finite
values. A violation raises `PayloadError`, which the receiver turns into "drop this client from
the round" rather than a crash or a poisoned aggregate.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord


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


def from_record(record: ArrayRecord, spec: Mapping[str, tuple[tuple[int, ...], torch.dtype]]
                ) -> dict[str, torch.Tensor]:
    """Unpack and validate: exactly the keys of `spec`, each with its (shape, dtype), all finite.

    A shape entry of -1 accepts any size along that axis.
    """
    if not isinstance(record, ArrayRecord):
        raise PayloadError(f"expected an ArrayRecord, got {type(record).__name__}")
    missing, extra = set(spec) - set(record.keys()), set(record.keys()) - set(spec)
    if missing or extra:
        raise PayloadError(f"keys differ: missing {sorted(missing)[:3]}, unexpected "
                           f"{sorted(extra)[:3]}")
    out = {}
    for key, (shape, dtype) in spec.items():
        try:
            tensor = torch.from_numpy(record[key].numpy().copy())
        except Exception as exc:  # a corrupt buffer raises from numpy's deserialiser
            raise PayloadError(f"{key}: unreadable array ({exc})") from exc
        if tensor.dtype != dtype:
            raise PayloadError(f"{key}: dtype {tensor.dtype}, expected {dtype}")
        if tensor.dim() != len(shape) or any(
                want not in (-1, got) for want, got in zip(shape, tensor.shape, strict=True)):
            raise PayloadError(f"{key}: shape {tuple(tensor.shape)}, expected {shape}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise PayloadError(f"{key}: non-finite values")
        out[key] = tensor
    return out


def lora_spec(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """The spec a returned adapter must match: the keys and shapes that were sent out."""
    return {k: (tuple(v.shape), torch.float32) for k, v in state.items()}
