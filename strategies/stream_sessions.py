"""Where each selected client stands in a round on the stream: admission and its state machine.

    waiting --hello with the node's secret--> streaming --last answer sent--> streamed
    streamed --Flower reply with a valid adapter--> done;   any state --fault--> failed

A client still waiting at its connect deadline gets its round message again (a copy with a
secret of its own) or, once it had them all, is failed; the first copy whose hello comes in owns
the session, and the replies of the others are ignored.

The calling thread (Flower replies, deadlines) and the gRPC threads (one per stream) move
sessions between states under one condition variable, `RoundSessions.cond`.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from logging import WARNING

import grpc
from flwr.common.logger import log

from edgesplit.pacing import Pacer
from edgesplit.records import Spec
from strategies.transport import TrainJob, TrainOutcome

KEPT_REFUSALS = 1000  # refusals remembered (all rounds): a flood must not fill the memory
LOGGED_REFUSALS = 10  # refusals logged one by one per round; the rest in the round's summary


@dataclass
class Refusal:
    """A connection the stream refused (also logged)."""

    server_round: int
    node_id: object  # as claimed by the peer: may be anything
    peer: str
    reason: str


class Refused(Exception):
    """A connection that may not take part in this round (its reason is logged)."""


@dataclass
class StreamSession:
    """One selected client's progress through the round (guarded by `RoundSessions.cond`)."""

    job: TrainJob
    secrets: list[str]  # one per copy of its round message sent
    outcome: TrainOutcome
    exchanges: list[tuple[str, Spec, str]]  # of one step (protocol.step_exchanges), batch fixed
    max_bytes: int  # its largest legitimate frame
    state: str = "waiting"  # waiting -> streaming -> streamed -> done | failed
    deadline: float = math.inf  # streaming/streamed: when silence becomes a stall
    context: grpc.ServicerContext | None = None
    stream_ok: bool = False  # the client half-closed after the last step
    sent_at: float = field(default_factory=time.monotonic)  # last thing sent to the client
    started_at: float = field(default_factory=time.monotonic)  # the round message was pushed
    failed_at: float = -math.inf
    pacer: Pacer | None = None  # `stream.pace-links`: the answers leave at the client's allocated
                                # rate
    connect_by: float = math.inf  # waiting: when its latest round message counts as lost
    admitted: str | None = None  # the secret of the copy whose hello came in

    @property
    def settled(self) -> bool:
        return self.state in ("done", "failed")

    def fail(self, reason: str) -> None:
        if not self.settled:
            self.state, self.outcome.failure = "failed", reason
            self.failed_at = time.monotonic()
            if self.context is not None:
                self.context.cancel()  # wakes the stream's thread if it waits for a frame


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class RoundSessions:
    """The sessions of the round in progress, the secrets of earlier rounds, and refusals."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.by_node: dict[int, StreamSession] = {}
        self.refusals: deque[Refusal] = deque(maxlen=KEPT_REFUSALS)  # the latest
        self.refused: Counter = Counter()  # this round's refusals by reason, busy ones included
        self._logged = 0  # of this round's refusals, those logged one by one
        self.server_round = 0
        self.last_event = time.monotonic()  # the last progress of any client
        self._retired: set[bytes] = set()  # digests of earlier rounds' secrets

    def open(self, server_round: int, sessions: list[StreamSession]) -> None:
        with self.cond:
            self.server_round = server_round
            self.by_node = {s.job.node_id: s for s in sessions}
            self.refused, self._logged = Counter(), 0

    def close(self) -> None:
        """Retire the round's secrets (a later hello with one is refused as stale) and let go
        of the round's sessions (their adapters and outcomes belong to the strategy now)."""
        with self.cond:
            self._retired.update(digest(secret) for s in self.by_node.values()
                                 for secret in s.secrets)
            self.by_node = {}
            refused, logged = self.refused, self._logged
        if sum(refused.values()) > logged:
            log(WARNING, "stream round %d: refused %d connections in all: %s", self.server_round,
                sum(refused.values()), "; ".join(f"{n} x {r}" for r, n in refused.most_common()))

    def admit(self, node: object, offered: object, context: grpc.ServicerContext,
              step_timeout_s: float) -> StreamSession:
        """Move the session of `node` to streaming if `offered` is its secret; else Refused."""
        if not isinstance(offered, str):
            raise Refused("first frame is not a hello with a secret")
        with self.cond:
            session = self.by_node.get(node) if type(node) is int else None
            if session is None:
                raise Refused("node not selected this round")
            if not any(hmac.compare_digest(offered.encode(), secret.encode())
                       for secret in session.secrets):
                stale = digest(offered) in self._retired
                raise Refused("stale secret (an earlier round's)" if stale else "wrong secret")
            if session.state != "waiting":
                raise Refused(f"already {session.state}")
            now = time.monotonic()
            session.state, session.context, session.admitted = "streaming", context, offered
            session.deadline, self.last_event = now + step_timeout_s, now
            return session

    def refuse(self, node: object, peer: str, reason: str) -> None:
        """Record (and log, the first few of a round) a connection refused at its hello."""
        with self.cond:
            self.refusals.append(Refusal(self.server_round, node, peer, reason))
            self.refused[reason] += 1
            shown = self._logged < LOGGED_REFUSALS
            self._logged += shown
        if shown:
            log(WARNING, "stream round %d: refused %s (node %s): %s", self.server_round, peer,
                node, reason)

    def busy(self, peer: str, reason: str) -> None:
        """Count a connection turned away by a handshake limit (only the round's summary
        reports these: a flood would fill the log)."""
        with self.cond:
            self.refused[f"busy: {reason}"] += 1

    def watchdog(self, now: float, step_timeout_s: float, connect_timeout_s: float,
                 resends: int) -> list[StreamSession]:
        """Fail sessions silent past their deadline, those past their connect deadline that
        had `resends` copies of their round message already, and (once nobody progressed for
        `connect_timeout_s`) those that never connected. Returns the sessions whose round
        message is to be sent again. Call under `cond`."""
        idle = now - self.last_event > connect_timeout_s
        again = []
        for session in self.by_node.values():
            if session.state in ("streaming", "streamed") and now > session.deadline:
                what = "activations" if session.state == "streaming" else "the final reply"
                session.fail(f"step {session.outcome.steps_done}: no {what} within "
                             f"{step_timeout_s:g} s")
                self.last_event = now  # a dropped client may free a simulation actor
            elif session.state == "waiting" and now > session.connect_by:
                if len(session.secrets) > resends:
                    session.fail(f"did not connect within {now - session.started_at:.0f} s of "
                                 f"its round message (sent {len(session.secrets)} times)")
                else:
                    again.append(session)
            elif session.state == "waiting" and idle:
                session.fail(f"did not connect; no client progressed for {connect_timeout_s:g} s")
        return again
