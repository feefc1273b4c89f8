"""The proxy that fails a SuperNode's fetch of a message once, against a stand-in SuperLink."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from flwr.proto.fleet_pb2 import PullMessagesResponse

from harness.flaky_fleet import FlakyFleet


def pull_messages_answer(*message_types: str) -> bytes:
    response = PullMessagesResponse()
    for index, kind in enumerate(message_types):
        message = response.messages_list.add()
        message.metadata.message_type, message.metadata.message_id = kind, f"id-{index}"
    return response.SerializeToString()


class StandIn(BaseHTTPRequestHandler):
    """Answers pull-messages with a query and a train.stream message, anything else with
    the path it was asked (so the test sees what got through)."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = (pull_messages_answer("query", "train.stream")
                if self.path.endswith("/pull-messages") else self.path.encode())
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def post(address: str, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(address, timeout=10)
    try:
        connection.request("POST", path, b"request")
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_only_the_first_fetch_after_a_train_message_is_failed_and_the_rest_passes():
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    try:
        with FlakyFleet(f"127.0.0.1:{upstream.server_address[1]}") as proxy:
            # Nothing handed out yet: object fetches pass.
            assert post(proxy.address, "/v1/fleet/pull-object") == (200, b"/v1/fleet/pull-object")
            status, body = post(proxy.address, "/v1/fleet/pull-messages")
            assert status == 200 and body == pull_messages_answer("query", "train.stream")
            status, body = post(proxy.address, "/v1/fleet/pull-object")
            assert status == 500 and b"database is locked" in body
            assert proxy.failed == ["id-1"]  # the train message, not the query
            # Once only, even after the next message of the type.
            post(proxy.address, "/v1/fleet/pull-messages")
            assert post(proxy.address, "/v1/fleet/pull-object") == (200, b"/v1/fleet/pull-object")
            assert proxy.failed == ["id-1"]
    finally:
        upstream.shutdown()
        upstream.server_close()
    # The SuperLink gone: what a gateway answers (Flower retries a 502).
    with FlakyFleet(f"127.0.0.1:{upstream.server_address[1]}") as proxy:
        assert post(proxy.address, "/v1/fleet/pull-messages")[0] == 502
