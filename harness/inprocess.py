"""An in-process stand-in for Flower's Grid: routes messages straight to a ClientApp.

It runs the real ClientApp handlers with one `Context` (and so one `context.state`) per node,
without a SuperLink or Ray. Tests use it to check the strategy exactly against an independent
computation, and benchmarks to time the split step without Flower's polling; `run_in_process`
runs a whole training (the real ServerApp code) on it.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.supercore.task_identity import TaskIdentity

from fl_app.client_app import app as client_app
from fl_app.run_config import parse
from fl_app.server_app import train

DROP = "drop"  # a fault's verdict: the message is lost, no reply ever comes
Fault = Callable[[Message], "Message | str | None"]


class InProcessGrid:
    """Deliver each pushed message to `client_app` at once and keep the reply until pulled.

    Parameters
    ----------
    client_app : ClientApp
    run_config : mapping
        The run config every node sees.
    num_nodes : int
        Nodes get ids 1..num_nodes and partition ids 0..num_nodes-1.
    fault : callable, optional
        `fault(message)` returns None (deliver normally), a reply to use instead, or `DROP`.
    concurrent : bool (default: False)
        Run handlers in a thread per node instead of inside `push_messages`, as Flower does:
        needed when a handler blocks on the server (the stream transport's handler streams the
        whole round while the server serves it).
    """

    def __init__(self, client_app: ClientApp, run_config: Mapping, num_nodes: int,
                 fault: Fault | None = None, concurrent: bool = False) -> None:
        TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
        self.app, self.fault = client_app, fault
        self.contexts = {
            node: Context(run_id=1, node_id=node, state=RecordDict(), run_config=dict(run_config),
                          node_config={"partition-id": node - 1, "num-partitions": num_nodes})
            for node in range(1, num_nodes + 1)}
        self._replies: dict[str, Message] = {}
        self._running: dict[str, Future] = {}
        self._lock = threading.Lock()  # replies are stored by handler threads when concurrent
        self._pool = (ThreadPoolExecutor(max_workers=num_nodes, thread_name_prefix="client")
                      if concurrent else None)

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def _deliver(self, msg: Message) -> Message | str:
        injected = self.fault(msg) if self.fault else None
        if injected is not None:
            return injected
        try:
            return self.app(msg, self.contexts[msg.metadata.dst_node_id])
        except Exception as exc:  # Flower turns a handler exception into an error reply
            return Message(Error(code=2, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)

    def _run(self, msg: Message) -> None:
        reply = self._deliver(msg)
        if reply is not DROP:
            with self._lock:
                self._replies[msg.metadata.message_id] = reply

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            if self._pool is None:
                self._run(msg)
            else:
                self._running[msg.metadata.message_id] = self._pool.submit(self._run, msg)
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        with self._lock:
            replies = {i: self._replies.pop(i) for i in list(message_ids) if i in self._replies}
        for i in replies:
            self._running.pop(i, None)
        return list(replies.values())

    def send_and_receive(self, messages: Iterable[Message], timeout: float | None = None
                         ) -> list[Message]:
        ids = self.push_messages(messages)
        wait([self._running.pop(i) for i in ids if i in self._running], timeout=timeout)
        return self.pull_messages(ids)


def run_in_process(config: Mapping[str, Any], num_nodes: int = 4, *, fault: Fault | None = None,
                   grid_hook: Callable[[InProcessGrid], None] | None = None):
    """Train with the real ServerApp and ClientApp code on an `InProcessGrid`.

    Handlers run in a thread per node when the transport is the stream (its handler streams the
    whole round while the server serves it). Returns (strategy, final adapter, metrics rows).
    """
    settings = parse(config)
    grid = InProcessGrid(client_app, config, num_nodes, fault=fault,
                         concurrent=settings.transport == "stream")
    if grid_hook:
        grid_hook(grid)
    strategy = train(grid, settings)
    metrics = Path(strategy.recorder.folder) / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    return strategy, strategy.global_lora, rows
