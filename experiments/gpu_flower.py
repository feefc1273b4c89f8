"""The default job through Flower's deployment runtime with the server's model on the GPU,
against the same job with it on the CPU: seconds per round, both runs on one machine, one after
the other (docs/gpu.md).

    python -m experiments.gpu_flower --model .gpu-bundle/models/smollm2-135m   # GPU machine
    python -m experiments.gpu_flower --quick     # CPU smoke run: tiny shapes, CPU only, labelled

A SuperLink and `--clients` SuperNodes on 127.0.0.1 (`harness.deployment`, as the end-to-end
tests start them; no Ray) run `flwr run .` once per `--server-devices` entry with the default
run config, changed only in `model.name` (a random-weights copy of `--model` reshaped by
`--config`: the 1B shape of results/gpu/bench_gpu_1b.csv by default), `compute.server-device`, where
the run folder goes, and `--run-config` extras. Each run's metrics.jsonl gives every round's
wall time (`time_round_s`) and training time (`time_train_s`). Round 1 also loads the models in
every process and times the devices, so the summary compares the median of the later rounds.
Without CUDA a `cuda` entry is refused (no measurement taken); `--quick` runs the CPU only and
writes `gpu_flower_cpu_smoke.csv`, never the GPU file name.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from edgesplit.placement import resolve_device
from experiments.bench_gpu import random_weights_copy
from experiments.plotting import write_csv
from harness.deployment import start_deployment
from harness.runtime import FlowerHarness, flwr_run_metrics

# The 1B shape measured on the H200 for the split step alone (results/gpu/bench_gpu_1b.csv).
ONE_B = ["hidden_size=2048", "intermediate_size=8192", "num_hidden_layers=16",
         "num_attention_heads=32", "num_key_value_heads=8"]


def device_label(server_device: str) -> str:
    """What ran the server's model, in words."""
    device = resolve_device(server_device, "compute.server-device")
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def run_job(harness: FlowerHarness, connection: str, model: Path, server_device: str,
            extra: str, out: Path, timeout_s: float) -> list[dict]:
    """One `flwr run` of the default job; its rounds' timings."""
    name = f"server-{server_device.replace(':', '-')}"
    config = (f'model.name="{model}" compute.server-device="{server_device}" '
              f'run.output-dir="{out}" run.name="{name}" {extra}').strip()
    rounds = flwr_run_metrics(harness, name, connection, config, out / name, timeout_s)
    return [{"server_device": server_device, "round": r["round"], "completed": r["completed"],
             "time_round_s": r["time_round_s"], "time_train_s": r["time_train_s"]}
            for r in rounds]


def summarise(rows: list[dict]) -> list[dict]:
    """Per server device: the median round and training time of rounds 2..; the ratio of each
    device's median round to the first device's."""
    out = []
    for device in dict.fromkeys(r["server_device"] for r in rows):
        later = [r for r in rows if r["server_device"] == device and r["round"] >= 2]
        if not later:
            continue
        out.append({"server_device": device, "rounds": len(later),
                    "median_round_s": statistics.median(r["time_round_s"] for r in later),
                    "median_train_s": statistics.median(r["time_train_s"] for r in later)})
    for row in out:
        row["round_ratio_to_first"] = row["median_round_s"] / out[0]["median_round_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m",
                        help="preset, or a folder with config.json and tokenizer")
    parser.add_argument("--config", nargs="*", default=ONE_B, metavar="KEY=VALUE",
                        help="changes to the model's config (default: the 1B shape)")
    parser.add_argument("--server-devices", nargs="+", default=["cuda", "cpu"])
    parser.add_argument("--clients", type=int, default=2, help="SuperNodes (the default job's "
                        "train.min-clients)")
    parser.add_argument("--run-config", default="", help="more run-config overrides")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="per run")
    parser.add_argument("--out", type=Path, default=Path("results") / "gpu")
    parser.add_argument("--quick", action="store_true",
                        help="CPU smoke run: tiny-llama, server on the CPU, 2 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.model, args.config, args.server_devices = "tiny-llama", [], ["cpu"]
        args.run_config = f"train.rounds=2 {args.run_config}".strip()
    try:
        labels = {device: device_label(device) for device in args.server_devices}
    except ValueError as exc:
        print(f"gpu_flower: no measurement taken: {exc} (run it on a GPU machine, or --quick "
              "for a CPU smoke run)", file=sys.stderr)
        return 2
    csv_name = ("gpu_flower_cpu_smoke.csv" if args.quick or not torch.cuda.is_available()
                else "gpu_flower_rounds.csv")
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-flower-") as scratch:
        model = random_weights_copy(args.model, args.config, Path(scratch) / "model")
        harness = FlowerHarness(Path(scratch) / "flwr-home")
        try:
            connection = start_deployment(harness, args.clients).connection
            for device in args.server_devices:
                for row in run_job(harness, connection, model, device, args.run_config,
                                   Path(scratch) / "outputs", args.timeout_s):
                    row.update(device=labels[device], model=f"{Path(args.model).name} (random "
                               f"weights{', ' if args.config else ''}{' '.join(args.config)})",
                               clients=args.clients)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            survivors = harness.stop()
            if survivors:
                print(f"warning: processes survived the cleanup: {survivors}")
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"wrote {write_csv(rows, args.out / csv_name)}")
    for row in summarise(rows):
        print(f"server on {row['server_device']:>6}: median round {row['median_round_s']:.1f} s,"
              f" training {row['median_train_s']:.1f} s over rounds 2.. ({row['rounds']} rounds;"
              f" x{row['round_ratio_to_first']:.2f} the first device's round)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
