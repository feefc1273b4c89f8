"""A local deployment on 127.0.0.1 for the e2e tests and benchmarks: one SuperLink (TLS and
SuperNode authentication optional) and its SuperNodes, each with its resident device agent
(`edgesplit-device`, optional), inside a `FlowerHarness`.

The SuperLink keeps its ports and its state database (`--database`) for the deployment's life,
so it can be killed and started again as an edge server that crashed and came back; the
SuperNodes keep running meanwhile and reconnect. The `flwr` connection is written to the
harness's FLWR_HOME as the default.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from clients.agent import LOADED
from harness.runtime import (
    FlowerHarness,
    descendants,
    flwr_bin,
    free_ports,
    kill_and_wait,
    wait_for,
)

AGENT_START_TIMEOUT_S = 180.0  # importing torch on a loaded 2-core machine


def supernode_key_pair(folder: Path, name: str) -> tuple[Path, Path]:
    """A SuperNode's authentication keys as `ssh-keygen -t ecdsa -b 384` writes them:
    (`<name>`, the OpenSSH private key; `<name>.pub`, its public key)."""
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = folder / name, folder / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    private.chmod(0o600)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH))
    return private, public


@dataclass
class LocalDeployment:
    """A SuperLink on OS-chosen ports of 127.0.0.1 and the SuperNodes started against it.

    Parameters
    ----------
    harness : FlowerHarness
    tls : mapping, optional
        `stream.tls-certfile`, `stream.tls-keyfile`, `stream.tls-ca-certfile` (PEM files): the
        SuperLink serves TLS with them and SuperNodes and `flwr` verify it with the CA; plaintext
        without.
    supernode_auth : bool (default: False)
        Start the SuperLink with `--enable-supernode-auth`: only SuperNodes whose public key was
        registered (`register`) may join.
    connection : str (default: "e2e-deploy")
        The `flwr` connection name.

    A SuperNode started with an agent's socket (`start_agents`) forwards every message to that
    resident agent (`agent-socket` in its node config); without one, every message costs a cold
    ClientApp process that loads torch and the model.
    """

    harness: FlowerHarness
    tls: Mapping[str, str] | None = None
    supernode_auth: bool = False
    connection: str = "e2e-deploy"
    superlink: subprocess.Popen | None = field(default=None, init=False)
    starts: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.http_port, self.control_port = free_ports(2)
        # Unix socket paths are limited to 107 bytes: a short folder, not the test's tmp_path.
        self.sockets = Path(tempfile.mkdtemp(prefix="es-agents-", dir="/tmp"))
        self.harness.scratch.append(self.sockets)

    @property
    def ca(self) -> str:
        return self.tls["stream.tls-ca-certfile"] if self.tls else ""

    def start_superlink(self) -> subprocess.Popen:
        """Start (or start again) the SuperLink on the same ports and database; wait until it
        is healthy."""
        security = (["--ssl-certfile", self.tls["stream.tls-certfile"], "--ssl-keyfile",
                     self.tls["stream.tls-keyfile"], "--ssl-ca-certfile", self.ca] if self.tls
                    else ["--insecure"])
        self.starts += 1
        name = "superlink" if self.starts == 1 else f"superlink-{self.starts}"
        self.superlink = self.harness.start(name, [
            flwr_bin("flower-superlink"), *security,
            *(["--enable-supernode-auth"] if self.supernode_auth else []),
            "--isolation", "subprocess", "--disable-runtime-dependency-installation",
            # 1.41: one HTTP port (--host/--port) serves the Runtime, Control and Fleet APIs.
            # The gRPC Control API address is deprecated (not opened) but pinned so no default
            # port is involved.
            "--control-api-address", f"127.0.0.1:{self.control_port}",
            "--host", "127.0.0.1", "--port", str(self.http_port),
            "--database", str(self.harness.home / "state.db"),
        ])
        self.harness.wait_healthy(self.http_port, self.superlink, name=name, ca_file=self.ca)
        self.harness.write_connection(self.connection, f"127.0.0.1:{self.http_port}", self.ca)
        return self.superlink

    def kill_superlink(self) -> list[int]:
        """SIGKILL the SuperLink with everything it started (its SuperExec and the ServerApp
        processes), as when the edge server loses power; returns the pids killed."""
        assert self.superlink is not None, "no SuperLink started"
        pids = sorted({self.superlink.pid} | descendants({self.superlink.pid}))
        kill_and_wait(pids)
        self.superlink.wait(timeout=10)
        return pids

    def start_agents(self, names: list[str],
                     commands: Mapping[str, Sequence[str]] | None = None) -> list[Path]:
        """Device agents on their own sockets (logs `<name>.log`), started together; returns
        their sockets once every one has loaded the device code. `commands` replaces the
        `edgesplit-device` command of some (a test starts an agent of another version so)."""
        commands = commands or {}
        procs = {name: self.harness.start(name, [
            *commands.get(name, [flwr_bin("edgesplit-device")]),
            "--socket", str(self.sockets / f"{name}.sock")]) for name in names}
        wait_for(lambda: all(LOADED in self.harness.log(n) or p.poll() is not None
                             for n, p in procs.items()),
                 AGENT_START_TIMEOUT_S, f"{names} to load the device code")
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n"
                                   f"{self.harness.log(name)[-3000:]}")
        return [self.sockets / f"{name}.sock" for name in names]

    def start_supernode(self, partition: int, partitions: int, private_key: Path | None = None,
                        name: str = "", agent: Path | None = None,
                        superlink: str = "") -> subprocess.Popen:
        """A SuperNode for `partition` of `partitions`, with its own runtime port; it
        authenticates with `private_key` when given, forwards its messages to the agent on
        the socket `agent` when given, and dials `superlink` ("host:port", e.g. a
        `harness.flaky_fleet` proxy) instead of the SuperLink when given."""
        node_config = f"partition-id={partition} num-partitions={partitions}"
        if agent is not None:
            node_config += f' agent-socket="{agent}"'
        (port,) = free_ports(1)
        return self.harness.start(name or f"supernode-{partition}", [
            flwr_bin("flower-supernode"),
            *(["--root-certificates", self.ca] if self.tls else ["--insecure"]),
            *(["--auth-supernode-private-key", str(private_key)] if private_key else []),
            "--superlink", superlink or f"127.0.0.1:{self.http_port}",
            "--port", str(port),  # this SuperNode's own runtime API (its ClientApps connect here)
            "--node-config", node_config,
        ])

    def register(self, public_key: Path) -> int:
        """`flwr supernode register`: allow the SuperNode holding this key; returns its id."""
        rc, out = self.harness.run(f"register-{public_key.stem}", [
            flwr_bin("flwr"), "supernode", "register", str(public_key), self.connection,
            "--format", "json"], timeout_s=60)
        if rc != 0:
            raise RuntimeError(f"`flwr supernode register` failed with {rc}:\n{out[-3000:]}")
        return int(json.loads(out[out.index("{"):])["node-id"])


def start_deployment(harness: FlowerHarness, clients: int,
                     tls: Mapping[str, str] | None = None,
                     agents: bool = False) -> LocalDeployment:
    """A SuperLink and `clients` SuperNodes (partition i of `clients`), each with its device
    agent when `agents`."""
    deployment = LocalDeployment(harness, tls)
    deployment.start_superlink()
    sockets = (deployment.start_agents([f"agent-{p}" for p in range(clients)]) if agents
               else [None] * clients)
    for partition, agent in enumerate(sockets):
        deployment.start_supernode(partition, clients, agent=agent)
    return deployment
