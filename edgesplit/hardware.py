"""Edge devices, edge servers and access links from published specifications (no torch).

Simulated clients draw a device class from `DEVICES` (`clients.profile`); a deployed SuperNode
names one with `--node-config "device.class=jetson-orin-nano"` (or states its figures one by
one); the ServerApp names its own class with the run config's `allocation.server-class`. The
makespan cost model (`allocation.makespan_model`) turns these figures into seconds and joules per
layer until measured speeds replace them (`allocation.calibration = "measure"`).

Compute is the peak of the unit that trains, at float32 (EdgeSplit trains in float32), written
as clock x parallel units x FLOPs per unit per cycle (a fused multiply-add counts 2): CUDA cores
for NVIDIA GPUs, shader ALUs for phone and laptop GPUs, SIMD lanes for CPUs. Memory is what the
device has in all (shared by CPU and GPU on every board and phone here). Power is the maximum
power mode or the TDP: what the device draws while it trains flat out.

Sources (vendor datasheets unless said otherwise):
- NVIDIA Jetson Nano module datasheet DS-09366-001: 128-core Maxwell GPU at 921.6 MHz
  (472 GFLOPS FP16, i.e. 236 FP32), 4 GB LPDDR4, 5 W / 10 W power modes.
- NVIDIA Jetson TX2 module datasheet DS-08424-001: 256-core Pascal GPU at 1.3 GHz
  (1.33 TFLOPS FP16), 8 GB LPDDR4, 7.5 W / 15 W modes.
- NVIDIA Jetson Orin Nano series datasheet DS-11105-001: 1024-core Ampere GPU at 625 MHz,
  8 GB LPDDR5, 7 W / 15 W modes.
- NVIDIA Jetson AGX Orin series technical brief v1.2: 2048-core Ampere GPU at up to 1.3 GHz,
  32 or 64 GB LPDDR5, 15-60 W.
- Raspberry Pi 5 product brief (2023): 4x Arm Cortex-A76 at 2.4 GHz, 4 or 8 GB LPDDR4X, 5 V 5 A
  supply; Arm Cortex-A76 software optimisation guide: two 128-bit ASIMD FMA pipes per core
  (16 FP32 FLOPs per cycle). About 12-14 W under full load in published reviews.
- Qualcomm Snapdragon 8 Gen 2 (Samsung Galaxy S23, 8 GB): Adreno 740, 3.7 TFLOPS FP32 at 719 MHz
  (TechPowerUp GPU database); sustained phone SoC power about 8 W [D: phones throttle to it].
- Qualcomm Snapdragon 855 (2019 flagship, 6 GB): Adreno 640, 768 ALUs at 585 MHz, about
  0.9 TFLOPS FP32 (Chips and Cheese, "Inside the Snapdragon 855's iGPU", 2024); 5 W sustained [D].
- Apple M2 (press release, June 2022): 10-core GPU, 3.6 TFLOPS; MacBook Air 16 GB, about 20 W.
- Intel Core i7-1260P (Intel ARK): 4 performance cores at up to 4.7 GHz with two 256-bit FMA
  units each (32 FP32 FLOPs per cycle), 28 W base power, laptop with 16 GB.
- NVIDIA L4 datasheet (2023): 7424 CUDA cores at 2.04 GHz, 30.3 TFLOPS FP32, 24 GB, 72 W.
- NVIDIA A100 datasheet: 6912 CUDA cores at 1.41 GHz, 19.5 TFLOPS FP32, 80 GB, 400 W (SXM).
- NVIDIA H100 datasheet: 16896 CUDA cores at 1.98 GHz, 67 TFLOPS FP32, 80 GB, 700 W (SXM5).
- AMD EPYC 9654 product page: 96 Zen 4 cores at 2.4 GHz base, AVX-512 on two 256-bit FMA
  pipes (32 FP32 FLOPs per cycle), 360 W TDP; a server with 384 GB.
- Links: Ookla, "Growing and Slowing: The State of 5G Worldwide in 2021": median 5G upload
  21 Mbit/s; Ookla Q2 2020 US report: median mobile (mostly LTE) upload 5.7 Mbit/s; Wi-Fi: a 2x2
  client on an 80 MHz channel links at 867 (Wi-Fi 5) to 1201 (Wi-Fi 6) Mbit/s at short range and
  TCP gets about 60-70% of that (wiisfi.com, "Understanding Wi-Fi 4/5/6/6E/7", 2024), less with
  range and other stations. Transmit power: 3GPP TS 38.101-1 power class 3 (23 dBm = 0.2 W) for
  phones; Wi-Fi clients about 20 dBm (0.1 W).

[D] marks our reading where a source gives no single figure. The ranges of the links are our
choice of "typical" within the sources' figures.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Link:
    """An access link a device reaches the edge server through.

    uplink_bps : (float, float)
        Typical uplink rate range (bit/s) of one device with the link to itself.
    channel_hz : float
        Channel width the rate is achieved on (used to scale rates with distance).
    tx_power_w : float
        Transmit power of a device on this link.
    """

    name: str
    uplink_bps: tuple[float, float]
    channel_hz: float
    tx_power_w: float


@dataclass(frozen=True)
class Hardware:
    """A device or server class: float32 peak compute, memory and power under load.

    clock_hz, units, flops_per_cycle : float, int, float
        Peak float32 FLOP/s = clock x parallel units x FLOPs per unit per cycle.
    memory_gb : float
        Memory in all (shared by CPU and GPU where they share it).
    power_w : float
        Power while training flat out (maximum power mode or TDP).
    link : str
        Devices: the name of their access link in `LINKS`; servers: "".
    batch_concurrency : float (default: 1.0)
        Servers: how many one-client tail batches run, batched, in the time of one [D]; used
        with `compute.batch-tails` until the server measures it.
    """

    name: str
    kind: str  # phone | board | laptop | server
    clock_hz: float
    units: int
    flops_per_cycle: float
    memory_gb: float
    power_w: float
    link: str = ""
    batch_concurrency: float = 1.0

    @property
    def peak_flops(self) -> float:
        """Peak float32 FLOP/s."""
        return self.clock_hz * self.units * self.flops_per_cycle


LINKS: dict[str, Link] = {link.name: link for link in (
    Link("wifi", uplink_bps=(50e6, 400e6), channel_hz=80e6, tx_power_w=0.1),
    Link("5g", uplink_bps=(10e6, 50e6), channel_hz=20e6, tx_power_w=0.2),
    Link("lte", uplink_bps=(3e6, 15e6), channel_hz=10e6, tx_power_w=0.2),
)}

DEVICES: dict[str, Hardware] = {d.name: d for d in (
    Hardware("jetson-nano", "board", 921.6e6, 128, 2, 4, 10, "wifi"),
    Hardware("jetson-tx2", "board", 1.3e9, 256, 2, 8, 15, "wifi"),
    Hardware("jetson-orin-nano", "board", 625e6, 1024, 2, 8, 15, "wifi"),
    Hardware("jetson-agx-orin", "board", 1.3e9, 2048, 2, 64, 60, "wifi"),
    Hardware("raspberry-pi-5", "board", 2.4e9, 4, 16, 8, 12, "wifi"),
    Hardware("phone-snapdragon-8-gen-2", "phone", 719e6, 2560, 2, 8, 8, "5g"),
    Hardware("phone-snapdragon-855", "phone", 585e6, 768, 2, 6, 5, "lte"),
    Hardware("laptop-apple-m2", "laptop", 1.398e9, 1280, 2, 16, 20, "wifi"),
    Hardware("laptop-core-i7-1260p", "laptop", 4.7e9, 4, 32, 16, 28, "wifi"),
)}

SERVERS: dict[str, Hardware] = {s.name: s for s in (
    Hardware("l4", "server", 2.04e9, 7424, 2, 24, 72, batch_concurrency=8),
    Hardware("a100", "server", 1.41e9, 6912, 2, 80, 400, batch_concurrency=8),
    Hardware("h100", "server", 1.98e9, 16896, 2, 80, 700, batch_concurrency=8),
    Hardware("cpu-epyc-9654", "server", 2.4e9, 96, 32, 384, 360, batch_concurrency=1),
)}

#: The edge server of the built-in job (run config `allocation.server-class`): NVIDIA's edge/MEC
# card.
DEFAULT_SERVER = "l4"

#: Share of peak FLOP/s that dense training kernels sustain, applied to every catalogue figure
#: until a measurement replaces it [D]: large-batch LLM training reaches 40-55% of peak on GPUs
#: (PaLM, arXiv 2204.02311: 46% MFU); small edge batches and CPUs do worse.
SUSTAINED_FRACTION = 0.3


def device_class(name: str) -> Hardware:
    """The device class `name`, or a ValueError listing the known ones."""
    if name not in DEVICES:
        raise ValueError(f"unknown device class {name!r}; choose from {sorted(DEVICES)}")
    return DEVICES[name]


def server_class(name: str) -> Hardware:
    """The server class `name`, or a ValueError listing the known ones."""
    if name not in SERVERS:
        raise ValueError(f"unknown server class {name!r}; choose from {sorted(SERVERS)}")
    return SERVERS[name]
