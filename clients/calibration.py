"""The device's calibration: time a few of its own training steps so the allocator knows its
real speed (the makespan model prefers it to the catalogue's figures).

A step here is exactly a training step of the round (`clients.session.DeviceSession`): head
forward, its recomputation with autograd, backward from a gradient, optimizer step, on a batch of
the device's own data, for heads of 1 and `layers` decoder layers, timed alternately
(`allocation.measurement`).
"""

from __future__ import annotations

import torch

from allocation.measurement import Measured, fit_measured, time_interleaved
from clients.cache import HEAD_LOCK
from clients.device import Device
from clients.session import DeviceSession
from edgesplit.protocol import RoundTask


def calibrate(device: Device, layers: int, batch_size: int, optimizer: str,
              steps: int) -> Measured:
    """Seconds per layer and per step of this device's training, from heads of 1 and
    `layers` layers, `steps` timed steps each."""
    sizes = (1, layers)
    with HEAD_LOCK:
        sessions = []
        for split in sizes:
            task = RoundTask(server_round=1, split=split, local_steps=steps + 1,
                             batch_size=batch_size, learning_rate=1e-4, optimizer=optimizer,
                             seed=0)
            model = device.model(split)
            sessions.append(DeviceSession(model, device.shard().train, task,
                                          model.lora_state(range(split))))

        def step(session: DeviceSession):
            def run() -> None:
                hidden = session.activations(0)["hidden"]
                session.apply_gradient(0, torch.full_like(hidden, 1e-6))
            return run

        seconds = time_interleaved([step(s) for s in sessions], steps)
    return fit_measured(sizes, seconds)
