"""Device profiles: deterministic and varied in simulation, node config wins in deployment."""

import pytest

from clients.profile import device_profile, simulated_profile


def test_simulated_profiles_are_deterministic_heterogeneous_and_in_paper_ranges():
    profiles = [simulated_profile(i, seed=0) for i in range(20)]
    assert profiles == [simulated_profile(i, seed=0) for i in range(20)]
    assert simulated_profile(0, seed=1) != profiles[0]
    assert len({p.flops_per_s for p in profiles}) == 20
    assert all(0.5e9 <= p.cpu_freq_hz <= 1e9 and 4 <= p.cores <= 6 and 1 <= p.tx_power_w <= 2
               for p in profiles)


def test_node_config_overrides_and_rejects_nonsense():
    p = device_profile({"device.cpu-freq-hz": 2e9, "device.cores": 8}, partition_id=3, seed=0)
    drawn = simulated_profile(3, seed=0)
    assert p.cpu_freq_hz == 2e9 and p.cores == 8 and p.distance_m == drawn.distance_m
    with pytest.raises(ValueError, match="device.tx-power-w"):
        device_profile({"device.tx-power-w": -1.0}, partition_id=0, seed=0)
