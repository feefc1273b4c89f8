"""The resident device agent and its wire: served in a thread of the test process on a Unix
socket, reached through the real forwarder (`clients.agent_link`) and the real ClientApp."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from flwr.app import ConfigRecord, Context, RecordDict

import edgesplit
from clients import agent_link, routes
from clients.agent import Agent
from clients.agent_link import AGENT_SOCKET, AgentError, forward
from edgesplit.protocol import CONFIG, QUERY_PROFILE, STREAM, TRAIN_STREAM, RoundTask
from harness.configs import tiny_run_config
from harness.inprocess import run_in_process

RUN_CONFIG = {"model.name": "tiny-llama", "data.corpus": "synthetic", "data.block-size": 16}


@pytest.fixture
def short_dir():
    """A folder with a short path (Unix socket paths have at most 107 bytes)."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="es-agent-test-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def agent(short_dir):
    """An agent serving on a socket in a not yet existing folder."""
    server = Agent(str(short_dir / "agent" / "device.sock"))
    server.load()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def context(run_id: int = 1, state: RecordDict | None = None, **node) -> Context:
    return Context(run_id=run_id, node_id=7, state=state or RecordDict(),
                   run_config=dict(RUN_CONFIG),
                   node_config={"partition-id": 0, "num-partitions": 2, **node})


def test_the_agent_answers_as_the_handlers_do_and_listens_for_its_user_only(agent):
    # Execute
    content, state = forward(agent.path, QUERY_PROFILE, RecordDict(), context())

    # Assert: the same profile as the in-process path, a private socket in a private folder
    direct = routes.serve(QUERY_PROFILE, RecordDict(), RecordDict(), RUN_CONFIG,
                          context().node_config)
    assert dict(content["profile"]) == dict(direct["profile"])
    assert len(state) == 0
    assert stat.S_IMODE(os.stat(agent.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(Path(agent.path).parent).st_mode) == 0o700


def test_a_request_of_another_version_is_refused_naming_both(agent):
    # Prepare: a request as an app of EdgeSplit 0.0.9 would send it
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(agent.path)
        agent_link.send_frame(sock, {"edgesplit": "0.0.9", "protocol": agent_link.PROTOCOL,
                                     "message-type": QUERY_PROFILE}, [b"", b""])
        # Execute
        header, blobs = agent_link.recv_frame(sock)

    # Assert
    assert header["ok"] is False and blobs == []
    assert f"the app runs EdgeSplit 0.0.9 (agent protocol {agent_link.PROTOCOL})" in \
        header["error"]
    assert f"the device agent EdgeSplit {edgesplit.__version__}" in header["error"]


def test_a_malformed_request_gets_an_error_and_the_agent_serves_on(agent):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(agent.path)
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        header, _ = agent_link.recv_frame(sock)
    assert header["ok"] is False and "not an EdgeSplit agent frame" in header["error"]
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(agent.path)
        head = json.dumps({**agent_link.identity(), "message-type": QUERY_PROFILE,
                           "blobs": [3, 0]}).encode()
        sock.sendall(agent_link.MAGIC + len(head).to_bytes(4, "big") + head + b"\xff\xff\xff")
        header, _ = agent_link.recv_frame(sock)
    assert header["ok"] is False and "unreadable request" in header["error"]
    content, _ = forward(agent.path, QUERY_PROFILE, RecordDict(), context())
    assert "profile" in content


def test_a_handler_error_reaches_the_app_as_the_agents_reason(agent):
    bad = RecordDict({CONFIG: ConfigRecord({"server_round": 1})})
    with pytest.raises(AgentError, match=r"ValueError: round task lacks \["):
        forward(agent.path, TRAIN_STREAM, bad, context())


def test_no_agent_and_an_agent_that_dies_mid_message_fail_at_once(short_dir):
    # No agent listening: the error names the socket and how to start one
    missing = str(short_dir / "none.sock")
    with pytest.raises(AgentError, match=f"no device agent at {missing}: .*edgesplit-device"):
        forward(missing, QUERY_PROFILE, RecordDict(), context())

    # An agent that reads the request and dies (closes without a reply)
    path = str(short_dir / "dying.sock")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen()

        def die() -> None:
            conn, _ = listener.accept()
            agent_link.recv_frame(conn)
            conn.close()
        thread = threading.Thread(target=die)
        thread.start()
        with pytest.raises(AgentError, match="closed the connection before replying"):
            forward(path, QUERY_PROFILE, RecordDict(), context())
        thread.join()


def test_another_run_releases_the_loaded_one(agent):
    released = []
    agent.release = lambda: released.append(agent.run_id)
    forward(agent.path, QUERY_PROFILE, RecordDict(), context(run_id=1))
    forward(agent.path, QUERY_PROFILE, RecordDict(), context(run_id=1))
    assert released == [] and agent.run_id == 1
    forward(agent.path, QUERY_PROFILE, RecordDict(), context(run_id=2))
    assert released == [1] and agent.run_id == 2


def test_a_second_agent_on_a_live_socket_is_refused_and_a_stale_socket_is_taken(agent,
                                                                                 short_dir):
    with pytest.raises(RuntimeError, match="an agent already listens on"):
        Agent(agent.path)
    stale = short_dir / "stale.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(stale))  # bound, never listening: what a killed agent leaves
    second = Agent(str(stale))
    second.server_close()
    assert not stale.exists()


def test_the_forwarding_clientapp_imports_no_torch():
    code = ("import sys, fl_app.client_app; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("transport", ["flower", "stream"])
def test_training_through_an_agent_gives_the_in_process_adapter_bit_for_bit(agent, tmp_path,
                                                                             transport):
    """Every message of two rounds (profile with calibration, training on either data plane,
    evaluation) travels through the forwarding ClientApp and the agent's socket, with
    `context.state` (the Flower-message data plane keeps the round there) going back and forth;
    the adapter equals the in-process run's."""
    config = tiny_run_config(num_server_rounds=2, local_steps=2, transport=transport,
                             calibration="measure", calibration_steps=1,
                             output_dir=str(tmp_path), run_name="direct")

    def through_agent(grid):
        for ctx in grid.contexts.values():
            ctx.node_config[AGENT_SOCKET] = agent.path

    _, direct, _ = run_in_process(config, 2)
    _, forwarded, rows = run_in_process({**config, "run.name": "agent"}, 2,
                                        grid_hook=through_agent)
    assert all(r["completed"] == 2 and not r["failures"] for r in rows)
    assert direct.keys() == forwarded.keys()
    for key in direct:
        assert torch.equal(direct[key], forwarded[key]), key


def test_a_copy_of_a_round_message_after_the_round_trained_is_refused_at_once():
    """The server resends a round message to a device late to connect; if the first copy
    trained after all, the second must not dial a finished round."""
    state = RecordDict({"stream.trained": ConfigRecord({"round": 3})})
    task = RoundTask(server_round=3, split=1, local_steps=1, batch_size=1, learning_rate=1e-3,
                     optimizer="adamw", seed=0).to_record()
    link = ConfigRecord({"address": "127.0.0.1:1", "node-id": "7", "secret": "s",
                         "dtype": "float32", "root-certificates": b""})
    device = routes.device(RUN_CONFIG, context().node_config)
    with pytest.raises(ValueError, match="round 3 was trained already"):
        routes.HANDLERS[TRAIN_STREAM](RecordDict({CONFIG: task, STREAM: link}), state, device)
