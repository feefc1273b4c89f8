"""Benchmark: one LoRA training step split (head fwd, tail fwd+bwd, head bwd) vs unsplit.

Same model, same batches, same optimizer, measured interleaved in one process so that machine
noise hits both alike. Also times the variant the Flower-message transport runs, where the device
recomputes its head forward before the backward (the graph cannot survive between messages).

    python -m experiments.bench_split_step [--model smollm2-135m] [--split 4] [--steps 10]

Writes `bench_split_step.csv` (per variant: the median step, its ratio to unsplit, and the
largest difference of its adapter from the unsplit one's after every step) and
`bench_split_step_steps.csv` (every timed step of every variant, for intervals).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from edgesplit.data import federated_text
from edgesplit.optim import make_optimizer
from edgesplit.settings import Settings
from edgesplit.split_model import SplitModel, trainable_copy


def step_variants(model: SplitModel, split: int) -> dict[str, Callable[[dict, dict], None]]:
    """Forward + backward of one LoRA step on a batch, by variant: `unsplit` (transformers'
    forward), `split` (head, detached activations, tail, head backward from their gradient) and
    `split_recompute` (the device recomputes its head before the backward, as the Flower-message
    transport must)."""

    def unsplit(params, batch):
        with model.training(), model.using_lora(params):
            loss = model.full(batch["input_ids"], batch["attention_mask"], batch["labels"]).loss
        loss.backward()

    def split_step(params, batch, recompute=False):
        ids, mask = batch["input_ids"], batch["attention_mask"]
        with model.training(), model.using_lora(params):
            with torch.set_grad_enabled(not recompute):
                hidden = model.head(ids, mask, split)
            sent = hidden.detach().requires_grad_()
            model.tail(sent, mask, split, batch["labels"]).loss.backward()
            if recompute:  # the device's second pass, as in the Flower-message transport
                hidden = model.head(ids, mask, split)
        hidden.backward(sent.grad)

    return {"unsplit": unsplit, "split": split_step,
            "split_recompute": lambda p, b: split_step(p, b, recompute=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--corpus", default="shakespeare")
    parser.add_argument("--split", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    settings = Settings(model_name=args.model, corpus=args.corpus, block_size=args.block_size)
    model = SplitModel(args.model, settings.lora)
    data = federated_text(settings.data, settings.model_name, 1).client(0).train
    batches = [data.batch(i, args.batch_size) for i in range(args.steps + 2)]
    start = model.lora_state()

    variants = step_variants(model, args.split)
    params = {name: trainable_copy(start) for name in variants}
    optims = {name: make_optimizer(p, "adamw", 1e-3) for name, p in params.items()}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i, batch in enumerate(batches):
        for name, step in variants.items():
            began = time.perf_counter()
            step(params[name], batch)
            optims[name].step()
            optims[name].zero_grad(set_to_none=True)
            if i >= 2:  # the first steps warm up allocators and kernels
                times[name].append(time.perf_counter() - began)

    medians = {name: statistics.median(t) for name, t in times.items()}
    diffs = {name: max((params[name][k] - params["unsplit"][k]).abs().max().item()
                       for k in start) for name in variants}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"model": args.model, "split": args.split, "batch": args.batch_size,
             "tokens": args.block_size, "variant": name, "median_s": medians[name],
             "ratio_to_unsplit": medians[name] / medians["unsplit"], "steps": len(times[name]),
             "trained_steps": len(batches), "max_adapter_diff_vs_unsplit": diffs[name]}
            for name in variants]
    steps = [{"variant": name, "step": i, "seconds": t}
             for name, values in times.items() for i, t in enumerate(values)]
    for table, name in ((rows, "bench_split_step.csv"), (steps, "bench_split_step_steps.csv")):
        with (out / name).open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
    for r in rows:
        print(f"{r['variant']:>16}: {r['median_s'] * 1000:8.1f} ms/step   "
              f"x{r['ratio_to_unsplit']:.3f} of unsplit, adapter after {len(batches)} steps "
              f"{r['max_adapter_diff_vs_unsplit']:.2e} from unsplit's")


if __name__ == "__main__":
    main()
