"""Who may start a handshake on the round's stream, and for how long: the limits under a flood.

From the moment gRPC hands the stream server a call until its hello frame is judged, the call
holds one of the server's threads. Anyone who can reach the port can open calls, so without
limits a flood of connections that never say hello (or say it wrong) would hold every thread
and the selected clients could not get in. Three limits bound what a flood can take:

- pending handshakes: at most `max_pending` calls wait for their hello at once; gRPC itself
  refuses calls beyond the round's clients + `max_pending` (`maximum_concurrent_rpcs`), in C,
  before any thread is involved;
- per address: at most `per_address` of those from one peer host, so one flooding host cannot
  take them all while the clients dial from elsewhere;
- a deadline: a call silent past `deadline_s` is cancelled (`expire`, run by the round's
  calling thread, so no timer thread per call). A TCP or TLS connection that never finishes its
  HTTP/2 handshake is dropped by gRPC after the same time (`grpc.server_handshake_timeout_ms`).

A call over a limit is refused at once with RESOURCE_EXHAUSTED, which devices retry
(`clients.stream_client`): a legitimate client from a busy address gets in once a slot frees.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_PENDING = 64  # handshakes waiting for their hello at once, all addresses together
PER_ADDRESS = 16  # of those, from one peer host (a simulation's clients share 127.0.0.1)


class Busy(Exception):
    """A call over a handshake limit (refused with RESOURCE_EXHAUSTED; devices retry)."""


def peer_host(peer: str) -> str:
    """The host part of a gRPC peer string: "ipv4:10.0.0.7:5123" -> "ipv4:10.0.0.7",
    "ipv6:[::1]:5123" -> "ipv6:[::1]"."""
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() else peer


@dataclass(eq=False)
class Ticket:
    """One call waiting for its hello."""

    host: str
    cancel: Callable[[], object]
    deadline: float
    expired: bool = False


@dataclass
class Handshakes:
    """The calls of a stream server still waiting for their hello frame.

    Parameters
    ----------
    deadline_s : float
        How long a call may take to send its hello.
    max_pending, per_address : int (default: MAX_PENDING, PER_ADDRESS)
    """

    deadline_s: float
    max_pending: int = MAX_PENDING
    per_address: int = PER_ADDRESS
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _pending: set[Ticket] = field(default_factory=set, repr=False)
    _per_host: Counter = field(default_factory=Counter, repr=False)

    def enter(self, peer: str, cancel: Callable[[], object]) -> Ticket:
        """Admit a new call to the handshake (Busy if over a limit); `cancel` ends the call."""
        host = peer_host(peer)
        with self._lock:
            if len(self._pending) >= self.max_pending:
                raise Busy(f"{self.max_pending} handshakes in progress; retry")
            if self._per_host[host] >= self.per_address:
                raise Busy(f"{self.per_address} handshakes in progress from {host}; retry")
            ticket = Ticket(host, cancel, time.monotonic() + self.deadline_s)
            self._pending.add(ticket)
            self._per_host[host] += 1
        return ticket

    def leave(self, ticket: Ticket) -> None:
        """The call's hello was judged (or the call ended)."""
        with self._lock:
            if ticket in self._pending:
                self._pending.discard(ticket)
                self._per_host[ticket.host] -= 1
                if not self._per_host[ticket.host]:
                    del self._per_host[ticket.host]

    def expire(self, now: float) -> int:
        """Cancel the calls past their deadline; returns how many."""
        with self._lock:
            late = [t for t in self._pending if now > t.deadline and not t.expired]
            for ticket in late:
                ticket.expired = True
        for ticket in late:  # outside the lock: cancelling runs gRPC callbacks
            ticket.cancel()
        return len(late)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)
