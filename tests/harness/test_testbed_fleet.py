"""Fleet files: a cell's band becomes each cell device's declared spectral efficiency and the
run's allocation.cell-bandwidth-hz (no root needed: nothing is built)."""

import pytest

from harness.testbed import load_fleet

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
