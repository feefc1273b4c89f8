"""A SuperLink whose Fleet API fails a SuperNode's fetch of a message once: the failure the
testbed met, reproduced on purpose.

Seen on the testbed (flwr 1.41): the SuperLink's SQLite state raised `database is locked` while
it served a SuperNode's `POST /v1/fleet/pull-object` and answered HTTP 500; Flower's HTTP retry
does not retry a 500 (only 502, 503, 504 and transport errors), so the SuperNode logged
`Failed to receive message <id>`, dropped the message and never replied, while the SuperLink
counted it as delivered. The ServerApp only learns of it from its own deadline.

`FlakyFleet` is an HTTP proxy a SuperNode is pointed at (`--superlink <proxy address>`) instead of
the SuperLink. It passes every request through, and after a `pull-messages` answer that hands the
SuperNode a message of type `message_type` it answers that message's next `pull-object` with
the HTTP 500 the SuperLink gave (`times` times in all). Plaintext only.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from flwr.proto.fleet_pb2 import PullMessagesResponse

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-authorization", "proxy-authenticate", "host"}
# The body FastAPI gave the SuperNode for the SQLite error (what its log shows).
_LOCKED = b'{"detail":"Internal Server Error: database is locked"}'


class FlakyFleet(ThreadingHTTPServer):
    """Proxy to `upstream` ("host:port") on an OS-chosen port of 127.0.0.1 (`address`)."""

    daemon_threads = True

    def __init__(self, upstream: str, message_type: str = "train.stream",
                 times: int = 1) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream, self.message_type, self.times = upstream, message_type, times
        self.failed: list[str] = []  # ids of the messages whose fetch was failed
        self._armed: list[str] = []  # messages handed out whose next object fetch fails
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        return f"{host}:{port}"

    def __enter__(self) -> FlakyFleet:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()

    def handed_out(self, body: bytes) -> None:
        """A `pull-messages` answer: arm the failure for a message of the chosen type."""
        response = PullMessagesResponse()
        response.ParseFromString(body)
        with self._lock:
            for message in response.messages_list:
                if message.metadata.message_type == self.message_type and \
                        len(self.failed) + len(self._armed) < self.times:
                    self._armed.append(message.metadata.message_id)

    def fail_fetch(self) -> bool:
        """Whether this `pull-object` is the one to fail."""
        with self._lock:
            if not self._armed:
                return False
            self.failed.append(self._armed.pop(0))
            return True


class _Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx speaks it
    server: FlakyFleet

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path.endswith("/pull-object") and self.server.fail_fetch():
            self._answer(500, [("content-type", "application/json")], _LOCKED)
            return
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=60)
        try:
            upstream.request("POST", self.path, body, {
                k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP})
            response = upstream.getresponse()
            status, content = response.status, response.read()
            headers = [(k, v) for k, v in response.getheaders()  # ours replace these three
                       if k.lower() not in _HOP_BY_HOP | {"content-length", "server", "date"}]
        except OSError:  # the SuperLink is down: what a gateway says (Flower retries a 502)
            status, content, headers = 502, b"", []
        finally:
            upstream.close()
        if self.path.endswith("/pull-messages") and status == 200 and not any(
                k.lower() == "content-encoding" for k, _ in headers):
            self.server.handed_out(content)
        self._answer(status, headers, content)

    def _answer(self, status: int, headers: list[tuple[str, str]], content: bytes) -> None:
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("content-length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, *args: object) -> None:  # quiet: the SuperNode's log tells the story
        pass
