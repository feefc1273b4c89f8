"""Benchmark: tokens/s of the split LoRA step vs the unsplit step on a GPU, bfloat16 base, over a
batch sweep.

The split step is head forward, detached activations, tail forward + backward, head backward
from the activations' gradient (`bench_split_step.step_variants`); the unsplit step is
transformers' own forward + backward. Both run on the same model, batches and AdamW, interleaved
in one process so the GPU's clocks and other tenants hit both alike; a CUDA synchronise closes
every timed step. Every number printed is measured here; without CUDA the script refuses to run
unless asked for a CPU smoke run (`--device cpu`), whose rows are labelled as CPU.

    python -m experiments.bench_gpu                       # cuda, bfloat16, SmolLM2, batches 1..64
    python -m experiments.bench_gpu --device cpu --quick  # CI smoke run on a tiny model (CPU)

`--random-weights` times the architecture of `--model` (a preset, or a folder with its
config.json and tokenizer; weights optional) with random weights, `--config` changing its shape
(e.g. `hidden_size=2048 num_hidden_layers=16`): the time of a step does not depend on the
weights' values, and a GPU machine may have no copy of them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from edgesplit.data import federated_text
from edgesplit.optim import make_optimizer
from edgesplit.placement import BASE_DTYPES, resolve_device
from edgesplit.presets import PRESETS, resolve_checkpoint
from edgesplit.settings import Settings
from edgesplit.split_model import SplitModel, trainable_copy
from experiments.bench_split_step import step_variants
from experiments.plotting import write_csv

VARIANTS = ("unsplit", "split")


def measure(model: SplitModel, batches: list[dict], split: int, warmup: int
            ) -> dict[str, dict[str, float]]:
    """Median seconds per step and peak memory of each variant; the adapters' largest
    difference after all steps."""
    steps = step_variants(model, split)
    start = model.lora_state()
    params = {name: trainable_copy(start, model.device) for name in VARIANTS}
    optims = {name: make_optimizer(params[name], "adamw", 1e-3) for name in VARIANTS}
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    peak: dict[str, float] = dict.fromkeys(VARIANTS, float("nan"))
    cuda = model.device.type == "cuda"
    for i, batch in enumerate(batches):
        for name in VARIANTS:
            if cuda:
                torch.cuda.synchronize(model.device)
                torch.cuda.reset_peak_memory_stats(model.device)
            began = time.perf_counter()
            steps[name](params[name], batch)
            optims[name].step()
            optims[name].zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize(model.device)
                peak[name] = torch.cuda.max_memory_allocated(model.device) / 2**20
            if i >= warmup:  # the first steps warm up kernels, autotuning and allocators
                times[name].append(time.perf_counter() - began)
    gap = max(float((params["split"][k] - params["unsplit"][k]).detach().abs().max())
              for k in start)
    return {name: {"median_s": statistics.median(times[name]), "peak_mib": peak[name],
                   "adapter_gap": gap} for name in VARIANTS}


def random_weights_copy(model: str, changes: list[str], out: Path, seed: int = 0) -> Path:
    """A checkpoint folder in `out` with `model`'s architecture (its config with `changes`,
    "key=value" each, values as JSON) and tokenizer, and random weights."""
    source = resolve_checkpoint(model) if model in PRESETS else Path(model)
    config = AutoConfig.from_pretrained(source)
    for change in changes:
        key, _, value = change.partition("=")
        if not hasattr(config, key):
            raise ValueError(f"--config {change!r}: the config has no {key!r}")
        setattr(config, key, json.loads(value))
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "vocab.json", "merges.txt", "chat_template.jinja"):
        if (source / name).exists():
            shutil.copy(source / name, out / name)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--corpus", default="shakespeare")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:<i>, or cpu (smoke run)")
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(BASE_DTYPES))
    parser.add_argument("--split", type=int, default=4)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny-llama on synthetic text, batches 1 and 4, 2 timed steps, "
                             "one CPU thread")
    parser.add_argument("--random-weights", action="store_true",
                        help="the model's architecture with random weights (module docstring)")
    parser.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE",
                        help="--random-weights: changes to the architecture's config")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--csv-name", default=None, help="default: bench_gpu.csv on a GPU, "
                        "bench_gpu_cpu_smoke.csv on a CPU")
    args = parser.parse_args(argv)
    if args.quick:
        args.model, args.corpus, args.split, args.block_size = "tiny-llama", "synthetic", 2, 16
        args.batches, args.steps, args.warmup = [1, 4], 2, 1
        args.threads = args.threads or 1
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device, "device")
    except ValueError as exc:
        print(f"bench_gpu: no measurement taken: {exc} (run it on a GPU machine, or pass "
              "--device cpu for a CPU smoke run)", file=sys.stderr)
        return 2
    label = (f"cuda: {torch.cuda.get_device_name(device)}" if device.type == "cuda"
             else "cpu (smoke run, not a GPU measurement)")

    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as scratch:
        name = args.model
        if args.random_weights:
            name = str(random_weights_copy(args.model, args.config, Path(scratch)))
        settings = Settings(model_name=name, corpus=args.corpus, block_size=args.block_size)
        model = SplitModel(name, settings.lora, dtype=BASE_DTYPES[args.dtype], device=device)
        data = federated_text(settings.data, settings.model_name, 1).client(0).train
    if args.random_weights:
        args.model = f"{Path(args.model).name} (random weights{', ' if args.config else ''}" \
                     f"{' '.join(args.config)})"
    print(f"{args.model} ({model.num_layers} layers, "
          f"{sum(p.numel() for p in model.peft_model.parameters()) / 1e6:.0f} M parameters), "
          f"{args.dtype} base, split {args.split}, {args.block_size} tokens per row, on {label}")
    rows = []
    for batch_size in args.batches:
        batches = [data.batch(i, batch_size) for i in range(args.warmup + args.steps)]
        try:
            result = measure(model, batches, args.split, args.warmup)
        except torch.cuda.OutOfMemoryError:
            print(f"batch {batch_size}: out of GPU memory; sweep stops here")
            break
        tokens = batch_size * args.block_size
        for name, r in result.items():
            rows.append({"device": label, "model": args.model, "dtype": args.dtype,
                         "split": args.split, "batch": batch_size, "tokens_per_step": tokens,
                         "variant": name, "median_s": r["median_s"],
                         "tokens_per_s": tokens / r["median_s"],
                         "ratio_to_unsplit": r["median_s"] / result["unsplit"]["median_s"],
                         "peak_mib": r["peak_mib"], "adapter_gap": r["adapter_gap"],
                         "steps": args.steps})
        split_row, unsplit_row = rows[-1], rows[-2]
        print(f"batch {batch_size:4d}: unsplit {unsplit_row['tokens_per_s']:10.0f} tok/s, "
              f"split {split_row['tokens_per_s']:10.0f} tok/s "
              f"(split takes x{split_row['ratio_to_unsplit']:.3f} the unsplit time); "
              f"adapters differ by {split_row['adapter_gap']:.1e} after "
              f"{args.warmup + args.steps} steps")
    if rows:
        name = args.csv_name or ("bench_gpu.csv" if device.type == "cuda"
                                 else "bench_gpu_cpu_smoke.csv")
        args.out.mkdir(parents=True, exist_ok=True)
        write_csv(rows, args.out / name)
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
