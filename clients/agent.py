"""The resident device agent: one long-lived process per device, beside its SuperNode.

Flower starts a fresh ClientApp process for every message (flower-facts.md); importing torch and
building the model there cost 8-10 CPU-s per message before any work. The agent imports torch,
transformers and peft once, and keeps the run's model head, tokenizer and tokenised shard
loaded across messages and rounds. The ClientApp, told the agent's socket by the node config
(`agent-socket`), forwards each message to it (`clients.agent_link`); the agent answers with the
device's handlers unchanged (`clients.routes`). Start it before the SuperNode:

    edgesplit-device --socket /run/edgesplit/device.sock
    python -m clients.agent --socket /run/edgesplit/device.sock

It listens on a Unix socket only (mode 0600: its user, and root, may connect), never on a
network port. What it keeps belongs to one run: a request of another run releases it first,
and so does `--idle-release-s` without any request. It refuses a request from an app of another
EdgeSplit version or agent protocol, naming both. It logs to stderr what a stuck device is
diagnosed from: its pid and versions, each request (run, node, message type, the ClientApp's
pid) and how it ended, model loads, and the stream's dial, admission and steps.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from logging import DEBUG, ERROR, INFO, WARNING
from pathlib import Path

from flwr.common.logger import log, update_console_handler

import edgesplit
from clients import agent_link
from edgesplit.memory import rss_mb

#: What the agent logs once it can serve (after importing torch and the device code).
LOADED = "device code loaded"
_PEER_CREDENTIALS = struct.Struct("3i")  # SO_PEERCRED: pid, uid, gid of the connecting process


class Agent(socketserver.ThreadingUnixStreamServer):
    """The agent's socket server: one thread per connection (one message each).

    Parameters
    ----------
    path : str
        The Unix socket to listen on (created with mode 0600; its folder with 0700 if missing).
    idle_release_s : float
        Release the loaded run after this long without a request (0: never).
    """

    daemon_threads = True

    def __init__(self, path: str, idle_release_s: float = 0.0) -> None:
        self.path, self.idle_release_s = path, idle_release_s
        self.run_id: int | None = None  # the run whose model and data are loaded
        self.serve: Callable | None = None  # `clients.routes.serve`, once `load` ran
        self.release: Callable[[], None] | None = None  # `clients.cache.release`
        self.last_request = time.monotonic()
        self._runs = threading.Lock()
        self._in_flight = 0
        _claim(Path(path))
        old_umask = os.umask(0o177)  # the socket file is born 0600: no window for others
        try:
            super().__init__(path, _Request)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)

    def load(self) -> float:
        """Import the device code (torch, transformers, peft); returns the seconds it took.
        Called after the socket listens: a message that comes meanwhile waits for it instead
        of failing to connect."""
        started = time.perf_counter()
        from clients import cache, routes

        self.serve, self.release = routes.serve, cache.release
        return time.perf_counter() - started

    def server_close(self) -> None:
        super().server_close()
        Path(self.path).unlink(missing_ok=True)

    def enter(self, run_id: int) -> None:
        """A request of `run_id` begins: release another run's model and data first."""
        with self._runs:
            self._in_flight += 1
            self.last_request = time.monotonic()
            if self.run_id is not None and self.run_id != run_id:
                log(INFO, "agent: run %d replaces run %d: releasing its models and data",
                    run_id, self.run_id)
                self.release()
            self.run_id = run_id

    def leave(self) -> None:
        with self._runs:
            self._in_flight -= 1
            self.last_request = time.monotonic()

    def release_when_idle(self, stop: threading.Event) -> None:
        """Release the loaded run once no request came for `idle_release_s` (a thread)."""
        while not stop.wait(min(60.0, self.idle_release_s)):
            with self._runs:
                idle = time.monotonic() - self.last_request
                if self.run_id is None or self._in_flight or idle < self.idle_release_s:
                    continue
                log(INFO, "agent: no request for %.0f s: releasing run %d", idle, self.run_id)
                self.release()
                self.run_id = None
                log(INFO, "agent: rss %.0f MB", rss_mb() or 0.0)


class _Request(socketserver.BaseRequestHandler):
    """One connection: one message in, its reply (or the reason it has none) out."""

    server: Agent

    def handle(self) -> None:
        sock: socket.socket = self.request
        peer = _peer_pid(sock)
        try:
            frame = agent_link.recv_frame(sock)
            if frame is None:
                return
            header, blobs = frame
            wrong = agent_link.mismatch(header, agent_link.identity())
            if wrong:
                log(WARNING, "agent: refused a request of ClientApp pid %s: %s", peer, wrong)
                agent_link.send_error(sock, wrong)
                return
            request = agent_link.parse_request(header, blobs)
        except (agent_link.FrameError, ConnectionError) as exc:
            log(WARNING, "agent: bad request from pid %s: %s", peer, exc)
            _try(agent_link.send_error, sock, f"bad request: {exc}")
            return
        context = request.context
        what = f"run {context.run_id} node {context.node_id}: {request.message_type}"
        log(INFO, "agent: %s (ClientApp pid %s)", what, peer)
        started = time.perf_counter()
        self.server.enter(context.run_id)
        try:
            content = self.server.serve(request.message_type, request.content, context.state,
                            context.run_config, context.node_config)
        except Exception as exc:  # the handler's error travels to the server as Flower's
            log(WARNING, "agent: %s failed after %.2f s: %s: %s", what,
                time.perf_counter() - started, type(exc).__name__, exc)
            _try(agent_link.send_error, sock, f"{type(exc).__name__}: {exc}")
            return
        finally:
            self.server.leave()
        _try(agent_link.send_reply, sock, content, context.state)
        log(INFO, "agent: %s done in %.2f s (rss %.0f MB)", what, time.perf_counter() - started,
            rss_mb() or 0.0)


def _try(send, sock: socket.socket, *args: object) -> None:
    """Send a reply; a ClientApp that is gone (killed, timed out) only gets a log line."""
    try:
        send(sock, *args)
    except OSError as exc:
        log(WARNING, "agent: could not reply (the ClientApp left?): %s", exc)


def _peer_pid(sock: socket.socket) -> int | None:
    try:
        pid, _, _ = _PEER_CREDENTIALS.unpack(sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, _PEER_CREDENTIALS.size))
        return pid
    except (OSError, AttributeError):  # no SO_PEERCRED on this platform
        return None


def _claim(path: Path) -> None:
    """Make `path` free for our socket: refuse if an agent answers there, remove a stale one."""
    if path.exists() or path.is_symlink():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()  # left by an agent that died
            else:
                raise RuntimeError(f"an agent already listens on {path}")
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgesplit-device",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", required=True, help="the Unix socket to listen on; the "
                        "SuperNode's node config names it as agent-socket")
    parser.add_argument("--idle-release-s", type=float, default=3600.0,
                        help="release the loaded run after this long without a request "
                        "(0: never; a request of another run releases it at once)")
    args = parser.parse_args(argv)
    update_console_handler(level=DEBUG, timestamps=True, colored=False)  # device progress
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # server_close removes the socket
    try:
        agent = Agent(args.socket, args.idle_release_s)
    except (OSError, RuntimeError) as exc:
        log(ERROR, "edgesplit-device: cannot listen on %s: %s", args.socket, exc)
        return 1
    log(INFO, "edgesplit-device pid %d: EdgeSplit %s, agent protocol %d, listening on %s",
        os.getpid(), edgesplit.__version__, agent_link.PROTOCOL, args.socket)
    seconds = agent.load()
    log(INFO, "edgesplit-device: %s in %.1f s, rss %.0f MB", LOADED, seconds, rss_mb() or 0.0)
    stop = threading.Event()
    if args.idle_release_s > 0:
        threading.Thread(target=agent.release_when_idle, args=(stop,), daemon=True).start()
    try:
        agent.serve_forever()
    finally:
        stop.set()
        agent.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
