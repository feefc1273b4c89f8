"""Start and stop a private Flower runtime (SuperLink, SuperNodes, `flwr run`): for the e2e tests,
the benchmarks and the experiments that run the real Flower processes.

Everything a test starts lives under one temporary FLWR_HOME, listens on ports the OS chose
(bind to port 0), and carries a unique marker in its environment. Cleanup has to reach beyond
the processes the harness spawned itself: the SuperLink starts its `flower-superexec` with
`start_new_session=True` (its own process group), the SuperExec starts `flwr-serverapp` /
`flwr-simulation`, and Ray starts `gcs_server`, `raylet` and workers below that. Orphans of a
killed parent are re-parented to init and no longer appear in any tree walk. So `stop()` kills:

1. the process groups of the processes the harness started (each started with
   `start_new_session=True`, so the group is ours alone),
2. every descendant of those processes still alive (a /proc walk by parent pid),
3. every process of this user whose environment carries this harness's marker
   (`EDGESPLIT_E2E_MARKER=<random token>`): only our own descendants inherit it.

SIGTERM first, SIGKILL after a grace period, then it checks that none survived.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]  # the Flower app `flwr run` is pointed at
MARKER_KEY = "EDGESPLIT_E2E_MARKER"
# Process names the final check looks for (the brief's list plus the SuperExec and Ray's GCS).
FLOWER_NAMES = ("flower-superlink", "flower-supernode", "flower-superexec", "flwr-serverapp",
                "flwr-clientapp", "flwr-simulation", "raylet", "gcs_server")


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free ports (sockets held open together so the OS cannot repeat one)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# ---- /proc helpers (no psutil in the venv) -------------------------------------------------------
def _uid() -> int:
    return os.getuid()


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(ppid, pgid, state) of `pid`, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2:].split()
    return int(rest[1]), int(rest[2]), rest[0]


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[2] != "Z"  # a zombie is dead, only unreaped


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace").strip()
    except OSError:
        return ""


def command_line(pid: int) -> str:
    """A process's command line, arguments joined by spaces ("" once it is gone)."""
    return _cmdline(pid)


def resident_mb(pid: int) -> float:
    """A process's resident memory (VmRSS) in MB; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def _owned_by_me(pid: int) -> bool:
    try:
        return os.stat(f"/proc/{pid}").st_uid == _uid()
    except OSError:
        return False


def _has_marker(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _is_ray_daemon(pid: int) -> bool:
    """Ray's GCS, raylet and their helpers (killed at once on cleanup: they ignore SIGTERM)."""
    line = _cmdline(pid)
    return any(name in line for name in ("gcs_server", "raylet", "ray/dashboard",
                                         "ray/_private/log_monitor", "ray/autoscaler",
                                         "ray/_private/monitor", "default_worker.py", "ray::"))


def descendants(roots: set[int]) -> set[int]:
    """All live descendants of `roots` (not including the roots)."""
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        st = _stat(pid)
        if st is not None:
            children.setdefault(st[0], []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


@dataclass
class FlowerHarness:
    """A private Flower home, environment and process set for one test."""

    home: Path
    marker: str = field(default_factory=lambda: secrets.token_hex(12))
    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    scratch: list[Path] = field(default_factory=list)  # folders removed once processes stop

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs = self.home / "logs"
        self.logs.mkdir(exist_ok=True)

    # ---- environment and config ------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        # The SuperLink starts `flower-superexec` and the SuperNodes `flwr-clientapp` by name:
        # find them in the venv that runs us even when it is not activated.
        venv_bin = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")])
        env.update({
            "FLWR_HOME": str(self.home),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            MARKER_KEY: self.marker,
        })
        # tests/conftest.py sets EDGESPLIT_CACHE for the test process; pass it on explicitly.
        if "EDGESPLIT_CACHE" in os.environ:
            env["EDGESPLIT_CACHE"] = os.environ["EDGESPLIT_CACHE"]
        return env

    def write_connection(self, name: str, address: str, root_certificates: str = "") -> Path:
        """`$FLWR_HOME/config.toml` with one SuperLink connection (TLS verified against
        `root_certificates` when given, else insecure), made the default."""
        path = self.home / "config.toml"
        security = (f'root-certificates = "{root_certificates}"' if root_certificates
                    else "insecure = true")
        path.write_text(
            f'[superlink]\ndefault = "{name}"\n\n'
            f'[superlink.{name}]\naddress = "{address}"\n{security}\n'
        )
        return path

    # ---- processes -------------------------------------------------------------------------
    def start(self, name: str, argv: list[str],
              env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start a long-running process in its own session, output to logs/<name>.log; `env`
        adds variables to the harness's environment."""
        log = open(self.logs / f"{name}.log", "wb")  # the child keeps its own descriptor
        try:
            proc = subprocess.Popen(argv, cwd=REPO, env={**self.env, **(env or {})},
                                    stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        finally:
            log.close()
        self.procs.append((name, proc))
        return proc

    def run(self, name: str, argv: list[str], timeout_s: float,
            env: dict[str, str] | None = None) -> tuple[int, str]:
        """Run a command to completion (own session, so a timeout can kill its whole group)."""
        proc = self.start(name, argv, env)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._kill_group(proc.pid)
            proc.wait(timeout=10)
            rc = None
        out = self.log(name)
        if rc is None:
            command = " ".join([Path(argv[0]).name, *argv[1:3]])  # no machine's folders
            raise TimeoutError(f"{command} ... ran past {timeout_s:.0f} s; "
                               f"output tail:\n{out[-6000:]}")
        return rc, out

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_healthy(self, port: int, proc: subprocess.Popen, timeout_s: float = 60.0,
                     name: str = "superlink", ca_file: str = "", host: str = "127.0.0.1") -> None:
        """Poll the SuperLink's /health until it answers (or its process dies); over HTTPS,
        verified against `ca_file`, when given."""
        scheme = "https" if ca_file else "http"
        context = ssl.create_default_context(cafile=ca_file) if ca_file else None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n"
                                   f"{self.log(name)[-4000:]}")
            try:
                with urllib.request.urlopen(f"{scheme}://{host}:{port}/health", timeout=1,
                                            context=context) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{name} not healthy on port {port} after {timeout_s:.0f} s:\n"
                           f"{self.log(name)[-4000:]}")

    # ---- cleanup ---------------------------------------------------------------------------
    def owned_pids(self) -> set[int]:
        """Every live process this harness is responsible for (see the module docstring)."""
        # Only roots not yet reaped: a reaped child's pid may already be someone else's.
        roots = {p.pid for _, p in self.procs if p.poll() is None}
        groups = {p.pid for _, p in self.procs}  # start_new_session: pgid == pid
        marker = f"{MARKER_KEY}={self.marker}".encode()
        me = os.getpid()
        owned = roots | descendants(roots)
        for pid in _all_pids():
            if pid == me or not _owned_by_me(pid):
                continue
            st = _stat(pid)
            if st is None:
                continue
            if st[1] in groups or _has_marker(pid, marker):
                owned.add(pid)
        return {pid for pid in owned if pid != me and _alive(pid)}

    @staticmethod
    def _kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _signal_all(self, sig: int) -> None:
        owned = self.owned_pids()
        # Signal a group of ours only while one of our processes is in it: once a group is empty
        # its number may belong to someone else's new process.
        ours = {p.pid for _, p in self.procs}
        for pgid in {st[1] for st in map(_stat, owned) if st is not None and st[1] in ours}:
            self._kill_group(pgid, sig)
        for pid in owned:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def stop(self, grace_s: float = 10.0) -> list[str]:
        """SIGTERM everything owned, SIGKILL what is left after `grace_s`; return survivors.
        Ray's own daemons sit out SIGTERM: once only they are left, the grace ends."""
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            left = self.owned_pids()
            if not left or all(_is_ray_daemon(pid) for pid in left):
                break
            time.sleep(0.2)
        for _ in range(5):
            if not self.owned_pids():
                break
            self._signal_all(signal.SIGKILL)
            time.sleep(0.5)
        for _, proc in self.procs:  # reap our direct children
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        survivors = [f"{pid} {_cmdline(pid)}" for pid in sorted(self.owned_pids())]
        if not survivors:
            for folder in self.scratch:
                shutil.rmtree(folder, ignore_errors=True)
        return survivors


def start_simulation_superlink(harness: FlowerHarness, connection: str,
                               env: dict[str, str] | None = None) -> str:
    """A private SuperLink in simulation mode on OS-chosen ports, made the `flwr` default under
    `connection`; returns the connection name. The simulations it starts inherit `env` (e.g.
    `RAY_ADDRESS`, to run on an existing Ray cluster)."""
    http_port, control_port = free_ports(2)
    proc = harness.start("superlink", [
        flwr_bin("flower-superlink"), "--insecure", "--simulation",
        "--isolation", "subprocess", "--disable-runtime-dependency-installation",
        # 1.41 serves the Runtime, Control and Fleet APIs over HTTP on --host/--port; the
        # gRPC Control API address is deprecated (not opened) but pinned so no default is used.
        "--control-api-address", f"127.0.0.1:{control_port}",
        "--host", "127.0.0.1", "--port", str(http_port),
        "--database", str(harness.home / "state.db"),
    ], env)
    harness.wait_healthy(http_port, proc)
    harness.write_connection(connection, f"127.0.0.1:{http_port}")
    return connection


def start_ray_cluster(harness: FlowerHarness, head_cpus: int = 0,
                      worker_cpus: int = 1) -> str:
    """A Ray cluster of a head and one worker node on this machine, started with `ray start`
    (their daemons carry the harness's marker, so `stop` ends them); returns its address.

    With `head_cpus = 0` no actor can run on the head: whatever runs, runs on the worker.
    Ray binds its node address to this host's interface, not to 127.0.0.1 (it resolves loopback
    to the node IP on purpose), so the traffic stays on this machine.
    """
    (port,) = free_ports(1)
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths are limited
    harness.scratch.append(Path(temp))
    common = ["--disable-usage-stats", "--include-dashboard=false"]
    rc, out = harness.run("ray-head", [
        flwr_bin("ray"), "start", "--head", "--port", str(port), f"--num-cpus={head_cpus}",
        f"--temp-dir={temp}", *common], timeout_s=120)
    if rc != 0:
        raise RuntimeError(f"`ray start --head` failed with {rc}:\n{out[-4000:]}")
    address = re.search(r"ray start --address='([^']+)'", out)
    if not address:
        raise RuntimeError(f"`ray start --head` printed no address:\n{out[-4000:]}")
    rc, out = harness.run("ray-worker", [
        flwr_bin("ray"), "start", "--address", address.group(1), f"--num-cpus={worker_cpus}",
        "--disable-usage-stats"], timeout_s=120)
    if rc != 0:
        raise RuntimeError(f"`ray start --address` failed with {rc}:\n{out[-4000:]}")
    return address.group(1)


def processes_named(harness: FlowerHarness, name: str) -> list[int]:
    """Live processes of `harness` whose command line contains `name` (e.g. the ServerApp's
    `flwr-simulation` or `flwr-serverapp`)."""
    return sorted(pid for pid in harness.owned_pids() if name in _cmdline(pid))


def kill_and_wait(pids: list[int], timeout_s: float = 30.0) -> None:
    """SIGKILL `pids` and wait until none is alive (a crash, not a shutdown)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(lambda: not any(_alive(pid) for pid in pids), timeout_s, f"{pids} to die")


def wait_for(condition: Callable[[], object], timeout_s: float, what: str,
             poll_s: float = 0.05) -> None:
    """Poll `condition` until it is true; TimeoutError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s:.0f} s for {what}")
        time.sleep(poll_s)


def accepts_connections(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something listens on host:port (a bare TCP connect, closed at once)."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def run_config_arg(config: Mapping[str, Any]) -> str:
    """A run config as `flwr run --run-config` takes it: `key=value` pairs, strings quoted."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        return json.dumps(v) if isinstance(v, str) else repr(v)
    return " ".join(f"{k}={value(v)}" for k, v in config.items())


def flower_processes_of(harness: FlowerHarness) -> list[str]:
    """Live Flower/Ray processes that belong to `harness` (for the final assertion)."""
    return [f"{pid} {_cmdline(pid)}" for pid in sorted(harness.owned_pids())
            if any(n in _cmdline(pid) for n in FLOWER_NAMES)]


def flwr_bin(name: str) -> str:
    """An entry point of the venv that runs the tests (falls back to PATH)."""
    import sys

    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def started_run_id(flwr_run_output: str) -> int:
    """The run id `flwr run` printed ("Successfully started run <id>")."""
    found = re.search(r"Successfully started run (\d+)", flwr_run_output)
    if not found:
        raise RuntimeError(f"`flwr run` started no run:\n{flwr_run_output[-6000:]}")
    return int(found.group(1))


def flwr_run_metrics(harness: FlowerHarness, name: str, connection: str, run_config: str,
                     run_folder: Path, timeout_s: float) -> list[dict]:
    """`flwr run .` on `connection` with `run_config` (Flower's `--run-config` string), streamed;
    the rows of the run folder's metrics.jsonl. RuntimeError naming the run when `flwr run`
    fails or the run leaves no metrics."""
    rc, log = harness.run(f"flwr-run-{name}", [flwr_bin("flwr"), "run", ".", connection,
                                               "--run-config", run_config, "--stream"],
                          timeout_s=timeout_s)
    started_run_id(log)
    metrics = run_folder / "metrics.jsonl"
    if rc != 0 or not metrics.is_file():
        raise RuntimeError(f"{name}: the run failed (rc {rc}):\n{log[-4000:]}")
    return [json.loads(line) for line in metrics.read_text().splitlines()]


def run_status(harness: FlowerHarness, connection: str, run_id: int) -> str:
    """The run's status from `flwr ls` (e.g. "finished:completed")."""
    for attempt in range(3):  # the stream ends with the run; allow its status a moment
        rc, out = harness.run(f"flwr-ls-{attempt}", [
            flwr_bin("flwr"), "ls", connection, "--run-id", str(run_id), "--format", "json",
        ], timeout_s=60)
        if rc != 0:
            raise RuntimeError(f"`flwr ls` failed with {rc}:\n{out[-4000:]}")
        payload = json.loads(out[out.index("{"):])
        (row,) = [r for r in payload["runs"] if r["run-id"] == str(run_id)]
        if row["status"].startswith("finished"):
            break
        time.sleep(2)
    return row["status"]
