"""Device profiles: the compute, radio and data facts a device reports for allocation.

In simulation a profile is drawn deterministically from the partition id and the run seed
(heterogeneous devices, as in the seed-A paper's settings). In deployment each SuperNode states its
own through `--node-config`, e.g.
`flower-supernode ... --node-config "partition-id=0 num-partitions=2 device.cpu-freq-hz=8e8
device.cores=4 device.tx-power-w=1.5 device.distance-m=120"`; keys left out fall back to the
generator.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DeviceProfile:
    """What a device tells the server about itself (SI units)."""

    cpu_freq_hz: float
    cores: int
    flops_per_cycle: float
    memory_gb: float
    tx_power_w: float
    distance_m: float

    @property
    def flops_per_s(self) -> float:
        return self.cpu_freq_hz * self.cores * self.flops_per_cycle

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in dataclasses.asdict(self).items()}


def simulated_profile(partition_id: int, seed: int) -> DeviceProfile:
    """A heterogeneous device drawn from the seed-A paper's ranges (0.5-1 GHz, 4-6 cores,
    1-2 W), with memory and distance to the edge server (within a 500 m cell) added."""
    rng = np.random.default_rng([seed, partition_id, 0x5EED])
    return DeviceProfile(
        cpu_freq_hz=float(rng.uniform(0.5e9, 1.0e9)),
        cores=int(rng.integers(4, 7)),
        flops_per_cycle=1.0,
        memory_gb=float(rng.choice([2.0, 4.0, 8.0])),
        tx_power_w=float(rng.uniform(1.0, 2.0)),
        distance_m=float(rng.uniform(50.0, 500.0)),
    )


def device_profile(node_config: Mapping[str, object], partition_id: int, seed: int
                   ) -> DeviceProfile:
    """The profile stated in `node_config` (`device.<field-with-dashes>` keys), else simulated."""
    drawn = dataclasses.asdict(simulated_profile(partition_id, seed))
    for name, default in drawn.items():
        key = "device." + name.replace("_", "-")
        if key in node_config:
            value = node_config[key]
            drawn[name] = type(default)(value)
            if drawn[name] <= 0:
                raise ValueError(f"node config {key} = {value!r}: must be > 0")
    return DeviceProfile(**drawn)
