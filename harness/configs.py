"""Run configs for tests and quick benchmarks: the built-in job shrunk to seconds."""

from __future__ import annotations

from typing import Any

from edgesplit.settings import attribute_of, key_of

# tiny-llama (4 layers, hidden 64, byte-level vocabulary) on the synthetic corpus: a round of 4
# clients takes about a second in-process. `heterogeneous-fixed` gives clients different splits
# (up to `split`), which is what the equivalence tests need. The server stays on the CPU even
# where a GPU is present, so the bit-for-bit oracles compare like with like. No calibration: it
# would add a message per client and seconds per run to every test (its own tests turn it on).
TINY = {"model.name": "tiny-llama", "data.corpus": "synthetic", "allocation.fixed-split": 3,
        "train.local-steps": 3, "allocation.method": "heterogeneous-fixed", "train.batch-size": 4,
        "data.block-size": 16, "eval.every": 0, "train.min-clients": 2, "train.rounds": 1,
        "allocation.calibration": "none", "compute.server-device": "cpu"}


def tiny_run_config(**overrides: Any) -> dict[str, Any]:
    """`TINY` with run-config overrides given as keyword arguments named like the `Settings`
    attributes (`local_steps=2`) or as a dict of run-config keys in `keys`."""
    keys = overrides.pop("keys", {})
    named = {key_of(attribute_of(k)): v for k, v in overrides.items()}
    return {**TINY, **named, **keys}
