"""The device agent's wire: how the thin ClientApp hands a Flower message to the device's
resident agent (`clients.agent`) over a Unix socket, and takes the reply back.

One connection per message; each side sends one frame:

    b"ESAGENT\\n" | header length (4 bytes, big-endian) | header (JSON) | blobs

The header names the sender's EdgeSplit version, the agent protocol and the byte length of each
blob after it. The blobs are Flower's own record serialisation (`flwr.common.serde` protobuf):
the request carries the message's Context (run id, node id, node config, run config and
`context.state`) and its content; the reply the reply content and the updated state. A peer's
bytes are only ever parsed as JSON and protobuf (no pickle), within size limits.

The agent's code does not travel with `flwr run`: the agent refuses a request whose EdgeSplit
version or protocol differs from its own, and its error reply names both.

Nothing here imports torch, so a ClientApp process that forwards stays light.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from flwr.app import Context, RecordDict
from flwr.common.serde import (
    context_from_proto,
    context_to_proto,
    recorddict_from_proto,
    recorddict_to_proto,
)
from flwr.proto.message_pb2 import Context as ProtoContext
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict

import edgesplit

#: The node-config key naming the agent's socket (`flower-supernode --node-config
#: "agent-socket='/run/edgesplit/device.sock' ..."`); without it the ClientApp serves itself.
AGENT_SOCKET = "agent-socket"
#: The wire protocol; bump it whenever a frame's layout or meaning changes.
PROTOCOL = 1
MAGIC = b"ESAGENT\n"
_LENGTH = struct.Struct(">I")
MAX_HEADER_BYTES = 64 * 1024
MAX_BLOB_BYTES = 2**31 - 1  # protobuf's own limit on one message


class AgentError(RuntimeError):
    """The agent cannot be reached, refused the message, or broke off the exchange."""


class FrameError(ValueError):
    """A frame that is not the agent protocol's (wrong magic, bad header, sizes over limits)."""


def identity() -> dict[str, object]:
    """What each side says of itself in every header."""
    return {"edgesplit": edgesplit.__version__, "protocol": PROTOCOL}


def mismatch(app: dict, agent: dict) -> str | None:
    """Why the app's code and the agent's (their headers' `identity`) cannot work together
    (None: they can)."""
    ours, theirs = ((h.get("edgesplit"), h.get("protocol")) for h in (app, agent))
    if ours == theirs:
        return None
    return (f"version mismatch: the app runs EdgeSplit {ours[0]} (agent protocol {ours[1]}), "
            f"the device agent EdgeSplit {theirs[0]} (agent protocol {theirs[1]}); install the "
            "app's version on the device and restart its agent")


# ---- frames ------------------------------------------------------------------------------------
def send_frame(sock: socket.socket, header: dict, blobs: Sequence[bytes] = ()) -> None:
    head = json.dumps({**header, "blobs": [len(b) for b in blobs]}).encode()
    sock.sendall(MAGIC + _LENGTH.pack(len(head)) + head)
    for blob in filter(None, blobs):  # an empty send to a peer that has read all would fail
        sock.sendall(blob)


def recv_frame(sock: socket.socket) -> tuple[dict, list[bytes]] | None:
    """The peer's frame, or None if it closed the connection before sending anything."""
    start = _recv_exactly(sock, len(MAGIC) + _LENGTH.size, allow_eof=True)
    if start is None:
        return None
    if start[:len(MAGIC)] != MAGIC:
        raise FrameError(f"not an EdgeSplit agent frame (starts {start[:len(MAGIC)]!r})")
    (size,) = _LENGTH.unpack(start[len(MAGIC):])
    if size > MAX_HEADER_BYTES:
        raise FrameError(f"header of {size} bytes (at most {MAX_HEADER_BYTES})")
    try:
        header = json.loads(_recv_exactly(sock, size))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FrameError(f"unreadable header: {exc}") from None
    sizes = header.get("blobs") if isinstance(header, dict) else None
    if not isinstance(sizes, list) or not all(
            type(n) is int and 0 <= n <= MAX_BLOB_BYTES for n in sizes):
        raise FrameError(f"header without valid blob sizes: {str(header)[:200]}")
    return header, [_recv_exactly(sock, n) for n in sizes]


def _recv_exactly(sock: socket.socket, size: int, allow_eof: bool = False) -> bytes | None:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            if allow_eof and got == 0:
                return None
            raise ConnectionError(f"the peer closed the connection {got} bytes into a "
                                  f"{size}-byte read")
        got += n
    return bytes(buffer)


def _records(blob: bytes) -> RecordDict:
    proto = ProtoRecordDict()
    proto.ParseFromString(blob)
    return recorddict_from_proto(proto)


# ---- requests (ClientApp -> agent) -------------------------------------------------------------
@dataclass
class Request:
    """One Flower message as the agent receives it."""

    message_type: str
    context: Context
    content: RecordDict


def send_request(sock: socket.socket, message_type: str, content: RecordDict,
                 context: Context) -> None:
    send_frame(sock, {**identity(), "message-type": message_type},
               [context_to_proto(context).SerializeToString(),
                recorddict_to_proto(content).SerializeToString()])


def parse_request(header: dict, blobs: list[bytes]) -> Request:
    """A request frame's message (FrameError when it is malformed)."""
    message_type = header.get("message-type")
    if not isinstance(message_type, str) or len(blobs) != 2:
        raise FrameError("a request carries a message type, the context and the content")
    try:
        proto = ProtoContext()
        proto.ParseFromString(blobs[0])
        return Request(message_type, context_from_proto(proto), _records(blobs[1]))
    except Exception as exc:  # protobuf's DecodeError, or records Flower refuses
        raise FrameError(f"unreadable request: {type(exc).__name__}: {exc}") from None


# ---- replies (agent -> ClientApp) --------------------------------------------------------------
def send_reply(sock: socket.socket, content: RecordDict, state: RecordDict) -> None:
    send_frame(sock, {**identity(), "ok": True}, [recorddict_to_proto(content).SerializeToString(),
                                                  recorddict_to_proto(state).SerializeToString()])


def send_error(sock: socket.socket, reason: str) -> None:
    send_frame(sock, {**identity(), "ok": False, "error": reason})


def forward(path: str, message_type: str, content: RecordDict,
            context: Context) -> tuple[RecordDict, RecordDict]:
    """Have the agent at `path` serve one message; returns (reply content, updated state).

    Raises AgentError at once when no agent listens there, when it refuses the message (its
    reason, e.g. a version mismatch naming both versions, or the handler's error), or when it
    closes the connection before replying (it died mid-message).
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except OSError as exc:
            raise AgentError(f"no device agent at {path}: {exc.strerror or exc} (start one with "
                             f"`edgesplit-device --socket {path}`)") from None
        try:
            send_request(sock, message_type, content, context)
            frame = recv_frame(sock)
        except (OSError, FrameError) as exc:
            raise AgentError(f"device agent at {path} broke off {message_type}: {exc}") from None
    if frame is None:
        raise AgentError(f"device agent at {path} closed the connection before replying to "
                         f"{message_type} (did it die?)")
    header, blobs = frame
    if not header.get("ok"):
        raise AgentError(f"device agent at {path}: {header.get('error', '(no reason)')}")
    wrong = mismatch(identity(), header) or (len(blobs) != 2 and "no content and state")
    if wrong:
        raise AgentError(f"device agent at {path} sent a reply this app cannot read: {wrong}")
    return _records(blobs[0]), _records(blobs[1])
