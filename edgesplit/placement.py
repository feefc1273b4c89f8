"""Where the frozen base runs and in which precision: run-config names -> torch objects.

`compute.server-device` places the server's model (every client's tail); `compute.client-device`
places a device's head (in simulation, where devices share the machine; Ray hands a client actor a
GPU only with `client-resources-num-gpus`); `model.base-dtype` is the frozen base's precision (LoRA
parameters and optimizer state stay float32).
"""

from __future__ import annotations

import re

import torch

BASE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_device_name(name: str, key: str) -> None:
    """ValueError naming `key` unless `name` is auto, cpu, cuda or cuda:<index> (whether this
    machine has that device is `resolve_device`'s question, asked where the model loads)."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise ValueError(f"config {key} = {name!r}: one of auto, cpu, cuda, cuda:<index>")


def resolve_device(name: str, key: str) -> torch.device:
    """`auto` (the first CUDA device if there is one, else the CPU), `cpu`, `cuda` or
    `cuda:<i>`, checked against this machine; ValueError naming `key` otherwise."""
    check_device_name(name, key)
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cpu":
        return device
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if (device.index or 0) >= count:
        raise ValueError(f"config {key} = {name!r}: this machine has {count} CUDA device(s)")
    return torch.device("cuda", device.index or 0)
