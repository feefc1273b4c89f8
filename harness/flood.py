"""A connection flood against a round's stream: bogus connections of every kind a stranger can
open, for the flood test and `experiments.bench_flood`.

Kinds (taken in turn):
- ``tcp``: connect and close (never speaks HTTP/2);
- ``garbage``: connect, send bytes that are not HTTP/2, close;
- ``bad-hello``: a gRPC call whose first frame is not a hello;
- ``wrong-secret``: a hello that claims node 1 with a made-up secret;
- ``silent``: a gRPC call that never sends anything, held until the server cuts it or
  `silent_hold_s` passes (a slow-loris caller).

    python -m harness.flood --address 127.0.0.1:PORT --attempts 1000 [--rate 50] [--tls-ca CA]

Run it as its own process when it should not share the server's interpreter (the benchmark).
With `--address -` it imports everything, prints "ready", and waits for the address on stdin,
so that its start-up does not fall into the round it floods.
"""

from __future__ import annotations

import argparse
import json
import queue
import socket
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from edgesplit import framing, protocol

KINDS = ("tcp", "garbage", "bad-hello", "wrong-secret", "silent")


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _channel(address: str, root_certificates: bytes | None) -> grpc.Channel:
    # A private subchannel per call: each bogus call is its own connection, as a stranger's.
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.enable_http_proxy", 0)]
    if root_certificates is None:
        return grpc.insecure_channel(address, options=options)
    credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
    return grpc.secure_channel(address, credentials, options=options)


def attempt(kind: str, address: str, root_certificates: bytes | None = None,
            silent_hold_s: float = 1.0) -> str:
    """One bogus connection; returns how it ended (a gRPC status name, or "closed"/"error")."""
    if kind in ("tcp", "garbage"):
        try:
            with socket.create_connection(_split(address), timeout=5) as sock:
                if kind == "garbage":
                    sock.sendall(b"GET / HTTP/1.1\r\n\r\n" + bytes(range(256)))
                    sock.recv(1024)
            return "closed"
        except OSError:
            return "error"
    first = {"bad-hello": [b"\x00not a frame"],
             "wrong-secret": [framing.encode({"kind": protocol.HELLO, "node": 1,
                                              "secret": "0" * 64})]}.get(kind)
    outbox: queue.Queue[bytes | None] = queue.Queue()
    for frame in first or []:
        outbox.put(frame)
    with _channel(address, root_certificates) as channel:
        try:
            list(channel.stream_stream(protocol.METHOD_PATH)(
                iter(outbox.get, None), timeout=silent_hold_s if first is None else 10))
            return "OK"
        except grpc.RpcError as exc:
            return exc.code().name
        finally:
            outbox.put(None)


def flood(address: str, attempts: int, *, rate: float = 0.0, concurrency: int = 16,
          kinds: tuple[str, ...] = KINDS, root_certificates: bytes | None = None,
          silent_hold_s: float = 1.0, stop: threading.Event | None = None) -> Counter:
    """Make `attempts` bogus connections (`rate` per second at most; 0 = as fast as
    `concurrency` threads go); returns {"<kind> <outcome>": count}."""
    outcomes: Counter = Counter()
    lock = threading.Lock()
    started = time.monotonic()

    def one(i: int) -> None:
        kind = kinds[i % len(kinds)]
        outcome = attempt(kind, address, root_certificates, silent_hold_s)
        with lock:
            outcomes[f"{kind} {outcome}"] += 1

    with ThreadPoolExecutor(concurrency, thread_name_prefix="flood") as pool:
        for i in range(attempts):
            if stop is not None and stop.is_set():
                break
            if rate:
                time.sleep(max(0.0, started + i / rate - time.monotonic()))
            pool.submit(one, i)
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help='host:port, or "-" to read it')
    parser.add_argument("--attempts", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=0.0, help="attempts per second, 0 = max")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--silent-hold-s", type=float, default=1.0)
    parser.add_argument("--tls-ca", default="", help="CA file when the stream uses TLS")
    args = parser.parse_args()
    roots = Path(args.tls_ca).read_bytes() if args.tls_ca else None
    address = args.address
    if address == "-":
        print("ready", flush=True)
        address = sys.stdin.readline().strip()
    started = time.time()
    outcomes = flood(address, args.attempts, rate=args.rate, concurrency=args.concurrency,
                     root_certificates=roots, silent_hold_s=args.silent_hold_s)
    print(json.dumps({"attempts": sum(outcomes.values()), "started": started,
                      "ended": time.time(), "outcomes": dict(sorted(outcomes.items()))}),
          flush=True)


if __name__ == "__main__":
    main()
