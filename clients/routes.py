"""The device's one entry point: a Flower message (its type, content and `context.state`) and
the run and node configs in, the reply content out.

Both hosts of the device code call `serve`: the ClientApp when it serves a message in its own
process (Ray simulation, tests, a plain deployment), and the resident device agent
(`clients.agent`) when the ClientApp forwards the message to it. So the two give the same
replies from the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from flwr.app import RecordDict

from clients import faults, handlers, stream_client
from clients.device import Device
from edgesplit.protocol import (
    EVALUATE,
    QUERY_PROFILE,
    TRAIN_START,
    TRAIN_STEP,
    TRAIN_STREAM,
)
from edgesplit.settings import Settings

Handler = Callable[[RecordDict, RecordDict, Device], RecordDict]

#: Message type -> the handler that answers it.
HANDLERS: dict[str, Handler] = {
    QUERY_PROFILE: handlers.query_profile,
    TRAIN_START: handlers.train_start,
    TRAIN_STEP: handlers.train_step,
    TRAIN_STREAM: stream_client.train_stream,
    EVALUATE: handlers.evaluate,
}


def device(run_config: Mapping[str, object], node_config: Mapping[str, object],
           settings: Settings | None = None) -> Device:
    """This node's device, handed only the settings a device uses."""
    settings = settings or Settings.from_run_config(run_config)
    partition_id = int(node_config.get("partition-id", 0))
    return Device(model_name=settings.model_name, lora=settings.lora, data=settings.data,
                  base_dtype=settings.base_dtype, torch_device=settings.client_device,
                  partition_id=partition_id,
                  num_partitions=int(node_config.get("num-partitions", 1)),
                  node_config=dict(node_config), step_timeout_s=settings.step_timeout_s,
                  fault=faults.parse(settings.inject_faults).get(partition_id),
                  fault_rate=settings.fault_rate,
                  fault_kinds=faults.parse_kinds(settings.fault_kinds),
                  activation_noise_std=settings.activation_noise_std,
                  privacy=settings.privacy)


def serve(message_type: str, content: RecordDict, state: RecordDict,
          run_config: Mapping[str, object], node_config: Mapping[str, object]) -> RecordDict:
    """Answer one message; `state` (the node's `context.state`) is updated in place."""
    handler = HANDLERS.get(message_type)
    if handler is None:
        raise ValueError(f"no device handler for message type {message_type!r}")
    settings = Settings.from_run_config(run_config)
    # `compute.client-threads` (default 1): default intra-op threading made small steps 5-20x slower
    # in deployment (flower-facts.md); in simulation each actor holds one of the machine's cores.
    torch.set_num_threads(settings.client_threads)
    return handler(content, state, device(run_config, node_config, settings))
