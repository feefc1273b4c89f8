"""Benchmark: CPU per tick of Flower's simulation poller, with and without the idle-node filter.

Flower's simulation engine asks its in-memory LinkState for each registered node's next message
every 0.1 s (`vce_api.add_messages_to_queue`); each call validates every stored message. This
times one such tick (a `get_message_ins` per registered node) with `in flight` messages stored
(the stream transport keeps one per sampled client all round), on Flower's own LinkState, with
and without `fl_app.simulation_poll.IdleNodeFilter`. Writes CSV to the output folder.

    python -m experiments.bench_simulation_poll [--registered 100 1000] [--in-flight 10 20]
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
import uuid
from pathlib import Path

from flwr.app import Message, RecordDict
from flwr.common.constant import NOOP_ACCOUNT_NAME, NOOP_FLWR_AID, SUPERLINK_NODE_ID
from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.federation import NoOpFederationManager

from experiments.plotting import write_csv
from fl_app.simulation_poll import IdleNodeFilter


def tick_cpu_s(registered: int, in_flight: int, filtered: bool, ticks: int) -> float:
    """CPU seconds of one poller tick (the mean over `ticks`)."""
    state = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(),
                             ObjectStoreFactory()).state()
    run = Run.create_empty(run_id=1)
    run.federation_id = NOOP_FEDERATION_ID
    state.run_ids[1] = RunRecord(run=run)
    nodes = [state.create_node(NOOP_FLWR_AID, NOOP_ACCOUNT_NAME, secrets.token_bytes(32),
                               heartbeat_interval=1e9) for _ in range(registered)]
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, SUPERLINK_NODE_ID, 1
    for node in nodes[:in_flight]:
        msg = Message(RecordDict(), dst_node_id=node, message_type="train")
        for key, value in (("_run_id", 1), ("_src_node_id", SUPERLINK_NODE_ID),
                           ("_message_id", uuid.uuid4().hex), ("_created_at", time.time()),
                           ("_ttl", 1e6)):
            msg.metadata.__dict__[key] = value
        msg.metadata.delivered_at = "delivered"  # handed to an actor, reply pending
        state.message_ins_store[msg.metadata.message_id] = msg
    if filtered:
        state.get_message_ins = IdleNodeFilter(state).get_message_ins
    started = time.process_time()
    for _ in range(ticks):
        for node in nodes:
            state.get_message_ins(node_id=node, limit=1)
    return (time.process_time() - started) / ticks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registered", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--in-flight", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("results/bench_scale"))
    args = parser.parse_args()
    rows = []
    for registered in args.registered:
        for in_flight in args.in_flight:
            for filtered in (False, True):
                cpu = tick_cpu_s(registered, in_flight, filtered, args.ticks)
                rows.append({"registered": registered, "in_flight": in_flight,
                             "idle_node_filter": filtered, "cpu_ms_per_tick": round(cpu * 1e3, 2),
                             "core_share_at_10_ticks_per_s": round(cpu / 0.1, 3),
                             "load_avg_1m": round(os.getloadavg()[0], 2)})
                print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.out / "poll_cost.csv")


if __name__ == "__main__":
    main()
