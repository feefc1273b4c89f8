"""Device-side message handlers: pure functions of (message content, `context.state`, device).

`fl_app/client_app.py` only routes Flower messages here, so the same code runs under Ray
simulation, under a deployed SuperNode, and in-process in tests.
"""

from __future__ import annotations

import time

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from clients import faults
from clients.cache import HEAD_LOCK
from clients.calibration import calibrate as time_training
from clients.device import Device
from clients.session import DeviceSession, validation_activations
from edgesplit.protocol import (
    ACTIVATIONS,
    CALIBRATION,
    COMPUTE_S,
    CONFIG,
    GRADIENT,
    LORA,
    METRICS,
    PROFILE,
    RoundTask,
    gradient_spec,
)
from edgesplit.records import from_record, to_record

# Names of this device's records in context.state while a round is in progress.
_TASK, _LORA, _OPTIM = "round.task", "round.lora", "round.optim"


def query_profile(content: RecordDict, _state: RecordDict, device: Device) -> RecordDict:
    """Report the device profile, how much training data this device holds and which data
    partition it is (so reports can name a client by its data, not only its node id); when the
    server asks (a `calibration` record), also time this device's training steps at the shape
    asked (`clients.calibration`): seconds per layer and per step, or why it could not."""
    record = ConfigRecord(device.profile().as_dict())
    record["num-examples"] = len(device.shard().train)
    record["partition-id"] = device.partition_id
    reply = RecordDict({PROFILE: record})
    if CALIBRATION in content:
        reply[CALIBRATION] = calibrate(content[CALIBRATION], device)
    return reply


def calibrate(request: ConfigRecord, device: Device) -> ConfigRecord:
    """The `calibration` record of a profile reply: seconds per layer and per step of this
    device's training at the shape `request` asks, or the error that prevented it."""
    try:
        measured = time_training(device, int(request["layers"]), int(request["batch-size"]),
                                 str(request["optimizer"]), int(request["steps"]))
    except Exception as exc:  # the device still trains: the server keeps its catalogue figures
        return ConfigRecord({"error": f"{type(exc).__name__}: {exc}"})
    return ConfigRecord({"layer-s": measured.layer_s, "fixed-s": measured.fixed_s})


def train_start(content: RecordDict, state: RecordDict, device: Device) -> RecordDict:
    """Begin a round: take the head adapter, reply with the activations of step 0."""
    task = RoundTask.from_record(content[CONFIG])
    if task.u_shaped:
        raise ValueError("a U-shaped split runs on the stream transport only")
    session = DeviceSession(device.model(task.split), device.shard().train, task,
                            device.received_lora(content[LORA], task.split),
                            noise_std=device.activation_noise_std)
    started = time.perf_counter()
    acts = session.activations(0)
    _save(state, task, session, step=0, compute_s=time.perf_counter() - started)
    return RecordDict({ACTIVATIONS: to_record(acts)})


def train_step(content: RecordDict, state: RecordDict, device: Device) -> RecordDict:
    """Apply the gradient of the step in flight; reply with the next activations, or with the
    trained head adapter after the last step."""
    if _TASK not in state:
        raise ValueError("train.step without a round in progress (train.start missing)")
    task = RoundTask.from_record(state[_TASK])
    step = int(state[_TASK]["step"])
    if int(content[CONFIG]["step"]) != step:
        raise ValueError(f"gradient for step {content[CONFIG]['step']}, expected step {step}")
    # Before step + 1's activations.
    faults.at_step(device, task.server_round, step + 1, task.local_steps)
    model, data = device.model(task.split), device.shard().train
    session = DeviceSession(model, data, task, state[_LORA].to_torch_state_dict(),
                            state[_OPTIM].to_torch_state_dict(), device.activation_noise_std)
    spec = gradient_spec(task.batch_size, data.input_ids.shape[1], model.config.hidden_size)
    gradient = from_record(content[GRADIENT], spec)["hidden"]
    started = time.perf_counter()
    session.apply_gradient(step, gradient)
    acts = session.activations(step + 1) if step + 1 < task.local_steps else None
    compute_s = float(state[_TASK]["compute-s"]) + time.perf_counter() - started
    if acts is not None:
        _save(state, task, session, step=step + 1, compute_s=compute_s)
        return RecordDict({ACTIVATIONS: to_record(acts)})
    for name in (_TASK, _LORA, _OPTIM):
        del state[name]
    metrics = MetricRecord({"num-examples": len(device.shard().train), COMPUTE_S: compute_s})
    return RecordDict({LORA: to_record(session.lora()), METRICS: metrics})


def evaluate(content: RecordDict, _state: RecordDict, device: Device) -> RecordDict:
    """Head activations of this device's validation blocks under the global adapter."""
    config = content[CONFIG]
    split = int(config["split"])
    with HEAD_LOCK:
        lora = device.received_lora(content[LORA], split)
        acts = validation_activations(device.model(split), device.shard().val, split, lora,
                                      int(config["max-blocks"]), device.activation_noise_std)
    return RecordDict({ACTIVATIONS: to_record(acts)})


def _save(state: RecordDict, task: RoundTask, session: DeviceSession, step: int,
          compute_s: float) -> None:
    record = task.to_record()
    record["step"] = step
    record["compute-s"] = compute_s  # the device's compute so far this round
    state[_TASK] = record
    state[_LORA] = ArrayRecord(torch_state_dict=session.lora())
    state[_OPTIM] = ArrayRecord(torch_state_dict=session.optim_state())
