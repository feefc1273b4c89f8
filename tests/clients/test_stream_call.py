"""The device's stream call against a scripted gRPC server: it redials a busy server, gives up on
a refusal at once, and gives the server one turn to answer each frame."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from clients.stream_client import StreamCall, StreamLink
from edgesplit import protocol


class Server:
    """Answers each call with `script[call index]`: a status code to abort with, "echo" (send
    every frame back) or "mute" (read, never answer)."""

    def __init__(self, script):
        self.script, self.calls = script, 0
        self.lock = threading.Lock()
        handler = grpc.method_handlers_generic_handler(protocol.SERVICE, {
            protocol.METHOD: grpc.stream_stream_rpc_method_handler(self.serve)})
        self.server = grpc.server(ThreadPoolExecutor(4), handlers=[handler])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def serve(self, requests, context):
        with self.lock:
            action = self.script[min(self.calls, len(self.script) - 1)]
            self.calls += 1
        if isinstance(action, grpc.StatusCode):
            context.abort(action, "scripted")
        for frame in requests:
            if action == "mute":
                time.sleep(5)
                return
            yield frame

    def link(self):
        return StreamLink(f"127.0.0.1:{self.port}", 1, "secret", "float32", b"")


@pytest.fixture
def server(request):
    s = Server(request.param)
    yield s
    s.server.stop(grace=None)


@pytest.mark.parametrize("server", [[grpc.StatusCode.RESOURCE_EXHAUSTED] * 2 + ["echo"]],
                         indirect=True)
def test_a_busy_server_is_dialled_again_until_it_takes_the_call(server):
    call = StreamCall(server.link(), 2**20, turn_s=5.0, patience_s=5.0)
    try:
        assert call.exchange(b"frame") is not None  # the hello, echoed
        assert server.calls == 3
    finally:
        call.close()


@pytest.mark.parametrize("server", [[grpc.StatusCode.PERMISSION_DENIED, "echo"]], indirect=True)
def test_a_refusal_is_not_retried(server):
    call = StreamCall(server.link(), 2**20, turn_s=5.0, patience_s=5.0)
    with pytest.raises(grpc.RpcError) as info:
        call.exchange(b"frame")
    call.close()
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED and server.calls == 1


@pytest.mark.parametrize("server", [[grpc.StatusCode.RESOURCE_EXHAUSTED]], indirect=True)
def test_a_server_busy_for_longer_than_the_patience_is_given_up(server):
    call = StreamCall(server.link(), 2**20, turn_s=5.0, patience_s=0.3)
    with pytest.raises(grpc.RpcError) as info:
        call.exchange(b"frame")
    call.close()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and 2 <= server.calls <= 6


@pytest.mark.parametrize("server", [["mute"]], indirect=True)
def test_a_silent_server_gets_one_turn(server):
    call = StreamCall(server.link(), 2**20, turn_s=0.3, patience_s=5.0)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError):
        call.exchange(b"frame")
    call.close()
    assert call.timed_out and time.monotonic() - started < 3
