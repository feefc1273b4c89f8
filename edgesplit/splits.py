"""Where a model may be cut: the one home of the split-range rule (no torch, so the allocator
can use it too).

A split `k` puts decoder layers [0, k) on the device. A head/tail split of an L-layer model needs
a layer on each side: k in [1, L - 1]. A U-shaped split keeps the last t layers on the device as
well (device [0, k) + [L - t, L), server [k, L - t)), so the server needs at least one:
k in [1, L - t - 1].
"""

from __future__ import annotations


def split_range(num_layers: int, device_tail_layers: int = 0) -> range:
    """The valid splits of a `num_layers` model whose device also keeps `device_tail_layers`."""
    return range(1, num_layers - device_tail_layers)


def check_split(split: int, num_layers: int, device_tail_layers: int = 0) -> None:
    """Raise ValueError when `split` is outside `split_range`, saying what the range is."""
    valid = split_range(num_layers, device_tail_layers)
    if split not in valid:
        kept = f" with {device_tail_layers} tail layers on the device" if device_tail_layers else ""
        raise ValueError(f"split {split} outside [1, {valid.stop - 1}] for a {num_layers}-layer "
                         f"model{kept}")


def device_layers(split: int, num_layers: int, device_tail_layers: int = 0) -> list[int]:
    """Decoder layers whose LoRA a device trains: its head [0, split), and in a U-shaped split
    its tail [L - t, L)."""
    return [*range(split), *range(num_layers - device_tail_layers, num_layers)]
