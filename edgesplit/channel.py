"""Wireless channel models for the hidden states that cross the split (device -> server).

Each channel is a frozen dataclass called as `channel(hidden, generator) -> hidden`: the same
seeded generator gives the same corruption, so evaluations are reproducible and two splits can be
compared on the same channel realisation. Every channel keeps gradients flowing to the device, so
it can sit between `head` and `tail` in training as well as in evaluation.

- `Erasure`: each element is lost (zeroed) with probability `loss_rate`; from an SNR through the
  Nakagami-m outage probability.
- `AdditiveNoise`: `y + n / h`, Gaussian noise at an SNR relative to the activation power, with
  optional Nakagami-m block fading per token (an equalised receiver: noise is amplified by 1/h).
- `QuantiseFlip`: b-bit uniform quantisation, each bit flipped at a bit error rate, from an SNR
  through BPSK over AWGN: BER = Q(sqrt(2 SNR)).

SNRs are in dB in the parameters and linear inside the formulas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from scipy.special import erfc, gammainc


class Channel(Protocol):
    """What the split calls: corrupt `hidden` with random numbers drawn from `generator`."""

    def __call__(self, hidden: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...


def db_to_linear(snr_db: float) -> float:
    """10^(dB/10)."""
    return 10.0 ** (snr_db / 10.0)


def nakagami_outage(snr_db: float, m: float = 1.0, omega: float = 1.0,
                    threshold: float = 1.0) -> float:
    """Probability that the faded SNR falls below `threshold`: the element loss rate.

    The power gain |h|^2 of Nakagami-m fading is Gamma(m, omega/m), so
    P(SNR |h|^2 < g_th) = gammainc(m, m g_th / (omega SNR)) (regularised lower gamma).

    Parameters
    ----------
    snr_db : float
        Mean SNR in dB.
    m : float (default: 1.0)
        Nakagami shape (1 = Rayleigh; larger = milder fading).
    omega : float (default: 1.0)
        Mean power gain E|h|^2.
    threshold : float (default: 1.0)
        Linear SNR below which an element is lost.

    Returns
    -------
    float
        Outage probability in (0, 1); it falls as the SNR rises.
    """
    return float(gammainc(m, m * threshold / (omega * db_to_linear(snr_db))))


def bpsk_bit_error_rate(snr_db: float) -> float:
    """BER of BPSK over AWGN at a per-bit SNR: Q(sqrt(2 SNR)) = erfc(sqrt(SNR)) / 2."""
    return float(0.5 * erfc(math.sqrt(db_to_linear(snr_db))))


def _uniform(hidden: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(hidden.shape, generator=generator, dtype=hidden.dtype, device=hidden.device)


@dataclass(frozen=True)
class Erasure:
    """Each element is zeroed independently with probability `loss_rate`.

    loss_rate : float
        In [0, 1).
    """

    loss_rate: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss_rate < 1.0:
            raise ValueError(f"loss_rate must be in [0, 1), got {self.loss_rate}")

    @classmethod
    def from_snr(cls, snr_db: float, m: float = 1.0, omega: float = 1.0,
                 threshold: float = 1.0) -> Erasure:
        """Erasure at the Nakagami-m outage probability of this SNR (see `nakagami_outage`)."""
        return cls(nakagami_outage(snr_db, m, omega, threshold))

    def __call__(self, hidden: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # Comparing one uniform per element with q couples realisations: with the same
        # generator seed a larger q erases a superset of the elements (common random numbers).
        return hidden * (_uniform(hidden, generator) >= self.loss_rate)


@dataclass(frozen=True)
class AdditiveNoise:
    """`y + n / h`: Gaussian noise at `snr_db` below the activation power, with fading.

    snr_db : float
        Mean power of the hidden state over the noise power, in dB.
    fading_m : float or None (default: None)
        Nakagami shape of a power gain |h|^2 ~ Gamma(m, omega/m) drawn once per token (a token's
        vector fits in one coherence block); None = no fading (AWGN). The received noise power
        is then P / (SNR |h|^2), on average P m / (SNR omega (m - 1)) for m > 1.
    omega : float (default: 1.0)
        Mean power gain.
    """

    snr_db: float
    fading_m: float | None = None
    omega: float = 1.0

    def __post_init__(self) -> None:
        if self.fading_m is not None and self.fading_m < 0.5:
            raise ValueError(f"Nakagami fading_m must be >= 0.5, got {self.fading_m}")

    def __call__(self, hidden: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # The noise level is a property of the link, not something to train against: detach.
        power = hidden.detach().pow(2).mean()
        noise = torch.randn(hidden.shape, generator=generator, dtype=hidden.dtype,
                            device=hidden.device) * torch.sqrt(power / db_to_linear(self.snr_db))
        if self.fading_m is not None:
            noise = noise / self._amplitude(hidden, generator)
        return hidden + noise

    def _amplitude(self, hidden: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # torch.distributions.Gamma takes no generator; its own sampler does.
        shape_k = torch.full(hidden.shape[:-1] + (1,), float(self.fading_m), dtype=hidden.dtype,
                             device=hidden.device)
        gain = torch._standard_gamma(shape_k, generator=generator) * (self.omega / self.fading_m)
        return gain.sqrt()


def uniform_codes(hidden: torch.Tensor, bits: int) -> tuple[torch.Tensor, float, float]:
    """Uniform `bits`-bit codes over the tensor's range, with the (offset, step) to decode.

    The offset and step are side information, assumed to arrive intact.
    """
    low, high = hidden.min().item(), hidden.max().item()
    step = (high - low) / (2**bits - 1) or 1.0  # a constant tensor: any step decodes it
    codes = torch.round((hidden - low) / step).to(torch.int64)
    return codes, low, step


def flip_bits(codes: torch.Tensor, bits: int, bit_error_rate: float,
              generator: torch.Generator) -> torch.Tensor:
    """Flip each of the low `bits` bits of every code independently with `bit_error_rate`."""
    weights = 2 ** torch.arange(bits, device=codes.device)
    flips = torch.rand(codes.shape + (bits,), generator=generator,
                       device=codes.device) < bit_error_rate
    return codes ^ (flips.to(torch.int64) * weights).sum(-1)


@dataclass(frozen=True)
class QuantiseFlip:
    """b-bit quantisation, then independent bit errors at `bit_error_rate`.

    bits : int (default: 8)
    bit_error_rate : float (default: 0.0)
        In [0, 0.5].

    The gradient passes straight through (the identity), so the device can still train.
    """

    bits: int = 8
    bit_error_rate: float = 0.0

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 32:
            raise ValueError(f"bits must be in [1, 32], got {self.bits}")
        if not 0.0 <= self.bit_error_rate <= 0.5:
            raise ValueError(f"bit_error_rate must be in [0, 0.5], got {self.bit_error_rate}")

    @classmethod
    def from_snr(cls, snr_db: float, bits: int = 8) -> QuantiseFlip:
        """Bit errors at the BPSK/AWGN rate of this per-bit SNR (see `bpsk_bit_error_rate`)."""
        return cls(bits, bpsk_bit_error_rate(snr_db))

    def __call__(self, hidden: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        codes, low, step = uniform_codes(hidden.detach(), self.bits)
        received = flip_bits(codes, self.bits, self.bit_error_rate, generator)
        decoded = received.to(hidden.dtype) * step + low
        return hidden + (decoded - hidden).detach()  # straight-through estimator


CHANNELS = ("erasure", "noise", "quantise-flip")


def make_channel(kind: str, **params: float) -> Channel:
    """Build a channel by name.

    Parameters
    ----------
    kind : str
        ``"erasure"`` (``loss_rate``, or ``snr_db`` with optional ``m``, ``omega``,
        ``threshold``); ``"noise"`` (``snr_db``, optional ``fading_m``, ``omega``);
        ``"quantise-flip"`` (``bits`` and ``bit_error_rate``, or ``bits`` and ``snr_db``).
    **params
        The channel's parameters, as above.

    Returns
    -------
    Channel
    """
    if kind == "erasure":
        return Erasure.from_snr(**params) if "snr_db" in params else Erasure(**params)
    if kind == "noise":
        return AdditiveNoise(**params)
    if kind == "quantise-flip":
        if "snr_db" in params:
            return QuantiseFlip.from_snr(**params)
        return QuantiseFlip(**params)
    raise ValueError(f"unknown channel {kind!r}; choose one of {CHANNELS}")
