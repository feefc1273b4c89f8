"""Payload validation: what a peer sends is checked before use."""

import json

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord

from edgesplit.records import INDEX, TENSORS, PayloadError, from_record, to_record, unpack

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
    record = to_record(good())
    record[TENSORS].data = b"\x00garbage"
    with pytest.raises(PayloadError, match="unreadable"):
        from_record(record, SPEC)
    with pytest.raises(PayloadError, match="ArrayRecord"):
        from_record({"hidden": 1}, SPEC)
    per_tensor = ArrayRecord({"hidden": Array(np.zeros((2, 4, 8), np.float32))})
    with pytest.raises(PayloadError, match="expected packed tensors"):
        from_record(per_tensor, SPEC)


def test_a_set_of_tensors_travels_as_two_arrays_whatever_its_size():
    """Flower moves each Array of a deployed message with requests of its own: an adapter of
    hundreds of tensors must not cost hundreds of them."""
    adapter = {f"layer.{i}.lora_{ab}": torch.randn(4, 8) for i in range(200) for ab in "AB"}
    record = to_record(adapter)
    assert sorted(record.keys()) == [INDEX, TENSORS]
    out = unpack(record)
    assert list(out) == list(adapter) and all(torch.equal(out[k], adapter[k]) for k in adapter)


def index_of(entries) -> Array:
    return Array(np.frombuffer(json.dumps(entries).encode(), dtype=np.uint8))


@pytest.mark.parametrize("entries, data, message", [
    ([["x", "float32", [2]]], 4, "end before it"),
    ([["x", "float32", [1]]], 8, "beyond the index"),
    ([["x", "float32", [1]], ["x", "float32", [1]]], 8, "twice"),
    ([["x", "object", [1]]], 8, "bad index entry"),
    ([["x", "float32", [-1]]], 8, "bad index entry"),
    ([["x", "float32", [1] * 9]], 4, "bad index entry"),
    ({"x": 1}, 4, "not a list"),
])
def test_a_forged_index_is_refused_with_a_reason(entries, data, message):
    record = ArrayRecord({TENSORS: Array(np.zeros(data, np.uint8)), INDEX: index_of(entries)})
    with pytest.raises(PayloadError, match=message):
        unpack(record)
