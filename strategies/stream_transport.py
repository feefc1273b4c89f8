"""The streaming data plane: per-step activations and gradients over a gRPC stream.

Flower stays the control plane. For each round the transport opens a gRPC server (generic
handlers, raw-bytes frames from `edgesplit.framing`, no protoc step), and sends every selected
client a `train.stream` Flower message with its task, head adapter, the stream's address and a
fresh secret for this client and round. The device dials in, authenticates with its first frame
(node id + secret), streams one activation frame per step and receives the gradient, then returns
its head adapter in the Flower reply, exactly like the last reply of the Flower-message transport.

A device that has not opened its stream by a deadline derived from its measured start-up
(`TrainJob.expected_start_s`: its answer time to the profile query, then its start offset in its
last round) gets the round message again, up to `connect_resends` times, then is dropped with
the reason: a message Flower lost (a SuperNode that failed to fetch it drops it without a
reply, docs/deployment.md) costs that deadline, not the reply timeout.

Threads: every stream is served by its own gRPC worker thread (the pool is sized to the round's
clients plus the handshakes `stream_admission` lets wait at once), so clients progress
independently and never in lockstep (Ray simulation runs only as many ClientApps at once as it
has actors). The server's model is shared: the streams' requests go through a `TailQueue`, whose
one worker thread runs every tail step. Where each client stands is a `StreamSession` of
`RoundSessions`. The calling thread pulls the Flower replies, runs the watchdog that drops
stalled clients (so a round always ends) and cancels handshakes past their deadline.

Pacing (`stream.pace-links`, a task's `pace_bps`): each answer leaves no faster than the client's
allocated rate (`edgesplit.pacing`), as the device paces its frames, so the link carries what
the allocator gave. Per client the outcome records the server's time on each frame (arrival to
answer: queue and tail) and its pacing, and the device reports its wait on the stream, so
transfer time is measured apart from the server's.
"""

from __future__ import annotations

import math
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from logging import WARNING
from pathlib import Path

import grpc
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from edgesplit import framing
from edgesplit.pacing import Pacer
from edgesplit.protocol import (
    CONFIG,
    EXCHANGE_S,
    HELLO,
    LORA,
    METHOD,
    METRICS,
    SERVICE,
    STREAM,
    TRAIN_STREAM,
    step_exchanges,
)
from edgesplit.records import PayloadError, Spec, check_tensors, client_error, to_record
from strategies.stream_admission import Busy, Handshakes, Ticket
from strategies.stream_sessions import Refusal, Refused, RoundSessions, StreamSession
from strategies.tail_queue import TailQueue
from strategies.transport import (
    TailStep,
    TrainJob,
    TrainOutcome,
    read_final_reply,
    read_privacy,
)

_SPARE_WORKERS = 2  # threads beyond one per client and per pending handshake
_HELLO_TIMEOUT_S = 10.0  # a dialler silent this long is cut: it holds a thread meanwhile
_REPLY_GRACE_S = 10.0  # how long a dropped client's Flower reply may still come to say why
# A client's connect deadline: this many times its measured start-up, plus a fixed slack (a
# loaded machine or a model load on a device's first round take longer than a profile query).
_CONNECT_FACTOR, _CONNECT_SLACK_S = 3.0, 10.0

__all__ = ["Refusal", "StreamTransport", "TlsFiles"]


def _next_frame(requests: Iterator[bytes], step: int, steps: int) -> bytes | None:
    """The client's next frame, None at its half-close. A cancelled or dropped call raises a
    bare grpc.RpcError (its text is empty); say what happened instead."""
    try:
        return next(requests, None)
    except grpc.RpcError:
        raise ConnectionError(f"stream cancelled or lost after {step} of {steps} steps") from None


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of the stream's TLS: the server's certificate and key, and the CA devices
    verify it with (empty = the certificate itself, i.e. a pinned self-signed certificate)."""

    certfile: str
    keyfile: str
    ca_certfile: str = ""

    def server_credentials(self) -> grpc.ServerCredentials:
        key, cert = Path(self.keyfile).read_bytes(), Path(self.certfile).read_bytes()
        return grpc.ssl_server_credentials([(key, cert)])

    def root_certificates(self) -> bytes:
        return Path(self.ca_certfile or self.certfile).read_bytes()


class StreamTransport:
    """Run each round's split steps over a gRPC bidirectional stream per client.

    Parameters
    ----------
    grid : Grid
        Flower's control plane: carries the round message and the final adapter.
    activation_spec : Spec
        What activations must look like (the batch axis is fixed to the task's batch size).
    step_timeout_s : float
        A connected client silent this long (no next frame, or no final reply after the last
        gradient) is dropped.
    connect_timeout_s : float, optional
        Clients that have not connected yet are dropped when no client made progress for this
        long: starting a device takes control-plane time (a cold ClientApp process in
        deployment, a free actor in simulation). Default: `step_timeout_s`.
    connect_resends : int (default: 0)
        How many times a client late to connect (past 3 x its measured start-up + 10 s) gets
        its round message again before it is dropped; 0: only `connect_timeout_s` applies
        (simulation: a message cannot be lost there, and may wait for a free actor).
    host : str (default: "127.0.0.1")
        Address the server binds.
    port : int (default: 0)
        0 lets the OS choose (a new port each round).
    public_host : str (default: "")
        Host devices dial (must match the TLS certificate); empty = `host`.
    wire_dtype : str (default: "float32")
        Floating dtype of activations and gradients on the wire (`framing.WIRE_DTYPES`; int8
        is quantised per token and arrives as float32).
    tls : TlsFiles, optional
        Without it the stream is plaintext (loopback and tests only).
    poll_s, max_poll_s : float (default: 0.005, 0.5)
        First and longest wait between pulls of the Flower replies (and deadline checks). Each
        pull is a request the SuperLink serves from its database; a stream's end wakes the
        loop (its reply is due), so a long idle wait costs no latency.
    """

    def __init__(self, grid: Grid, activation_spec: Spec, step_timeout_s: float, *,
                 connect_timeout_s: float | None = None, connect_resends: int = 0,
                 host: str = "127.0.0.1",
                 port: int = 0, public_host: str = "",
                 wire_dtype: str = "float32", tls: TlsFiles | None = None,
                 poll_s: float = 0.005, max_poll_s: float = 0.5) -> None:
        self.grid, self.spec, self.step_timeout_s = grid, activation_spec, step_timeout_s
        self.connect_timeout_s = connect_timeout_s or step_timeout_s
        self.connect_resends = connect_resends
        self.host, self.port, self.public_host = host, port, public_host or host
        self.wire_name, self.wire_dtype = wire_dtype, framing.WIRE_DTYPES[wire_dtype]
        self.tls, self.poll_s, self.max_poll_s = tls, poll_s, max_poll_s
        self._root_certificates = tls.root_certificates() if tls else b""
        if tls is None and host not in ("127.0.0.1", "localhost", "::1"):
            log(WARNING, "stream transport on %s without TLS: activations travel in clear", host)
        self._hello_timeout_s = min(step_timeout_s, _HELLO_TIMEOUT_S)
        self._handshakes = Handshakes(self._hello_timeout_s)
        self._rounds = RoundSessions()
        self._tails = TailQueue()

    def close(self) -> None:
        """Stop the thread that runs the tails (at the end of the run)."""
        self._tails.shutdown()

    @property
    def refusals(self) -> list[Refusal]:
        """The latest connections refused at their hello (up to `KEPT_REFUSALS`, all rounds)."""
        return list(self._rounds.refusals)

    @property
    def refused(self) -> Counter:
        """The connections refused in the latest round, by reason (handshake limits too)."""
        return Counter(self._rounds.refused)

    # ---- the round (calling thread) ----------------------------------------------------------
    def train_round(self, jobs: list[TrainJob], tail_step: TailStep) -> dict[int, TrainOutcome]:
        if not jobs:
            return {}
        sessions = [self._session(job) for job in jobs]
        self._rounds.open(jobs[0].task.server_round, sessions)
        self._tails.open(tail_step)
        server, executor, address = self._start_server(len(jobs),
                                                       max(s.max_bytes for s in sessions))
        try:
            pending = self._push(sessions, address)
            self._rounds.last_event = time.monotonic()
            self._wait(pending, address)
        finally:
            self._tails.close()
            server.stop(grace=None)
            executor.shutdown(wait=False)
            self._rounds.close()
        return {s.job.node_id: s.outcome for s in sessions}

    def _session(self, job: TrainJob) -> StreamSession:
        spec = framing.with_batch(self.spec, job.task.batch_size)
        exchanges = step_exchanges(spec, job.task.u_shaped)
        limit = max(framing.max_frame_bytes(s, self.wire_dtype) for _, s, _ in exchanges)
        pacer = Pacer(job.task.pace_bps, job.downlink_bps) if job.task.pace_bps > 0 else None
        return StreamSession(job, [], TrainOutcome(job.node_id), exchanges, limit, pacer=pacer)

    def _start_server(self, clients: int, limit: int) -> tuple[grpc.Server, ThreadPoolExecutor,
                                                                 str]:
        workers = clients + self._handshakes.max_pending + _SPARE_WORKERS
        executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stream")
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            METHOD: grpc.stream_stream_rpc_method_handler(self._serve)})
        # Calls beyond `workers` are refused by gRPC (RESOURCE_EXHAUSTED) without a thread.
        server = grpc.server(executor, handlers=[handler], maximum_concurrent_rpcs=workers,
                             options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", limit),
                                      ("grpc.server_handshake_timeout_ms",
                                       int(1000 * _HELLO_TIMEOUT_S)),
                                      ("grpc.so_reuseport", 0)])  # a taken port must fail
        bind = f"{self.host}:{self.port}"
        port = (server.add_secure_port(bind, self.tls.server_credentials()) if self.tls
                else server.add_insecure_port(bind))
        if not port:
            raise RuntimeError(f"stream transport: cannot bind {bind}")
        server.start()
        host = f"[{self.public_host}]" if ":" in self.public_host else self.public_host
        return server, executor, f"{host}:{port}"

    def _push(self, sessions: list[StreamSession], address: str
              ) -> dict[str, tuple[StreamSession, str]]:
        """Send each session's client a copy of its round message with a fresh secret; returns
        {message id: (session, that copy's secret)}."""
        # The reply of a message may not outlive the message's TTL, and in simulation a message
        # can wait for a free actor while others run whole rounds: allow every client's worst case.
        task = sessions[0].job.task
        ttl = len(self._rounds.by_node) * ((task.local_steps + 2) * self.step_timeout_s
                                           + self.connect_timeout_s)
        messages, copies = [], []
        for session in sessions:
            job, secret = session.job, secrets.token_hex(32)
            link = ConfigRecord({"address": address, "node-id": str(job.node_id),
                                 "secret": secret, "dtype": self.wire_name,
                                 "root-certificates": self._root_certificates})
            lora = to_record(job.head_lora)
            session.outcome.bytes_down += lora.count_bytes()
            content = RecordDict({CONFIG: job.task.to_record(), LORA: lora, STREAM: link})
            messages.append(Message(content, dst_node_id=job.node_id,
                                    message_type=TRAIN_STREAM, ttl=ttl))
            copies.append((session, secret))
        # Secrets first: a device may dial before push_messages returns, and its hello must
        # find its secret (it was refused as a wrong one).
        now = time.monotonic()
        with self._rounds.cond:
            for session, secret in copies:
                session.secrets.append(secret)
                session.sent_at = now
                if len(session.secrets) == 1:
                    session.started_at = now
                session.connect_by = now + self._connect_deadline_s(session.job)
        ids = self.grid.push_messages(messages)
        return dict(zip(ids, copies, strict=True))

    def _connect_deadline_s(self, job: TrainJob) -> float:
        """How long a copy of the round message may take to bring its client onto the stream
        before the next copy is sent (infinite without resends or a measured start-up)."""
        if not self.connect_resends or job.expected_start_s is None:
            return math.inf
        return _CONNECT_FACTOR * job.expected_start_s + _CONNECT_SLACK_S

    def _wait(self, pending: dict[str, tuple[StreamSession, str]], address: str) -> None:
        """Collect the Flower replies and enforce the deadlines until every client is settled.

        Polls back off while nothing happens (each pull is a request to the SuperLink, and a
        busy poll competes with the streams for the GIL); a stream that finishes its last step
        wakes the loop, as its Flower reply is due.
        """
        rounds, idle = self._rounds, self.poll_s
        while True:
            replies = list(self.grid.pull_messages(list(pending))) if pending else []
            self._handshakes.expire(time.monotonic())
            with rounds.cond:
                for reply in replies:
                    self._finish(*pending.pop(reply.metadata.reply_to_message_id), reply)
                now = time.monotonic()
                again = rounds.watchdog(now, self.step_timeout_s, self.connect_timeout_s,
                                        self.connect_resends)
                # A device that raised cuts its stream before its error reply comes: give the
                # reply of a client dropped moments ago a short grace to say why.
                grace = min(self.step_timeout_s, _REPLY_GRACE_S)
                if not again and all(s.settled for s in rounds.by_node.values()) and \
                        all(now - s.failed_at > grace for s, _ in pending.values()):
                    return
                if not again and not replies and not rounds.cond.wait(idle):
                    idle = min(self.max_poll_s, 2 * idle)
                    continue
                idle = self.poll_s
            for session in again:
                log(WARNING, "stream round %d: client %s has not connected %.0f s after its "
                    "round message (start-up measured %.1f s): sending it again",
                    session.job.task.server_round, session.job.node_id,
                    time.monotonic() - session.sent_at, session.job.expected_start_s)
                session.outcome.resent += 1
            if again:
                pending.update(self._push(again, address))

    def _finish(self, session: StreamSession, secret: str, reply: Message) -> None:
        """A client's Flower reply: its trained head adapter, valid only after every step, and
        only from the copy of the round message that streamed."""
        self._rounds.last_event = time.monotonic()
        job, outcome = session.job, session.outcome
        if session.admitted is not None and secret != session.admitted:
            return  # another copy trained (this one found the round taken, or was late)
        if session.state == "failed":
            if reply.has_error():  # why its stream broke, as the client tells it
                outcome.failure += f"; {client_error(reply)}"
            return
        try:
            if reply.has_error():
                raise PayloadError(client_error(reply))
            if outcome.steps_done < job.task.local_steps:
                raise PayloadError(f"replied after {outcome.steps_done} of "
                                   f"{job.task.local_steps} steps")
            content = reply.content
            outcome.bytes_up += sum(r.count_bytes() for r in content.array_records.values())
            head_lora, num_examples, losses, compute_s = read_final_reply(content, job)
            privacy = read_privacy(content[METRICS])
            exchange_s = content[METRICS].get(EXCHANGE_S)
            if exchange_s is not None and not (isinstance(exchange_s, float)
                                               and math.isfinite(exchange_s) and exchange_s >= 0):
                raise PayloadError(f"{EXCHANGE_S} {exchange_s!r} is not a finite float >= 0")
        except PayloadError as exc:
            session.fail(f"reply: {exc}")
            return
        now = time.monotonic()
        outcome.transport_s += now - session.sent_at
        outcome.round_s = now - session.started_at
        outcome.head_lora, outcome.num_examples = head_lora, num_examples
        outcome.device_losses, outcome.device_compute_s = losses, compute_s
        outcome.device_exchange_s = exchange_s
        outcome.privacy = privacy
        session.state = "done"

    # ---- one stream (a gRPC worker thread) ---------------------------------------------------
    def _serve(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        """Authenticate, then answer each activation frame with its gradient."""
        peer = context.peer()  # read now: a cancelled call no longer knows it
        try:
            ticket = self._handshakes.enter(peer, context.cancel)
        except Busy as exc:
            self._rounds.busy(peer, str(exc))
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        try:
            session = self._admit(requests, context, peer, ticket)
        except Refused as exc:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        finally:
            self._handshakes.leave(ticket)
        try:
            yield from self._steps(session, requests)
        except Exception as exc:  # a client fault, or a tail failure on its data
            with self._rounds.cond:
                session.fail(f"step {session.outcome.steps_done}: {type(exc).__name__}: {exc}")
                self._rounds.cond.notify_all()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    def _stream_ended(self, session: StreamSession) -> None:
        """gRPC's end-of-call callback: a call that ends before the client's half-close was cut
        (gRPC may drop a suspended handler without resuming it)."""
        with self._rounds.cond:
            if not session.stream_ok:
                session.fail(f"step {session.outcome.steps_done}: stream cancelled or lost")
                self._rounds.cond.notify_all()

    def _admit(self, requests: Iterator[bytes], context: grpc.ServicerContext, peer: str,
               ticket: Ticket) -> StreamSession:
        """The hello frame must name a node selected this round and carry its secret."""
        node: object = None
        try:
            try:
                raw = next(requests, None)
            except grpc.RpcError:  # cancelled: at the handshake deadline, or by the caller
                raw = None
            if raw is None:
                raise Refused(f"no hello frame within {self._hello_timeout_s:g} s"
                              if ticket.expired else "the caller left before its hello")
            try:
                meta = framing.decode(raw, framing.max_frame_bytes({})).meta
            except PayloadError as exc:
                raise Refused(f"bad hello frame: {exc}") from exc
            if meta.get("kind") != HELLO:
                raise Refused("first frame is not a hello with a secret")
            node = meta.get("node")
            session = self._rounds.admit(node, meta.get("secret"), context, self.step_timeout_s)
            if not context.add_callback(lambda: self._stream_ended(session)):
                self._stream_ended(session)  # the call ended already
            return session
        except Refused as exc:
            self._rounds.refuse(node, peer, str(exc))
            raise

    def _steps(self, session: StreamSession, requests: Iterator[bytes]) -> Iterator[bytes]:
        """Answer each of the step's exchanges (one, or two in a U-shaped split) in order."""
        job, outcome = session.job, session.outcome
        steps = job.task.local_steps
        outcome.start_s = time.monotonic() - session.started_at
        for step in range(steps):
            for index, (request, spec, reply) in enumerate(session.exchanges):
                last = index + 1 == len(session.exchanges)
                raw = _next_frame(requests, step, steps)
                arrived = time.monotonic()
                if raw is None:
                    raise PayloadError(f"stream closed after {step} of {steps} steps")
                with self._rounds.cond:
                    outcome.transport_s += arrived - session.sent_at
                    outcome.bytes_up += len(raw)
                    session.deadline = math.inf  # our own tail step is not the client's silence
                frame = framing.decode(raw, session.max_bytes, self.wire_dtype)
                if frame.meta.get("kind") != request or frame.meta.get("step") != step:
                    raise PayloadError(f"expected {request} of step {step}, got {frame.meta}")
                tensors = check_tensors(frame.tensors, spec,
                                        framing.decoded_dtype(self.wire_dtype))
                answer = self._tails.answer(session, tensors)
                out = framing.encode({"kind": reply, "step": step}, {"hidden": answer},
                                     self.wire_dtype)
                answered = time.monotonic()
                paced = session.pacer.wait(len(out)) if session.pacer else 0.0
                with self._rounds.cond:
                    outcome.server_s += answered - arrived
                    outcome.pacing_s += paced
                    outcome.bytes_down += len(out)
                    outcome.steps_done = step + last
                    # The client's turn starts now: it has the timeout to send the next frame
                    # (or, after the last step, to reply through Flower).
                    session.sent_at = self._rounds.last_event = time.monotonic()
                    session.deadline = session.sent_at + self.step_timeout_s
                    if last and step + 1 == steps and session.state == "streaming":
                        session.state = "streamed"
                        self._rounds.cond.notify_all()
                yield out
        if _next_frame(requests, steps, steps) is not None:
            raise PayloadError(f"a frame after the last of {steps} steps")
        with self._rounds.cond:
            session.stream_ok = True
