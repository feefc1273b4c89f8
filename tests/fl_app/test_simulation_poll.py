"""Flower's simulation poller with the idle-node filter: the same messages, fewer scans."""

from __future__ import annotations

import secrets
import time
import uuid

import pytest
from flwr.app import Message, RecordDict
from flwr.common.constant import NOOP_ACCOUNT_NAME, NOOP_FLWR_AID, SUPERLINK_NODE_ID
from flwr.server.superlink.linkstate import InMemoryLinkState, LinkStateFactory
from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.federation import NoOpFederationManager

from fl_app.simulation_poll import IdleNodeFilter, skip_idle_nodes

RUN_ID = 7


class FakeGrid:
    """What `skip_idle_nodes` reads of Flower's InMemoryGrid: its LinkState."""

    def __init__(self, state: InMemoryLinkState) -> None:
        self.state = state


def _state(nodes: int) -> tuple[InMemoryLinkState, list[int]]:
    state = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(),
                             ObjectStoreFactory()).state()
    run = Run.create_empty(run_id=RUN_ID)
    run.federation_id = NOOP_FEDERATION_ID
    state.run_ids[RUN_ID] = RunRecord(run=run)
    ids = [state.create_node(NOOP_FLWR_AID, NOOP_ACCOUNT_NAME, secrets.token_bytes(32),
                             heartbeat_interval=1e9) for _ in range(nodes)]
    return state, ids


def _message(node: int, ttl: float = 1e6) -> Message:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = RUN_ID, SUPERLINK_NODE_ID, 1
    msg = Message(RecordDict(), dst_node_id=node, message_type="train")
    for key, value in (("_run_id", RUN_ID), ("_src_node_id", SUPERLINK_NODE_ID),
                       ("_message_id", uuid.uuid4().hex), ("_created_at", time.time()),
                       ("_ttl", ttl)):
        msg.metadata.__dict__[key] = value
    return msg


def _poll(state: InMemoryLinkState, nodes: list[int]) -> dict[int, list[str]]:
    """One tick of Flower's poller: each node's next message id."""
    return {n: [m.metadata.message_id for m in state.get_message_ins(node_id=n, limit=1)]
            for n in nodes}


@pytest.mark.parametrize("filtered", [False, True])
def test_every_stored_message_reaches_its_node_once(filtered: bool) -> None:
    # Prepare
    state, nodes = _state(50)
    wrapper = skip_idle_nodes(FakeGrid(state)) if filtered else None
    first = [_message(n) for n in (nodes[3], nodes[3], nodes[10])]
    for msg in first:
        state.message_ins_store[msg.metadata.message_id] = msg  # as store_message_ins keeps it
    if wrapper:
        wrapper._waiting = None  # stored behind its back: as after store_message_ins

    # Execute: three ticks, a new message for a node between the second and the third
    ticks = [_poll(state, nodes), _poll(state, nodes)]
    late = _message(nodes[20])
    state.message_ins_store[late.metadata.message_id] = late
    if wrapper:
        wrapper._waiting = None  # as store_message_ins does
    ticks.append(_poll(state, nodes))

    # Assert: node 3 gets its two messages on two ticks, node 10 one, node 20 the late one
    given = {n: [m for tick in ticks for m in tick[n]] for n in nodes}
    assert given[nodes[3]] == [first[0].metadata.message_id, first[1].metadata.message_id]
    assert given[nodes[10]] == [first[2].metadata.message_id]
    assert given[nodes[20]] == [late.metadata.message_id]
    assert sum(len(v) for v in given.values()) == 4
    if wrapper:  # idle nodes never reached Flower's scan
        assert wrapper.skipped >= 3 * 50 - 6


def test_storing_through_the_state_reaches_the_filter() -> None:
    # Prepare: Flower's own store needs the grid's object store; stand in for its effect
    state, nodes = _state(5)
    wrapper = skip_idle_nodes(FakeGrid(state))
    assert isinstance(wrapper, IdleNodeFilter)

    def flower_store(message: Message) -> str:
        state.message_ins_store[message.metadata.message_id] = message
        return message.metadata.message_id

    wrapper._store = flower_store
    assert _poll(state, nodes) == {n: [] for n in nodes}  # the filter now knows no one waits

    # Execute: a message stored the way the grid stores it
    stored = state.store_message_ins(_message(nodes[2]))

    # Assert
    assert _poll(state, nodes)[nodes[2]] == [stored]


def test_expired_messages_are_still_dropped_by_flower() -> None:
    state, nodes = _state(3)
    skip_idle_nodes(FakeGrid(state))
    msg = _message(nodes[0], ttl=1e-3)
    state.message_ins_store[msg.metadata.message_id] = msg
    time.sleep(0.01)
    assert _poll(state, nodes)[nodes[0]] == []
    assert msg.metadata.message_id not in state.message_ins_store


def test_other_grids_are_left_alone() -> None:
    assert skip_idle_nodes(object()) is None
    state, _ = _state(2)
    first = skip_idle_nodes(FakeGrid(state))
    assert skip_idle_nodes(FakeGrid(state)) is first  # installed once
