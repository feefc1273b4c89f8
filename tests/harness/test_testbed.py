"""The emulated edge testbed: shaped links in force, devices (SuperNode and agent) in their own
namespace, each agent in its own cgroup and the SuperNodes in one they share, the SuperLink in a
cgroup of its own apart from the ServerApp's, a cell's band shared, and nothing left behind
(runs as root with namespaces and cgroups, as in CI on these machines; skipped with the reason
elsewhere). Rounds through the testbed (agents, a shaped link, a device in a cell):
tests/experiments/test_testbed_e2e.py, which runs the verdict on a testbed of this shape."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from harness import testbed
from harness.runtime import FlowerHarness
from harness.testbed import DeviceClass, Fleet, cgroup_version, leftovers, measure_mbit

MISSING = testbed.Testbed.missing()

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(bool(MISSING), reason=MISSING)]

FLEET = Fleet({"slow-link": DeviceClass("slow-link", 0.5, 2000, 4.0, 16.0, "raspberry-pi-5"),
               "fast-link": DeviceClass("fast-link", 0.5, 2000, 40.0, 80.0, "jetson-nano")},
              ["slow-link", "fast-link"], server_cpu_cores=1.0, server_memory_mb=6000)


def _cgroups_and_netns(pid: int, group: str, controllers: int) -> tuple[list[str], str]:
    """The process's cgroup lines that name `group` and its network namespace, once its
    start-up is over: its shell joins `group` under every controller, one after another, then
    execs `ip netns exec`, which enters the namespace and execs the program; the test may look
    at any point between (it once read a SuperNode's namespace as the root's)."""
    for _ in range(100):
        joined = [line for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                  if line.endswith(f"/{group}")]
        program = Path(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()).name
        if len(joined) >= controllers and program not in ("sh", "ip"):
            break
        time.sleep(0.1)
    return joined, os.readlink(f"/proc/{pid}/ns/net")


def test_two_emulated_devices_in_their_places_on_shaped_links_and_clean_exit(tmp_path):
    before = leftovers()
    bed = testbed.Testbed(FLEET, FlowerHarness(tmp_path / "flwr-home"))
    with bed:
        # Each device's agent runs in its own network namespace and its own cgroups, its
        # SuperNode in that namespace but in the cgroups all SuperNodes share (their ClientApps
        # only forward); the SuperLink and the server's SuperExec (the ServerApp's parent) in
        # cgroups apart.
        root_netns = os.readlink("/proc/self/ns/net")
        procs = dict(bed.harness.procs)
        controllers = 2 if cgroup_version() == 1 else 1  # cpu + memory

        def place(name: str, group: str) -> str:
            joined, netns = _cgroups_and_netns(procs[name].pid, f"edgesplit-{bed.tag}-{group}",
                                               controllers)
            assert len(joined) == controllers, (name, joined,
                                                Path(f"/proc/{procs[name].pid}/cgroup").read_text())
            return netns

        for name, group in (("superlink", "superlink"), ("superexec", "server")):
            assert place(name, group) == root_netns, name
        for index in range(2):
            netns = place(f"agent-{index}", str(index))
            assert netns != root_netns and place(f"supernode-{index}", "supernodes") == netns
        # The shaped rates are in force, each direction (a known payload, timed by its receiver).
        for direction, mbit, nbytes in (("up", 4.0, 1_000_000), ("down", 16.0, 4_000_000)):
            measured = measure_mbit(bed, 0, direction, nbytes)
            assert abs(measured / mbit - 1) <= 0.25, (direction, measured, mbit)
    assert leftovers() == before  # every namespace, veth and cgroup is gone


CELL_FLEET = Fleet({"near": DeviceClass("near", 0.5, 2000, 20.0, 40.0, "jetson-orin-nano",
                                        cell=True, spectral_efficiency=1.0),
                    "far": DeviceClass("far", 0.5, 2000, 10.0, 40.0, "phone-snapdragon-855",
                                       cell=True, spectral_efficiency=0.5)},
                   ["near", "far"], server_cpu_cores=1.0, server_memory_mb=6000,
                   cell_bandwidth_hz=20e6)


def test_a_cell_shares_its_band(tmp_path):
    """Two devices in a 20 MHz cell (full-band rates 20 and 10 Mbit/s): each alone reaches its
    own rate, both at once share the cell's 20 Mbit/s. (A round with a device in a cell, its
    subchannels allocated and paced: tests/experiments/test_testbed_e2e.py.)"""
    from concurrent.futures import ThreadPoolExecutor

    before = leftovers()
    with testbed.Testbed(CELL_FLEET, FlowerHarness(tmp_path / "flwr-home")) as bed:
        alone = [measure_mbit(bed, i, "up", 2_000_000) for i in range(2)]
        assert abs(alone[0] / 20 - 1) <= 0.25 and abs(alone[1] / 10 - 1) <= 0.25, alone
        with ThreadPoolExecutor(2) as pool:
            both = list(pool.map(lambda i: measure_mbit(bed, i, "up", 4_000_000), range(2)))
        # The far device is held to its own 10 Mbit/s either way; the near one loses about
        # half of its 20 to the far one's share of the band.
        assert sum(both) <= 20 * 1.25 and both[0] < 0.75 * alone[0], (both, alone)
    assert leftovers() == before  # the cell's ifb too
