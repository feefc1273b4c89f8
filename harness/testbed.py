"""An edge testbed on one machine: emulated devices with their own links and CPU shares.

Each emulated device is a SuperNode and its resident device agent (`edgesplit-device`) in their
own network namespace, joined to the root namespace by a veth pair whose two ends are
rate-limited with a token-bucket filter (`tbf`): the namespace end shapes the device's uplink,
the root end its downlink. The agent runs in the device's cgroup (a CPU quota and a memory limit
from its device class); the SuperNodes and the ClientApp processes they start (one per message,
each forwarding its message to its device's agent) share a cgroup of their own (`[supernodes]`),
as a real device starts Python on a full core (`agents=False`: each ClientApp does the work
itself, importing torch in every one, and SuperNode and ClientApps run in the device's cgroup
instead). The ServerApp and its stream endpoint run in the root namespace in the
server's cgroup (started by a `flower-superexec` of their own), so device and server speeds keep
their ratio on a small machine; the SuperLink runs in a cgroup of its own, off the CPU the tails
use (a SuperLink starved by them answered a SuperNode's message fetch with an error, and the
message was lost: `harness.flaky_fleet`). Devices reach the server at one address on the root
namespace's loopback. Every process's log is in the harness's `logs/` folder (the agents': pid,
load, each request, dial, admission, steps), which `experiments.testbed` keeps under `--out`.

A fleet may declare a cell (`[cell]`): the uplinks of its cell devices then also pass, at the
host's end, through one `htb` class of the cell's capacity shared by a child class per device
(`Cell`), as devices attached to one base station share its band; the allocator divides the band
(`allocation.cell-bandwidth-hz`, set for the run) and pacing holds each device to its share.

Everything the testbed creates (namespaces, veths and their qdiscs, the cell's `ifb` device, the
server address, cgroups, processes) is removed when it exits, also after a failure;
`Testbed.preflight` refuses with a clear message without root, `ip`/`tc`, namespaces or the
cgroup controllers. Traffic goes only to addresses the testbed created (one private /16,
`SUBNET`).

    with Testbed(load_fleet("fleet.toml"), FlowerHarness(home)) as bed:
        bed.run({"train.rounds": 2, ...})
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from clients.agent import LOADED
from harness.runtime import FlowerHarness, flwr_bin, free_ports, wait_for

SUBNET = "10.213"  # the testbed's private /16: device i is 10.213.<i+1>.2, its gateway .1
SERVER_IP = f"{SUBNET}.0.1"  # the server's address (root namespace, on lo)
CGROUP_ROOT = Path("/sys/fs/cgroup")
_CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class DeviceClass:
    """What an emulated device of one class gets.

    name : str
        The class name (also sent as the SuperNode's `device.class`).
    cpu_cores : float
        CPU quota in cores (0.2 = a fifth of one core).
    memory_mb : int
        Memory limit of the device's agent (without agents: of its SuperNode and ClientApps).
    uplink_mbit, downlink_mbit : float
        Link rates (Mbit/s) of the device's veth, each direction.
    catalogue : str
        The hardware catalogue class (`edgesplit.hardware.DEVICES`) the device declares as
        `device.class` (its memory, power and, until calibrated, speed); empty: state the
        figures in `node_config` (`device.cpu-freq-hz`, `device.cores`, ...).
    node_config : dict
        Extra `--node-config` entries (declared device figures; they win over the class's).
    cell : bool or None (default: None)
        In a fleet with a cell: whether the device is attached to it (its `uplink_mbit` is
        then its rate with the whole band); None in a fleet without one.
    spectral_efficiency : float (default: 0.0)
        A cell device's bit/s per Hz of the cell's band (`load_fleet` sets it).

    Every SuperNode also declares its link as shaped (`device.uplink-bps`,
    `device.downlink-bps`, `device.link-shaped`) and its class name (`device.label`), so the
    cost model charges transfers at the rates the veth carries and pacing adds only what an
    allocation below them costs.
    """

    name: str
    cpu_cores: float
    memory_mb: int
    uplink_mbit: float
    downlink_mbit: float
    catalogue: str = ""
    node_config: dict[str, Any] = field(default_factory=dict)
    cell: bool | None = None
    spectral_efficiency: float = 0.0

    def declared(self) -> dict[str, Any]:
        """The `--node-config` device keys of this class (partition keys aside)."""
        cell = {} if self.cell is None else {"device.cell": self.cell}
        if self.cell:
            cell["device.spectral-efficiency"] = self.spectral_efficiency
        return {**({"device.class": self.catalogue} if self.catalogue else {}),
                "device.label": self.name, "device.uplink-bps": self.uplink_mbit * 1e6,
                "device.downlink-bps": self.downlink_mbit * 1e6, "device.link-shaped": True,
                **cell, **self.node_config}


@dataclass(frozen=True)
class Fleet:
    """The devices to emulate (one class name each, in partition order), the server's share
    (and its catalogue class, the run's `allocation.server-class`, when named), the
    SuperLink's, and the one the SuperNodes share when device agents do the devices' work."""

    classes: dict[str, DeviceClass]
    devices: list[str]
    server_cpu_cores: float
    server_memory_mb: int
    server_class: str = ""
    cell_bandwidth_hz: float = 0.0  # the cell's band (0: no cell)
    superlink_cpu_cores: float = 0.25
    superlink_memory_mb: int = 2000
    supernodes_cpu_cores: float = 1.0
    supernodes_memory_mb: int = 4000

    def __post_init__(self) -> None:
        unknown = sorted(set(self.devices) - set(self.classes))
        if unknown:
            raise ValueError(f"fleet: devices of unknown classes {unknown}")
        if not self.devices:
            raise ValueError("fleet: no devices")
        if any(c.cell for c in self.classes.values()) and not self.cell_bandwidth_hz > 0:
            raise ValueError("fleet: classes with cell = true need a [cell] bandwidth-mhz > 0")

    @property
    def run_config(self) -> dict[str, Any]:
        """What a run on this fleet must be told about it (the cell's band)."""
        return {
            "allocation.cell-bandwidth-hz": self.cell_bandwidth_hz} if self.cell_bandwidth_hz else {
                }


def load_fleet(path: str | Path) -> Fleet:
    """Read a fleet file::

        [server]
        cpu-cores = 1.0
        memory-mb = 6000
        class = "cpu-epyc-9654"   # optional: the run's allocation.server-class (power; speed until
        measured)

        [superlink]               # optional: its own cgroup (default 0.25 core, 2000 MB)
        cpu-cores = 0.25
        memory-mb = 2000

        [supernodes]              # optional: the cgroup every SuperNode and its ClientApps
        cpu-cores = 1.0           # share when agents run the devices (default 1 core,
        memory-mb = 4000          # 4000 MB); idle but for a ClientApp's start, per message

        [classes.phone]
        cpu-cores = 0.1
        memory-mb = 2000
        uplink-mbit = 5
        downlink-mbit = 20
        catalogue = "phone-snapdragon-855"   # or state figures: node-config = {...}
        node-config = { "device.power-w" = 4.0 }   # optional

        [fleet]
        phone = 3          # how many devices of each class, in this order

        [cell]             # optional: a cell whose band the classes with cell = true share
        bandwidth-mhz = 20 # (their uplink-mbit: their rate with the whole band)
    """
    raw = tomllib.loads(Path(path).read_text())
    try:
        band_hz = float(raw.get("cell", {}).get("bandwidth-mhz", 0.0)) * 1e6
        classes = {name: DeviceClass(name, float(c["cpu-cores"]), int(c["memory-mb"]),
                                     float(c["uplink-mbit"]), float(c["downlink-mbit"]),
                                     str(c.get("catalogue", "")),
                                     dict(c.get("node-config", {})),
                                     bool(c.get("cell", False))
                                     if "cell" in raw or "cell" in c else None,
                                     float(c["uplink-mbit"]) * 1e6 / band_hz
                                     if band_hz and c.get("cell", False) else 0.0)
                   for name, c in raw["classes"].items()}
        devices = [name for name, count in raw["fleet"].items() for _ in range(int(count))]
        server = raw["server"]
        # The SuperLink's and the SuperNodes' shares as given; Fleet's defaults for the rest.
        shares = {f"{section}_{field}": kind(raw[section][key])
                  for section in ("superlink", "supernodes") if section in raw
                  for key, field, kind in (("cpu-cores", "cpu_cores", float),
                                           ("memory-mb", "memory_mb", int))
                  if key in raw[section]}
        return Fleet(classes, devices, float(server["cpu-cores"]), int(server["memory-mb"]),
                     str(server.get("class", "")), band_hz, **shares)
    except KeyError as exc:
        raise ValueError(f"fleet file {str(path)!r}: missing {exc}") from None


# ---- cgroups (v1 as on these machines; v2 where the unified hierarchy has the controllers) ------
class Cgroup:
    """A CPU quota and a memory limit; processes join with `join_command`."""

    def __init__(self, name: str, cpu_cores: float, memory_mb: int) -> None:
        self.paths: list[Path] = []
        quota = max(1000, int(cpu_cores * _CPU_PERIOD_US))
        if cgroup_version() == 2:
            path = CGROUP_ROOT / name
            path.mkdir()
            self.paths.append(path)
            (path / "cpu.max").write_text(f"{quota} {_CPU_PERIOD_US}")
            (path / "memory.max").write_text(str(memory_mb << 20))
            return
        for controller in ("cpu", "memory"):
            path = CGROUP_ROOT / controller / name
            path.mkdir()
            self.paths.append(path)
        cpu, memory = self.paths
        (cpu / "cpu.cfs_period_us").write_text(str(_CPU_PERIOD_US))
        (cpu / "cpu.cfs_quota_us").write_text(str(quota))
        (memory / "memory.limit_in_bytes").write_text(str(memory_mb << 20))

    def join_command(self, argv: list[str]) -> list[str]:
        """`argv` run by a shell that first moves itself into this cgroup, so the program and
        everything it starts are inside before it runs."""
        moves = " && ".join(f"echo $$ > {p / 'cgroup.procs'}" for p in self.paths)
        return ["sh", "-c", f'{moves} && exec "$@"', "sh", *argv]

    def remove(self) -> None:
        """Remove the cgroup (its processes must be gone: the kernel refuses otherwise)."""
        for path in reversed(self.paths):
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # a dying process still counted in it
                    time.sleep(0.1)


def cgroup_version() -> int | None:
    """2 for a unified hierarchy with cpu and memory, 1 for v1 cpu + memory, None otherwise."""
    controllers = CGROUP_ROOT / "cgroup.controllers"
    if controllers.exists() and {"cpu", "memory"} <= set(controllers.read_text().split()):
        return 2
    if (CGROUP_ROOT / "cpu" / "cpu.cfs_quota_us").exists() and (
            CGROUP_ROOT / "memory" / "memory.limit_in_bytes").exists():
        return 1
    return None


# ---- network ----------------------------------------------------------------------------------
def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _in_namespace(namespace: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", namespace, *argv]


def _tbf(device: str, mbit: float, namespace: str | None = None) -> None:
    """Shape `device`'s egress to `mbit` Mbit/s: a bucket of 10 ms of traffic (at least 16 KB,
    so a whole frame passes), packets waiting at most 200 ms."""
    burst = max(16 * 1024, int(mbit * 1e6 / 8 * 0.01))
    argv = ["tc", "qdisc", "add", "dev", device, "root", "tbf", "rate", f"{mbit}mbit",
            "burst", str(burst), "latency", "200ms"]
    subprocess.run(_in_namespace(namespace, *argv) if namespace else argv, check=True,
                   capture_output=True, text=True)


@dataclass
class Link:
    """One device's namespace and shaped veth pair."""

    index: int
    namespace: str
    host_end: str
    device_end: str

    @property
    def device_ip(self) -> str:
        return f"{SUBNET}.{self.index + 1}.2"

    @property
    def gateway_ip(self) -> str:
        return f"{SUBNET}.{self.index + 1}.1"

    @classmethod
    def create(cls, tag: str, index: int, uplink_mbit: float, downlink_mbit: float) -> Link:
        link = cls(index, f"es-{tag}-{index}", f"esh{tag}{index}", f"esd{tag}{index}")
        _ip("netns", "add", link.namespace)
        try:
            _ip("link", "add", link.host_end, "type", "veth", "peer", "name", link.device_end)
            _ip("link", "set", link.device_end, "netns", link.namespace)
            _ip("addr", "add", f"{link.gateway_ip}/24", "dev", link.host_end)
            _ip("link", "set", link.host_end, "up")
            ns = ["-n", link.namespace]
            _ip(*ns, "addr", "add", f"{link.device_ip}/24", "dev", link.device_end)
            _ip(*ns, "link", "set", link.device_end, "up")
            _ip(*ns, "link", "set", "lo", "up")
            _ip(*ns, "route", "add", f"{SERVER_IP}/32", "via", link.gateway_ip)
            _tbf(link.device_end, uplink_mbit, link.namespace)
            _tbf(link.host_end, downlink_mbit)
        except Exception:
            link.remove()
            raise
        return link

    def remove(self) -> None:
        """Delete the veth pair (with its qdiscs) and the namespace."""
        for argv in (["link", "del", self.host_end], ["netns", "del", self.namespace]):
            subprocess.run(["ip", *argv], capture_output=True)


def _tc(*args: str) -> None:
    subprocess.run(["tc", *args], check=True, capture_output=True, text=True)


@dataclass
class Cell:
    """The cell's shared band: an `ifb` device that the cell devices' uplink traffic is
    redirected to at the host's end of their veths, shaped by `htb`: a parent class of the
    cell's capacity (the best device's full-band rate: the allocator's shares never ask for
    more) and a child class per device, guaranteed an equal part and allowed up to its own
    full-band rate, classified by the device's address."""

    device: str

    @classmethod
    def create(cls, tag: str, links: list[Link], uplink_mbit: list[float]) -> Cell:
        cell = cls(f"esc{tag}")
        _ip("link", "add", cell.device, "type", "ifb")
        try:
            _ip("link", "set", cell.device, "up")
            capacity = max(uplink_mbit)
            _tc("qdisc", "add", "dev", cell.device, "root", "handle", "1:", "htb")
            _tc("class", "add", "dev", cell.device, "parent", "1:", "classid", "1:1", "htb",
                "rate", f"{capacity}mbit", "ceil", f"{capacity}mbit")
            for i, (link, mbit) in enumerate(zip(links, uplink_mbit, strict=True)):
                child = f"1:{10 + i}"
                _tc("class", "add", "dev", cell.device, "parent", "1:1", "classid", child,
                    "htb", "rate", f"{capacity / len(links)}mbit", "ceil", f"{mbit}mbit")
                _tc("filter", "add", "dev", cell.device, "parent", "1:", "protocol", "ip",
                    "prio", "1", "u32", "match", "ip", "src", f"{link.device_ip}/32",
                    "flowid", child)
                _tc("qdisc", "add", "dev", link.host_end, "handle", "ffff:", "ingress")
                _tc("filter", "add", "dev", link.host_end, "parent", "ffff:", "protocol", "ip",
                    "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect",
                    "dev", cell.device)
        except Exception:
            cell.remove()
            raise
        return cell

    def remove(self) -> None:
        """Delete the `ifb` device (with its classes; the veths' ingress goes with them)."""
        subprocess.run(["ip", "link", "del", self.device], capture_output=True)


# ---- the testbed ------------------------------------------------------------------------------
class Testbed:
    """A SuperLink and one shaped, CPU-capped SuperNode (with its device agent) per device of
    `fleet`, on this machine.

    Parameters
    ----------
    fleet : Fleet
    harness : FlowerHarness
        Owns the processes (its `stop` ends every one of them) and the Flower home.
    partitions : int, optional
        `num-partitions` of the SuperNodes (default: one per device).
    agents : bool (default: True)
        Start a device agent beside every SuperNode; False: every message costs a ClientApp
        process that imports torch and builds the model at the device's CPU share.
    agent_timeout_s : float (default: 900)
        How long the agents may take to load the device code (torch at a tenth of a core).
    """

    def __init__(self, fleet: Fleet, harness: FlowerHarness,
                 partitions: int | None = None, agents: bool = True,
                 agent_timeout_s: float = 900.0) -> None:
        self.fleet, self.harness = fleet, harness
        self.partitions = partitions or len(fleet.devices)
        self.agents, self.agent_timeout_s = agents, agent_timeout_s
        self.tag = secrets.token_hex(2)  # short: interface names have 15 characters
        self.links: list[Link] = []
        self.cell: Cell | None = None
        self.cgroups: list[Cgroup] = []
        self.connection = f"testbed-{self.tag}"
        self.superlink_port = 0
        self._server_address = False
        # Unix socket paths are limited to 107 bytes: a short folder of its own.
        self.sockets = Path(tempfile.mkdtemp(prefix=f"es-testbed-{self.tag}-", dir="/tmp"))
        harness.scratch.append(self.sockets)

    @staticmethod
    def preflight() -> None:
        """Raise RuntimeError saying what is missing to build a testbed here."""
        if os.geteuid() != 0:
            raise RuntimeError("the testbed needs root (network namespaces, tc, cgroups)")
        for tool in ("ip", "tc"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"the testbed needs `{tool}` (iproute2)")
        if cgroup_version() is None:
            raise RuntimeError("the testbed needs cgroup cpu and memory controllers (v1 under "
                               f"{CGROUP_ROOT}/cpu and /memory, or v2 with both enabled)")
        probe = f"es-probe-{secrets.token_hex(2)}"
        made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
        if made.returncode != 0:
            raise RuntimeError(f"cannot create network namespaces: {made.stderr.strip()}")
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)

    @classmethod
    def missing(cls) -> str:
        """What `preflight` finds missing here, '' when a testbed can be built (a test's skip
        reason)."""
        try:
            cls.preflight()
        except RuntimeError as exc:
            return str(exc)
        return ""

    def __enter__(self) -> Testbed:
        self.preflight()
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _cgroup(self, name: str, cpu_cores: float, memory_mb: int) -> Cgroup:
        group = Cgroup(f"edgesplit-{self.tag}-{name}", cpu_cores, memory_mb)
        self.cgroups.append(group)
        return group

    def _start(self) -> None:
        _ip("addr", "add", f"{SERVER_IP}/32", "dev", "lo")
        self._server_address = True
        http_port, control_port = free_ports(2)
        self.superlink_port = http_port
        address = f"{SERVER_IP}:{http_port}"
        # The SuperLink in its own cgroup; with `--isolation process` it starts no SuperExec:
        # the one started below, in the server's cgroup, runs the ServerApp there.
        fleet = self.fleet
        link = self.harness.start("superlink", self._cgroup(
            "superlink", fleet.superlink_cpu_cores, fleet.superlink_memory_mb).join_command([
                flwr_bin("flower-superlink"), "--insecure", "--isolation", "process",
                "--disable-runtime-dependency-installation",
                "--control-api-address", f"127.0.0.1:{control_port}",
                # Its state in memory, not in SQLite: at a fraction of a core SQLite's lock
                # waits ran out ("database is locked") and a device's message or reply was
                # lost (docs/deployment.md, section 9); the testbed never restarts it.
                "--host", SERVER_IP, "--port", str(http_port)]))
        self.harness.wait_healthy(http_port, link, host=SERVER_IP)
        self.harness.start("superexec", self._cgroup(
            "server", fleet.server_cpu_cores, fleet.server_memory_mb).join_command([
                flwr_bin("flower-superexec"), "--insecure", "--runtime-api-address", address]))
        groups = []
        for index, class_name in enumerate(fleet.devices):
            device = fleet.classes[class_name]
            self.links.append(Link.create(self.tag, index, device.uplink_mbit,
                                          device.downlink_mbit))
            groups.append(self._cgroup(str(index), device.cpu_cores, device.memory_mb))
            if self.agents:
                self.harness.start(f"agent-{index}", groups[-1].join_command(_in_namespace(
                    self.links[-1].namespace, flwr_bin("edgesplit-device"), "--socket",
                    str(self.sockets / f"agent-{index}.sock"))))
        if self.agents:
            self._wait_for_agents()
            # With agents the SuperNodes and their ClientApps only forward messages: they share
            # a cgroup of their own, off the devices' shares. In a device's share (0.08 core) a
            # ClientApp took longer to start than Flower's 30 s task-token deadline
            # (HEARTBEAT_DEFAULT_INTERVAL), its token expired (401) and the device never
            # answered; a real phone starts Python on a full core. Five SuperNodes in half a
            # core started within the deadline for an hour, then not: a ClientApp that misses
            # it keeps retrying while Flower starts another for the same message, and the
            # control plane stalled (docs/testbed.md); hence a whole core.
            nodes = self._cgroup("supernodes", fleet.supernodes_cpu_cores,
                                 fleet.supernodes_memory_mb)
        for index, class_name in enumerate(fleet.devices):
            node_config = {"partition-id": index, "num-partitions": self.partitions,
                           **fleet.classes[class_name].declared()}
            if self.agents:
                node_config["agent-socket"] = str(self.sockets / f"agent-{index}.sock")
            # Into the cgroup first: `ip netns exec` remounts /sys for the namespace.
            group = nodes if self.agents else groups[index]
            self.harness.start(f"supernode-{index}", group.join_command(_in_namespace(
                self.links[index].namespace, flwr_bin("flower-supernode"), "--insecure",
                "--superlink", address, "--node-config",
                " ".join(f"{k}={_toml(v)}" for k, v in node_config.items()))))
        members = [i for i, name in enumerate(self.fleet.devices)
                   if self.fleet.classes[name].cell]
        if members:
            self.cell = Cell.create(self.tag, [self.links[i] for i in members],
                                    [self.fleet.classes[self.fleet.devices[i]].uplink_mbit
                                     for i in members])
        self.harness.write_connection(self.connection, address)

    def _wait_for_agents(self) -> None:
        """Until every agent has loaded the device code (RuntimeError if one exits)."""
        names = [f"agent-{i}" for i in range(len(self.fleet.devices))]
        procs = dict(self.harness.procs)

        def loaded() -> bool:
            for name in names:
                if procs[name].poll() is not None:
                    raise RuntimeError(f"{name} exited with {procs[name].returncode}:\n"
                                       f"{self.harness.log(name)[-3000:]}")
            return all(LOADED in self.harness.log(name) for name in names)

        wait_for(loaded, self.agent_timeout_s, "the device agents to load", poll_s=0.5)

    def run(self, run_config: dict[str, Any], timeout_s: float = 1800.0) -> tuple[int, str]:
        """`flwr run .` on the testbed (stream endpoint on the server address); returns the
        exit code and output."""
        config = {"stream.host": SERVER_IP, **self.fleet.run_config, **run_config}
        argv = [flwr_bin("flwr"), "run", ".", self.connection, "--stream", "--run-config",
                " ".join(f"{k}={_toml(v)}" for k, v in config.items())]
        return self.harness.run(f"flwr-run-{secrets.token_hex(2)}", argv, timeout_s=timeout_s)

    def close(self) -> None:
        """Stop every process, then remove links, namespaces, the server address and cgroups."""
        survivors = self.harness.stop()
        if self.cell is not None:
            self.cell.remove()
            self.cell = None
        for link in self.links:
            link.remove()
        if self._server_address:
            subprocess.run(["ip", "addr", "del", f"{SERVER_IP}/32", "dev", "lo"],
                           capture_output=True)
            self._server_address = False
        for group in self.cgroups:
            group.remove()
        self.links, self.cgroups = [], []
        if survivors:
            raise RuntimeError(f"testbed processes survived: {survivors}")


_RECEIVER = """
import socket, sys, time
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
server.settimeout(60)
print(server.getsockname()[1], flush=True)
conn, _ = server.accept()
first, got = None, 0
while chunk := conn.recv(1 << 16):
    first = first or time.perf_counter()
    got += len(chunk)
print(got, time.perf_counter() - first, flush=True)
"""
_SENDER = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60) as conn:
    conn.sendall(bytes(int(sys.argv[3])))
"""


def measure_mbit(testbed: Testbed, index: int, direction: str, nbytes: int) -> float:
    """Throughput (Mbit/s) of `nbytes` sent over device `index`'s link, `"up"` (device to server)
    or `"down"`, timed by the receiver from its first byte to its last."""
    import sys

    namespace = testbed.links[index].namespace
    inside = _in_namespace(namespace, sys.executable, "-c")
    if direction == "up":
        receiver_argv = [sys.executable, "-c", _RECEIVER, SERVER_IP, "0"]
        host = SERVER_IP
    else:
        receiver_argv = [*inside, _RECEIVER, testbed.links[index].device_ip, "0"]
        host = testbed.links[index].device_ip
    sender_prefix = [*inside] if direction == "up" else [sys.executable, "-c"]
    with subprocess.Popen(receiver_argv, stdout=subprocess.PIPE, text=True) as receiver:
        port = receiver.stdout.readline().strip()
        subprocess.run([*sender_prefix, _SENDER, host, port, str(nbytes)], check=True,
                       timeout=120)
        got, seconds = receiver.stdout.readline().split()
    if int(got) != nbytes:
        raise RuntimeError(f"link probe: {got} of {nbytes} bytes arrived")
    return nbytes * 8 / float(seconds) / 1e6


def _toml(value: object) -> str:
    """A run-config / node-config value as Flower parses it (TOML scalars)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def leftovers(tag_prefix: str = "es-") -> dict[str, list[str]]:
    """Namespaces, veths and cgroups of any testbed still present (for tests and cleanup)."""
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show", "type", "veth"], capture_output=True,
                           text=True).stdout
    groups = [str(p) for p in CGROUP_ROOT.glob("*/edgesplit-*")] + [
        str(p) for p in CGROUP_ROOT.glob("edgesplit-*")]
    ifbs = subprocess.run(["ip", "-o", "link", "show", "type", "ifb"], capture_output=True,
                          text=True).stdout
    return {"namespaces": [n.split()[0] for n in namespaces.splitlines()
                           if n.startswith(tag_prefix)],
            "veths": [line.split(": ")[1].split("@")[0] for line in links.splitlines()
                      if ": esh" in line or ": esd" in line],
            "cells": [line.split(": ")[1].split("@")[0] for line in ifbs.splitlines()
                      if ": esc" in line],
            "cgroups": groups}
