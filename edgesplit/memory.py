"""A process's memory: what it holds now, its peak, and handing freed pages back (the ServerApp
after every round; a device agent when it lets go of a run).

Measured on SmolLM2-135M in Ray simulation (docs/results.md, "Server memory"): the process grew
by 250-500 MB a round while `tracemalloc` saw 2.5 MB of live Python objects, flat. The growth
was glibc malloc keeping freed tensor memory in its per-thread arenas: each thread that ran a
tail step (any stream thread, a new set every round) filled its own arena with one step's
activations, and nothing returned the free space. Two changes fix it where it starts:

- every tail step runs on one long-lived worker thread (`strategies.tail_queue`), so one arena
  holds the steps' working set instead of one arena per stream thread;
- after every round `release_free_memory` asks glibc to return the free pages of every arena to
  the OS (`malloc_trim(0)`; a few ms), so the round's freed sessions and tensors leave the RSS.

An environment variable (`MALLOC_ARENA_MAX=2`) also flattens the curve, but users would have to
set it where the SuperLink starts; `mallopt(M_ARENA_MAX)` from inside the ServerApp comes too
late (glibc fixes its arena limit once more than 8 arenas exist, and Ray and gRPC threads are
running by then: measured, no effect).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import sys

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _glibc() -> ctypes.CDLL | None:
    """The C library if it is glibc (musl and macOS have no `malloc_trim`)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


_LIBC = _glibc()


def rss_mb() -> float | None:
    """Resident memory of this process now (MB), or None where /proc is missing."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE_BYTES / 2**20
    except OSError:
        return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes there, KiB here


def release_free_memory() -> bool:
    """Return the free pages of every malloc arena to the OS; False where glibc is absent."""
    if _LIBC is None:
        return False
    _LIBC.malloc_trim(0)
    return True
