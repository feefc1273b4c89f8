"""Device profiles: catalogue classes in simulation, node config wins in deployment."""

import pytest

from clients.profile import device_profile, simulated_profile
from edgesplit.hardware import DEVICES, LINKS


def test_simulated_profiles_are_deterministic_catalogue_devices():
    profiles = [simulated_profile(i, seed=0) for i in range(40)]
    assert profiles == [simulated_profile(i, seed=0) for i in range(40)]
    assert simulated_profile(0, seed=1) != profiles[0]
    assert len({p.device_class for p in profiles}) >= 5  # heterogeneous
    for p in profiles:
        hw = DEVICES[p.device_class]
        low, high = LINKS[hw.link].uplink_bps
        assert p.flops_per_s == pytest.approx(hw.peak_flops)
        assert (p.memory_gb, p.power_w) == (hw.memory_gb, hw.power_w)
        assert low <= p.uplink_bps <= high


def test_node_config_names_a_class_overrides_figures_and_rejects_nonsense():
    p = device_profile({"device.class": "raspberry-pi-5", "device.uplink-bps": 9e7},
                       partition_id=3, seed=0)
    pi = DEVICES["raspberry-pi-5"]
    assert p.device_class == "raspberry-pi-5" and p.flops_per_s == pi.peak_flops
    assert p.uplink_bps == 9e7
    p = device_profile({"device.cpu-freq-hz": 2e9, "device.cores": 8}, partition_id=3, seed=0)
    drawn = simulated_profile(3, seed=0)
    assert p.cpu_freq_hz == 2e9 and p.cores == 8 and p.distance_m == drawn.distance_m
    with pytest.raises(ValueError, match="device.tx-power-w"):
        device_profile({"device.tx-power-w": -1.0}, partition_id=0, seed=0)
    with pytest.raises(ValueError, match="device.class = 'toaster'"):
        device_profile({"device.class": "toaster"}, partition_id=0, seed=0)


def test_a_declared_fraction_of_a_gigabyte_is_kept():
    """The testbed's devices declare their cgroup's memory cap (1.5 GB); a catalogue class's
    memory is a whole number of GB, which once truncated the declared figure to 1 GB."""
    assert isinstance(DEVICES["phone-snapdragon-855"].memory_gb, int)
    p = device_profile({"device.class": "phone-snapdragon-855", "device.memory-gb": 1.5,
                        "device.cores": 4.0}, partition_id=0, seed=0)
    assert p.memory_gb == 1.5 and isinstance(p.cores, int) and p.cores == 4
