"""Payload validation: what a peer sends is checked before use."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord

from edgesplit.records import PayloadError, from_record, to_record

SPEC = {"hidden": ((-1, 4, 8), torch.float32), "attention_mask": ((-1, 4), torch.int64)}


def good():
    return {"hidden": torch.randn(2, 4, 8), "attention_mask": torch.ones(2, 4, dtype=torch.long)}


def test_round_trip_is_exact_and_bf16_is_widened():
    tensors = good()
    out = from_record(to_record(tensors), SPEC)
    assert all(torch.equal(out[k], tensors[k]) for k in tensors)
    wide = from_record(to_record({"x": torch.ones(3, dtype=torch.bfloat16)}),
                       {"x": ((3,), torch.float32)})
    assert wide["x"].dtype == torch.float32


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t.pop("attention_mask"), "keys differ"),
    (lambda t: t.update(extra=torch.zeros(1)), "keys differ"),
    (lambda t: t.update(hidden=torch.randn(2, 5, 8)), "shape"),
    (lambda t: t.update(hidden=torch.randn(2, 4)), "shape"),
    (lambda t: t.update(hidden=torch.randn(2, 4, 8).double()), "dtype"),
    (lambda t: t.update(attention_mask=torch.ones(2, 4)), "dtype"),
    (lambda t: t["hidden"].__setitem__((0, 0, 0), float("nan")), "non-finite"),
    (lambda t: t["hidden"].__setitem__((0, 0, 0), float("inf")), "non-finite"),
])
def test_malformed_payloads_are_rejected_with_a_reason(mutate, message):
    tensors = good()
    mutate(tensors)
    with pytest.raises(PayloadError, match=message):
        from_record(to_record(tensors), SPEC)


def test_corrupt_buffer_and_wrong_record_type_are_rejected():
    record = ArrayRecord({"hidden": Array(np.zeros((2, 4, 8), np.float32)),
                          "attention_mask": Array(np.ones((2, 4), np.int64))})
    record["hidden"].data = b"\x00garbage"
    with pytest.raises(PayloadError, match="unreadable"):
        from_record(record, SPEC)
    with pytest.raises(PayloadError, match="ArrayRecord"):
        from_record({"hidden": 1}, SPEC)
