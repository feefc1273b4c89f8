"""Fleet files: a cell's band becomes each cell device's declared spectral efficiency and the
run's allocation.cell-bandwidth-hz (no root needed: nothing is built)."""

from pathlib import Path

import pytest

from harness.testbed import load_fleet

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"

CELL = """
[server]
cpu-cores = 0.5
memory-mb = 4000

[classes.phone]
cpu-cores = 0.1
memory-mb = 1500
uplink-mbit = 30
downlink-mbit = 60
catalogue = "phone-snapdragon-855"
cell = true

[classes.laptop]
cpu-cores = 0.5
memory-mb = 1500
uplink-mbit = 50
downlink-mbit = 100
catalogue = "laptop-core-i7-1260p"

[fleet]
phone = 2
laptop = 1

[cell]
bandwidth-mhz = 20
"""


def test_a_fleet_with_a_cell_declares_who_is_in_it(tmp_path):
    path = tmp_path / "fleet.toml"
    path.write_text(CELL)
    fleet = load_fleet(path)
    assert fleet.run_config == {"allocation.cell-bandwidth-hz": 20e6}
    phone, laptop = fleet.classes["phone"].declared(), fleet.classes["laptop"].declared()
    assert phone["device.cell"] is True
    assert phone["device.spectral-efficiency"] == pytest.approx(1.5)  # 30 Mbit/s over 20 MHz
    assert laptop["device.cell"] is False  # on its own link, whatever its catalogue link
    path.write_text(CELL.replace("[cell]\nbandwidth-mhz = 20\n", ""))
    with pytest.raises(ValueError, match=r"cell = true need a \[cell\] bandwidth-mhz"):
        load_fleet(path)


def test_a_fleet_without_a_cell_declares_nothing_new(tmp_path):
    path = tmp_path / "fleet.toml"
    path.write_text(CELL.replace("[cell]\nbandwidth-mhz = 20\n", "").replace("cell = true\n", ""))
    fleet = load_fleet(path)
    assert fleet.run_config == {}
    assert "device.cell" not in fleet.classes["phone"].declared()


@pytest.mark.parametrize("name, device_cores, server_cores", [
    ("fleet_weak_devices.toml", (0.08, 0.3), (0.75, 1.25)),
    ("fleet_crowded_server.toml", (0.3, 0.5), (0.25, 0.25))])
def test_the_verdict_fleets_fit_the_machine_and_declare_their_caps(name, device_cores,
                                                                   server_cores):
    """Issue 23's two regimes: devices and server in their ranges, everything that computes
    during a round (the SuperLink's cgroup included) within the machine's 2 cores (the
    SuperNodes' shared cgroup is busy while ClientApps start, before the devices' work), and
    each device declaring the memory its cgroup is capped at, so the cost model excludes what
    the kernel would kill."""
    fleet = load_fleet(EXPERIMENTS / name)
    cores = [fleet.classes[d].cpu_cores for d in fleet.devices]
    assert device_cores[0] <= min(cores) and max(cores) <= device_cores[1]
    assert server_cores[0] <= fleet.server_cpu_cores <= server_cores[1]
    assert sum(cores) + fleet.server_cpu_cores + fleet.superlink_cpu_cores <= 2.0 + 1e-9
    for device in fleet.devices:
        c = fleet.classes[device]
        assert c.declared()["device.memory-gb"] * 1000 == pytest.approx(c.memory_mb)


def test_the_superlink_and_the_supernodes_get_their_own_shares_or_the_defaults(tmp_path):
    path = tmp_path / "fleet.toml"
    path.write_text(CELL)
    fleet = load_fleet(path)
    assert (fleet.superlink_cpu_cores, fleet.superlink_memory_mb) == (0.25, 2000)
    assert (fleet.supernodes_cpu_cores, fleet.supernodes_memory_mb) == (1.0, 4000)
    path.write_text(CELL + "\n[superlink]\ncpu-cores = 0.3\nmemory-mb = 1000\n"
                    "\n[supernodes]\ncpu-cores = 0.7\nmemory-mb = 3000\n")
    fleet = load_fleet(path)
    assert (fleet.superlink_cpu_cores, fleet.superlink_memory_mb) == (0.3, 1000)
    assert (fleet.supernodes_cpu_cores, fleet.supernodes_memory_mb) == (0.7, 3000)
