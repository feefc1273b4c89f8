"""EdgeSplit ClientApp: a device that trains the head of the model on its private text.

In deployment Flower starts one `flwr-clientapp` process per message (flower-facts.md). When
the SuperNode's node config names a device agent (`agent-socket`), this process only forwards
the message and `context.state` to that resident agent (`clients.agent`, which keeps the model
and the tokenised shard loaded) and returns its reply: it imports flwr and the forwarder, never
torch. Without an agent it serves the message itself (Ray simulation, tests, a plain
deployment) with the same code (`clients.routes`).
"""

from __future__ import annotations

import os
import resource
import sys
from logging import INFO

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.common.logger import log

from clients.agent_link import AGENT_SOCKET, forward
from edgesplit.protocol import (
    QUERY_PROFILE,
    TRAIN_START,
    TRAIN_STEP,
    TRAIN_STREAM,
    action,
)

app = ClientApp()


def _serve(msg: Message, context: Context) -> Message:
    message_type = msg.metadata.message_type
    agent = context.node_config.get(AGENT_SOCKET)
    if agent:
        content, state = forward(str(agent), message_type, msg.content, context)
        for name in list(context.state.keys()):
            del context.state[name]
        for name, record in state.items():
            context.state[name] = record
    else:
        from clients.routes import serve  # torch loads only where this process does the work

        content = serve(message_type, msg.content, context.state, context.run_config,
                        context.node_config)
    if os.path.basename(sys.argv[0]) == "flwr-clientapp":  # a process per message: its cost
        cpu_s, wall_s = process_cost()
        log(INFO, "clientapp pid %d: %s %s: %.2f CPU-s, %.2f s since the process started",
            os.getpid(), message_type, f"via agent {agent}" if agent else "in-process", cpu_s,
            wall_s)
    return Message(content, reply_to=msg)


def process_cost() -> tuple[float, float]:
    """This process's CPU seconds (user + system) and wall seconds since it started (nan
    without Linux's /proc)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    try:
        with open("/proc/self/stat") as f:  # field 22: start time in clock ticks after boot
            started = int(f.read().rpartition(")")[2].split()[19]) / os.sysconf("SC_CLK_TCK")
        with open("/proc/uptime") as f:
            wall_s = float(f.read().split()[0]) - started
    except OSError:
        wall_s = float("nan")
    return usage.ru_utime + usage.ru_stime, wall_s


@app.query(action(QUERY_PROFILE))
def query_profile(msg: Message, context: Context) -> Message:
    return _serve(msg, context)


@app.train(action(TRAIN_START))
def train_start(msg: Message, context: Context) -> Message:
    return _serve(msg, context)


@app.train(action(TRAIN_STEP))
def train_step(msg: Message, context: Context) -> Message:
    return _serve(msg, context)


@app.train(action(TRAIN_STREAM))
def train_stream(msg: Message, context: Context) -> Message:
    return _serve(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return _serve(msg, context)
