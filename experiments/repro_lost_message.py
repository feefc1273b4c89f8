"""A minimal reproduction of a Flower 1.41 limitation: a message its SuperNode fails to fetch is
lost without a reply, and the ServerApp waits out its whole timeout.

No EdgeSplit code is involved: this writes a ten-line Flower app (a ServerApp that sends each
node one query with `Grid.send_and_receive` and a ClientApp that answers it) to a temporary
folder, starts a SuperLink and one SuperNode on 127.0.0.1 (`harness.runtime`), and puts an HTTP
proxy between them (`harness.flaky_fleet.FlakyFleet`) that answers the SuperNode's first
`POST /v1/fleet/pull-object` of the query with the HTTP 500 the SuperLink gave on the testbed when
its SQLite state raised `database is locked`. Flower's HTTP retry does not retry a 500, so the
SuperNode logs `Failed to receive message <id>` and drops the message; the SuperLink counts it as
delivered, nothing replies, and `send_and_receive` returns no reply after its full timeout.

    python -m experiments.repro_lost_message [--timeout-s 30]

It prints the SuperNode's log lines about the message and what the ServerApp got; exit status 0
when the loss reproduced. EdgeSplit's stream transport copes by sending the round message again
to a device that has not connected by a deadline derived from its measured start-up
(`faults.connect-resends`; tests/fl_app/test_e2e_agent.py).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from harness.flaky_fleet import FlakyFleet
from harness.runtime import FlowerHarness, flwr_bin, free_ports

PYPROJECT = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "lostmessage"
version = "1.0.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "repro"

[tool.flwr.app.components]
serverapp = "repro_server:app"
clientapp = "repro_client:app"

[tool.flwr.app.config]
timeout-s = 30.0
"""
SERVER = """import time
from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    while not list(grid.get_node_ids()):
        time.sleep(0.5)
    timeout = float(context.run_config["timeout-s"])
    messages = [Message(RecordDict(), dst_node_id=n, message_type="query")
                for n in grid.get_node_ids()]
    started = time.monotonic()
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    print(f"REPRO: sent {len(messages)} query, got {len(replies)} replies after "
          f"{time.monotonic() - started:.1f} s (timeout {timeout:g} s)", flush=True)
"""
CLIENT = """from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    return Message(RecordDict(), reply_to=msg)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout-s", type=float, default=30.0,
                        help="the ServerApp's send_and_receive timeout")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="flwr-lost-message-") as tmp:
        app = Path(tmp) / "app"
        app.mkdir()
        for name, text in (("pyproject.toml", PYPROJECT), ("repro_server.py", SERVER),
                           ("repro_client.py", CLIENT)):
            (app / name).write_text(text)
        harness = FlowerHarness(Path(tmp) / "flwr-home")
        try:
            http_port, control_port = free_ports(2)
            superlink = harness.start("superlink", [
                flwr_bin("flower-superlink"), "--insecure", "--isolation", "subprocess",
                "--disable-runtime-dependency-installation",
                "--control-api-address", f"127.0.0.1:{control_port}",
                "--host", "127.0.0.1", "--port", str(http_port)])
            harness.wait_healthy(http_port, superlink)
            harness.write_connection("repro", f"127.0.0.1:{http_port}")
            with FlakyFleet(f"127.0.0.1:{http_port}", message_type="query") as proxy:
                harness.start("supernode", [flwr_bin("flower-supernode"), "--insecure",
                                            "--superlink", proxy.address])
                rc, log = harness.run("flwr-run", [
                    flwr_bin("flwr"), "run", str(app), "repro", "--run-config",
                    f"timeout-s={args.timeout_s}", "--stream"], timeout_s=args.timeout_s + 300)
            node_log = harness.log("supernode")
        finally:
            harness.stop()
    plain = re.sub(r"\x1b\[[0-9;]*m", "", node_log)  # Flower colours its log levels
    lost = [line.strip() for line in plain.splitlines()
            if "Receiving: query" in line or "Failed to receive message" in line]
    outcome = re.search(r"REPRO: .*", log)
    print("SuperNode:", *lost, sep="\n  ")
    print("ServerApp:", outcome.group(0) if outcome else f"(no outcome; exit {rc})\n{log[-3000:]}")
    print("proxy failed the fetch of:", proxy.failed)
    reproduced = bool(proxy.failed and outcome and " got 0 replies " in outcome.group(0)
                      and any(proxy.failed[0] in line for line in lost))
    print("reproduced:", reproduced)
    return 0 if reproduced else 1


if __name__ == "__main__":
    sys.exit(main())
