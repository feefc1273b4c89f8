"""EdgeSplit ClientApp: a device that trains the head of the model on its private text."""

from __future__ import annotations

from collections.abc import Callable

import torch
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from clients import handlers, stream_client
from fl_app.config import Settings

app = ClientApp()

Handler = Callable[[RecordDict, RecordDict, handlers.Device], RecordDict]


def _device(context: Context) -> handlers.Device:
    node = context.node_config
    return handlers.Device(
        settings=Settings.from_run_config(context.run_config),
        partition_id=int(node.get("partition-id", 0)),
        num_partitions=int(node.get("num-partitions", 1)),
        node_config=dict(node),
    )


def _serve(handler: Handler, msg: Message, context: Context) -> Message:
    # Deployment starts a process per message: default intra-op threading made small steps
    # 5-20x slower there (flower-facts.md).
    torch.set_num_threads(1)
    return Message(handler(msg.content, context.state, _device(context)), reply_to=msg)


@app.query("profile")
def query_profile(msg: Message, context: Context) -> Message:
    return _serve(handlers.query_profile, msg, context)


@app.train("start")
def train_start(msg: Message, context: Context) -> Message:
    return _serve(handlers.train_start, msg, context)


@app.train("step")
def train_step(msg: Message, context: Context) -> Message:
    return _serve(handlers.train_step, msg, context)


@app.train("stream")
def train_stream(msg: Message, context: Context) -> Message:
    return _serve(stream_client.train_stream, msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return _serve(handlers.evaluate, msg, context)
