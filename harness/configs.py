"""Run configs for tests and quick benchmarks: the built-in job shrunk to seconds."""

from __future__ import annotations

from typing import Any

# tiny-llama (4 layers, hidden 64, byte-level vocabulary) on the synthetic corpus: a round of 4
# clients takes about a second in-process. `heterogeneous-fixed` gives clients different splits
# (up to `split`), which is what the equivalence tests need. The server stays on the CPU even
# where a GPU is present, so the bit-for-bit oracles compare like with like. No calibration: it
# would add a message per client and seconds per run to every test (its own tests turn it on).
TINY = {"model-name": "tiny-llama", "corpus": "synthetic", "split": 3, "local-steps": 3,
        "allocator": "heterogeneous-fixed", "batch-size": 4, "block-size": 16, "eval-every": 0,
        "min-train-clients": 2, "num-server-rounds": 1, "calibration": "none",
        "server-device": "cpu"}


def tiny_run_config(**overrides: Any) -> dict[str, Any]:
    """`TINY` with run-config overrides given as keyword arguments (`-` spelt `_`, `lora.x` as
    `lora_x`) or as a dict of real keys in `keys`."""
    keys = overrides.pop("keys", {})
    named = {k.replace("lora_", "lora.").replace("_", "-"): v for k, v in overrides.items()}
    return {**TINY, **named, **keys}
