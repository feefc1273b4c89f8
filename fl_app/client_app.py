"""EdgeSplit ClientApp: a device that trains the head of the model on its private text."""

from __future__ import annotations

from collections.abc import Callable

import torch
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from clients import faults, handlers, stream_client
from clients.device import Device
from edgesplit.protocol import (
    QUERY_CALIBRATE,
    QUERY_PROFILE,
    TRAIN_START,
    TRAIN_STEP,
    TRAIN_STREAM,
    action,
)
from edgesplit.settings import Settings
from fl_app.run_config import parse

app = ClientApp()

Handler = Callable[[RecordDict, RecordDict, Device], RecordDict]


def device(context: Context, settings: Settings | None = None) -> Device:
    """This node's device, handed only the settings a device uses."""
    settings, node = settings or parse(context.run_config), context.node_config
    partition_id = int(node.get("partition-id", 0))
    return Device(model_name=settings.model_name, lora=settings.lora, data=settings.data,
                  base_dtype=settings.base_dtype, torch_device=settings.client_device,
                  partition_id=partition_id, num_partitions=int(node.get("num-partitions", 1)),
                  node_config=dict(node), step_timeout_s=settings.step_timeout_s,
                  fault=faults.parse(settings.inject_faults).get(partition_id),
                  fault_rate=settings.fault_rate,
                  fault_kinds=faults.parse_kinds(settings.fault_kinds),
                  activation_noise_std=settings.activation_noise_std,
                  privacy=settings.privacy)


def _serve(handler: Handler, msg: Message, context: Context) -> Message:
    settings = parse(context.run_config)
    # `client-threads` (default 1): deployment starts a process per message, and default
    # intra-op threading made small steps 5-20x slower there (flower-facts.md); in simulation
    # each actor holds one of the machine's cores.
    torch.set_num_threads(settings.client_threads)
    return Message(handler(msg.content, context.state, device(context, settings)),
                   reply_to=msg)


@app.query(action(QUERY_PROFILE))
def query_profile(msg: Message, context: Context) -> Message:
    return _serve(handlers.query_profile, msg, context)


@app.query(action(QUERY_CALIBRATE))
def calibrate(msg: Message, context: Context) -> Message:
    return _serve(handlers.calibrate, msg, context)


@app.train(action(TRAIN_START))
def train_start(msg: Message, context: Context) -> Message:
    return _serve(handlers.train_start, msg, context)


@app.train(action(TRAIN_STEP))
def train_step(msg: Message, context: Context) -> Message:
    return _serve(handlers.train_step, msg, context)


@app.train(action(TRAIN_STREAM))
def train_stream(msg: Message, context: Context) -> Message:
    return _serve(stream_client.train_stream, msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return _serve(handlers.evaluate, msg, context)
