"""Ray simulation with many registered nodes: skip Flower's per-node message scan for idle nodes.

Flower's simulation engine (flwr 1.41/1.42, `vce_api.add_messages_to_queue`) asks its in-memory
LinkState for each registered node's next message every 0.1 s, and
`InMemoryLinkState.get_message_ins` validates every stored message on each call, its own or not.
The stream transport keeps one train message per sampled client in flight for the whole round,
so a tick costs (registered nodes) x (messages in flight) validations, in the ServerApp's own
process and under its GIL. Measured (docs/results.md, "Scale"): 3 ms of CPU per tick with 100
registered and 10 in flight, 33 ms with 1000 (a third of a core), 63 ms with 1000 and 20.

`skip_idle_nodes` answers the nodes with no undelivered message from a set of the nodes that
have one, rebuilt only after a message is stored or delivered, and hands every other call to
Flower's own `get_message_ins` unchanged: the same messages, in the same order, with the same
checks (expiry, federation) for the messages a node is given; a tick then costs one set lookup
per node. It changes only this run's LinkState object, and only the Flower versions whose
internals it was checked against.
"""

from __future__ import annotations

import threading
from logging import INFO

import flwr
from flwr.app import Message
from flwr.common.logger import log
from flwr.server.superlink.linkstate import InMemoryLinkState

CHECKED_VERSIONS = ("1.41.0", "1.42.0")


class IdleNodeFilter:
    """Wraps one InMemoryLinkState's `get_message_ins` and `store_message_ins`."""

    def __init__(self, state: InMemoryLinkState) -> None:
        self.state = state
        self._get, self._store = state.get_message_ins, state.store_message_ins
        self._lock = threading.Lock()
        self._waiting: set[int] | None = None  # nodes with an undelivered message; None: stale
        self.skipped = 0  # calls answered without Flower's scan (for tests)

    def store_message_ins(self, message: Message) -> str | None:
        message_id = self._store(message)
        with self._lock:
            self._waiting = None
        return message_id

    def get_message_ins(self, node_id: int, limit: int | None, *, run_id: int | None = None
                        ) -> list[Message]:
        with self._lock:
            if self._waiting is None:
                self._waiting = {m.metadata.dst_node_id
                                 for m in list(self.state.message_ins_store.values())
                                 if m.metadata.delivered_at == ""}
            if node_id not in self._waiting:
                self.skipped += 1
                return []
        try:
            return self._get(node_id, limit, run_id=run_id)
        finally:  # delivered or deleted (expired) messages: rebuild on the next call
            with self._lock:
                self._waiting = None


def in_simulation(grid: object) -> bool:
    """Whether `grid` is Flower's simulation grid (its LinkState in this process's memory)."""
    return isinstance(getattr(grid, "state", None), InMemoryLinkState)


def skip_idle_nodes(grid: object) -> IdleNodeFilter | None:
    """Install the filter on a simulation grid's LinkState; None (nothing changed) for any other
    grid (deployment) or an unchecked Flower version."""
    if not in_simulation(grid) or flwr.__version__ not in CHECKED_VERSIONS:
        return None
    state = grid.state
    if isinstance(getattr(state.get_message_ins, "__self__", None), IdleNodeFilter):
        return state.get_message_ins.__self__  # installed already (a resumed main)
    wrapper = IdleNodeFilter(state)
    state.get_message_ins = wrapper.get_message_ins  # type: ignore[method-assign]
    state.store_message_ins = wrapper.store_message_ins  # type: ignore[method-assign]
    log(INFO, "simulation: idle nodes skip Flower's per-node message scan (%d registered)",
        len(state.nodes))
    return wrapper
