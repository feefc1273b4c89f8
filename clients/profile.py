"""Device profiles: the compute, memory, radio and data facts a device reports for allocation.

In simulation a profile is a device class drawn from the hardware catalogue
(`edgesplit.hardware.DEVICES`, figures from published specifications) by the partition id and
the run seed, with an uplink rate drawn from its link's typical range. In deployment each
SuperNode names its class, states its figures, or both (stated figures win), through
`--node-config`, e.g. `flower-supernode ... --node-config "partition-id=0 num-partitions=2
device.class=jetson-orin-nano device.uplink-bps=120e6"`; keys left out come from the class, or
from the simulated draw when no class is named. Measured speeds, which the allocator prefers,
come from the calibration query (`clients.calibration`), not from here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from edgesplit.hardware import DEVICES, LINKS, device_class

#: Catalogue links whose devices attach to the run's cell, when it has one.
CELLULAR_LINKS = ("5g", "lte")


@dataclass(frozen=True)
class DeviceProfile:
    """What a device tells the server about itself (SI units).

    device_class : str
        Its catalogue class ("" when every figure is stated by hand).
    cpu_freq_hz, cores, flops_per_cycle : float, int, float
        Peak float32 FLOP/s = clock x parallel units x FLOPs per unit per cycle (GPU devices:
        CUDA cores or shader ALUs).
    memory_gb : float
    power_w : float
        Power while training.
    tx_power_w : float
    uplink_bps : float
        Uplink rate to the edge server with the link to itself.
    distance_m : float
        Distance to the edge server (the paper's path-loss model).
    downlink_bps : float (default: 0.0)
        Downlink rate from the edge server, when declared (0 = not declared).
    link_shaped : bool (default: False)
        The declared uplink and downlink rates are enforced by the network itself (the
        testbed's shaped links), so pacing (`stream.pace-links`) only adds what an allocation below
        them costs.
    label : str (default: "")
        A free name for reports (the testbed's device class).
    cell : bool (default: False)
        The device is attached to the cell (one base station's uplink) whose band the round's
        cell devices share, when the run has one (`allocation.cell-bandwidth-hz`); simulated 5G and
        LTE devices are.
    spectral_efficiency : float (default: 0.0)
        A cell device's bit/s per Hz of band (its rate with the whole band is this times the
        cell's bandwidth); simulated ones: their drawn uplink over their link's channel width.
    """

    device_class: str
    cpu_freq_hz: float
    cores: int
    flops_per_cycle: float
    memory_gb: float
    power_w: float
    tx_power_w: float
    uplink_bps: float
    distance_m: float
    downlink_bps: float = 0.0
    link_shaped: bool = False
    label: str = ""
    cell: bool = False
    spectral_efficiency: float = 0.0

    @property
    def flops_per_s(self) -> float:
        return self.cpu_freq_hz * self.cores * self.flops_per_cycle

    def as_dict(self) -> dict[str, float | str]:
        return {k: v if isinstance(v, str) else float(v)
                for k, v in dataclasses.asdict(self).items()}


def class_profile(name: str, rng: np.random.Generator) -> DeviceProfile:
    """A device of catalogue class `name`: its published figures, an uplink rate drawn
    log-uniformly from its link's typical range, and a distance in a 500 m cell."""
    hw = device_class(name)
    link = LINKS[hw.link]
    low, high = np.log(link.uplink_bps)
    uplink = float(np.exp(rng.uniform(low, high)))
    cellular = hw.link in CELLULAR_LINKS
    return DeviceProfile(
        device_class=name, cpu_freq_hz=hw.clock_hz, cores=hw.units,
        flops_per_cycle=hw.flops_per_cycle, memory_gb=hw.memory_gb, power_w=hw.power_w,
        tx_power_w=link.tx_power_w, uplink_bps=uplink,
        distance_m=float(rng.uniform(50.0, 500.0)), cell=cellular,
        spectral_efficiency=uplink / link.channel_hz if cellular else 0.0)


def _rng(partition_id: int, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, partition_id, 0x5EED])


def simulated_profile(partition_id: int, seed: int) -> DeviceProfile:
    """A device drawn uniformly from the catalogue, deterministic in (partition, seed)."""
    rng = _rng(partition_id, seed)
    names = list(DEVICES)
    return class_profile(names[int(rng.integers(len(names)))], rng)


_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(DeviceProfile)}


def device_profile(node_config: Mapping[str, object], partition_id: int, seed: int
                   ) -> DeviceProfile:
    """The profile of `device.class` and the `device.<field-with-dashes>` keys of
    `node_config`; what they leave out is simulated."""
    if "device.class" in node_config:
        name = str(node_config["device.class"])
        if name not in DEVICES:
            raise ValueError(f"node config device.class = {name!r}: choose from "
                             f"{sorted(DEVICES)}")
        drawn = dataclasses.asdict(class_profile(name, _rng(partition_id, seed)))
    else:
        drawn = dataclasses.asdict(simulated_profile(partition_id, seed))
    for name, default in drawn.items():
        key = "device." + name.replace("_", "-")
        if key not in node_config or name == "device_class":
            continue
        value = node_config[key]
        if isinstance(default, bool | str):
            if not isinstance(value, type(default)):
                raise ValueError(f"node config {key} = {value!r}: must be a "
                                 f"{type(default).__name__}")
            drawn[name] = value
            continue
        # The field's type, not the default's: a catalogue's whole-GB memory is an int, and a
        # declared 1.5 GB must stay 1.5.
        drawn[name] = (int if _FIELD_TYPES[name] == "int" else float)(value)
        if drawn[name] <= 0:
            raise ValueError(f"node config {key} = {value!r}: must be > 0")
    if drawn["cell"] and drawn["spectral_efficiency"] <= 0:
        raise ValueError("node config device.cell = true: give the device's "
                         "device.spectral-efficiency (bit/s per Hz of the cell's band)")
    return DeviceProfile(**drawn)
