"""One control-plane exchange: Flower messages out to some nodes, their replies back, each
reply timed.

Flower's `Grid.send_and_receive` (1.41) sleeps 3 s between pulls of the replies, so every
exchange (profile queries, evaluation) cost up to 3 s more than its slowest reply; here the pulls
back off from `first_poll_s` to `max_poll_s` while nothing arrives. How long each node took to
answer (push to reply) is its measured start-up: a deployed device's answer to a cheap query is
mostly Flower's delivery and the start of its ClientApp process, which the stream transport's
deadline for the device to connect is derived from.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from flwr.app import Message
from flwr.serverapp import Grid


@dataclass
class Replies:
    """The replies of one exchange, by node (a node that did not answer in time is absent),
    and each one's seconds from the push to its arrival."""

    by_node: dict[int, Message] = field(default_factory=dict)
    seconds: dict[int, float] = field(default_factory=dict)


def send_and_collect(grid: Grid, messages: Sequence[Message], timeout_s: float,
                     first_poll_s: float = 0.05, max_poll_s: float = 0.5) -> Replies:
    """Push `messages` (one per node) and pull their replies until all came or `timeout_s`
    passed."""
    replies = Replies()
    if not messages:
        return replies
    nodes = [m.metadata.dst_node_id for m in messages]
    started = time.monotonic()
    pending = dict(zip(grid.push_messages(messages), nodes, strict=True))
    wait = first_poll_s
    while pending:
        got = list(grid.pull_messages(list(pending)))
        now = time.monotonic()
        for reply in got:
            node = pending.pop(reply.metadata.reply_to_message_id, None)
            if node is not None:
                replies.by_node[node], replies.seconds[node] = reply, now - started
        if not pending or now - started >= timeout_s:
            break
        wait = first_poll_s if got else min(max_poll_s, 2 * wait)
        time.sleep(min(wait, max(0.0, timeout_s - (now - started))))
    return replies
