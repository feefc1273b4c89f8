"""Benchmark: our tensor frames against the `safetensors` bytes format, for the stream's frames.

Both carry dtype and shape in a JSON header and raw little-endian bytes after it, without pickle.
For each frame (the activations of one step, and the gradient that comes back, at SmolLM2-135M's
and tiny-llama's hidden sizes) it measures the bytes on the wire and the median time to encode
and to decode (to tensors the receiver can use), interleaving the two formats.

    python -m experiments.bench_framing [--repeats 200] [--out results]   # bench_framing.csv
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from edgesplit import framing
from experiments.plotting import write_csv

SHAPES = {"smollm2-135m": (4, 32, 576), "tiny-llama": (4, 16, 64)}


def frames(batch: int, tokens: int, hidden: int) -> dict[str, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return {
        "activations": {"hidden": torch.randn(batch, tokens, hidden, generator=generator),
                        "attention_mask": torch.ones(batch, tokens, dtype=torch.int64),
                        "labels": torch.randint(0, 49152, (batch, tokens), generator=generator)},
        "gradient": {"hidden": torch.randn(batch, tokens, hidden, generator=generator)},
    }


def ours(tensors: dict[str, torch.Tensor], meta: dict) -> tuple[bytes, dict]:
    raw = framing.encode(meta, tensors)
    return raw, framing.decode(raw, len(raw)).tensors


def theirs(tensors: dict[str, torch.Tensor], meta: dict) -> tuple[bytes, dict]:
    raw = st_save(tensors, metadata={k: json.dumps(v) for k, v in meta.items()})
    return raw, st_load(raw)


def timed(codec, tensors: dict, meta: dict, repeats: int) -> tuple[int, float, float]:
    encode, decode = [], []
    for _ in range(repeats):
        tic = time.perf_counter()
        raw, _ = codec(tensors, meta)
        encode.append(time.perf_counter() - tic)
    for _ in range(repeats):
        tic = time.perf_counter()
        if codec is ours:
            framing.decode(raw, len(raw))
        else:
            st_load(raw)
        decode.append(time.perf_counter() - tic)
    return len(raw), statistics.median(encode), statistics.median(decode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()
    meta = {"kind": "activations", "step": 3}
    rows = []
    for model, shape in SHAPES.items():
        for kind, tensors in frames(*shape).items():
            _, decoded = theirs(tensors, meta)
            assert all(torch.equal(decoded[k], v) for k, v in tensors.items())
            payload = sum(t.numel() * t.element_size() for t in tensors.values())
            row = {"model": model, "frame": kind, "payload_bytes": payload}
            for name, codec in (("ours", ours), ("safetensors", theirs)):
                size, enc, dec = timed(codec, tensors, meta, args.repeats)
                row.update({f"{name}_bytes": size, f"{name}_encode_us": round(enc * 1e6, 1),
                            f"{name}_decode_us": round(dec * 1e6, 1)})
            print(json.dumps(row))
            rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.out / "bench_framing.csv")


if __name__ == "__main__":
    main()
