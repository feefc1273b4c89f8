"""Benchmark: seconds per split step of each data-plane transport, and the stream's overhead.

One client trains one round of `steps` local steps in three ways, on the same batches, measured
interleaved in one process so machine noise hits all alike:

- ``inprocess``: the split step with no transport (device head, server tail, device backward
  called directly, the device session kept in memory), the floor every transport pays;
- ``flower``: `FlowerTransport` over the in-process grid (the real ClientApp, Flower records and
  `context.state` round trips per step, no SuperLink polling);
- ``stream``: `StreamTransport` over loopback gRPC (the real ClientApp's `train.stream` handler
  in a grid thread); ``stream-fp16`` the same with float16 on the wire.

Every variant calls the server's tail step once per step at the same point of the cycle, so the
interval between consecutive tail calls is one full step (device backward + forward, both
transfers, tail); its median over many steps is the per-step time, free of once-per-round work
(server start, connect, adapter exchange), which is reported apart as the round's fixed cost.
Overhead = a transport's per-step time minus ``inprocess``'s.

    python -m experiments.bench_transport [--models tiny-llama smollm2-135m] [--repeats 5]

smollm2-135m takes seconds per step on 2 CPU cores: give it short rounds (``--steps 6``).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from clients.device import Device
from clients.session import DeviceSession
from edgesplit.protocol import RoundTask, activation_spec
from edgesplit.settings import Settings
from edgesplit.split_model import SplitModel
from fl_app.client_app import app as client_app
from harness.inprocess import InProcessGrid
from strategies.flower_transport import FlowerTransport
from strategies.stream_transport import StreamTransport
from strategies.tail import TailSession
from strategies.transport import TrainJob

VARIANTS = ("inprocess", "flower", "stream", "stream-fp16")
NODE = 1  # the in-process grid's first node (partition 0)


class Bench:
    """Everything one model's measurements share: settings, server model, global adapter."""

    def __init__(self, settings: Settings, split: int) -> None:
        self.settings, self.split = settings, split
        self.model = SplitModel(settings.model_name, settings.lora, seed=settings.seed)
        self.lora = self.model.lora_state()
        self.rounds_run = 0  # each round its own number: a device refuses a round trained already
        self.spec = activation_spec(self.model.config.hidden_size, settings.block_size)
        self.device = Device(settings.model_name, settings.lora, settings.data, partition_id=0,
                             num_partitions=1, node_config={},
                             step_timeout_s=settings.step_timeout_s)
        config = settings.as_dict()
        self.transports = {
            "flower": FlowerTransport(InProcessGrid(client_app, config, 1), self.spec, 60.0),
            "stream": StreamTransport(InProcessGrid(client_app, config, 1, concurrent=True),
                                      self.spec, 60.0),
            "stream-fp16": StreamTransport(InProcessGrid(client_app, config, 1, concurrent=True),
                                           self.spec, 60.0, wire_dtype="float16")}

    def task(self, steps: int) -> RoundTask:
        s = self.settings
        self.rounds_run += 1
        return RoundTask(server_round=self.rounds_run, split=self.split, local_steps=steps,
                         batch_size=s.batch_size, learning_rate=s.learning_rate,
                         optimizer=s.optimizer, seed=s.seed)

    def round(self, variant: str, steps: int) -> tuple[float, list[float]]:
        """Wall seconds of one round of `steps` steps for one client, and its step intervals."""
        task = self.task(steps)
        head, tail_lora = self.model.split_state(self.lora, range(self.split))
        tail = TailSession(self.model, tail_lora, task)
        calls: list[float] = []

        def tail_step(requests: dict) -> dict:
            calls.append(time.perf_counter())
            return {node: tail.step(acts) for node, acts in requests.items()}

        started = time.perf_counter()
        if variant == "inprocess":
            session = DeviceSession(self.device.model(self.split), self.device.shard().train,
                                    task, head)
            for step in range(steps):
                grad = tail_step({NODE: session.activations(step)})[NODE]
                session.apply_gradient(step, grad)
            session.lora()
        else:
            outcome = self.transports[variant].train_round([TrainJob(NODE, task, head)],
                                                           tail_step)[NODE]
            if outcome.failure:
                raise RuntimeError(f"{variant}: {outcome.failure}")
        seconds = time.perf_counter() - started
        return seconds, [b - a for a, b in zip(calls[:-1], calls[1:], strict=True)]


def measure(bench: Bench, steps: int, repeats: int, report: Callable[[str], None]
            ) -> tuple[list[dict], list[dict]]:
    """Interleaved rounds (every repeat times each variant once): per-round and per-step rows."""
    for variant in VARIANTS:  # warm-up: model loads, first connections, allocator caches
        bench.round(variant, 2)
    rounds, intervals = [], []
    for rep in range(repeats):
        for variant in VARIANTS:
            seconds, gaps = bench.round(variant, steps)
            key = {"model": bench.settings.model_name, "variant": variant, "repeat": rep}
            rounds.append({**key, "steps": steps, "round_s": seconds})
            intervals += [{**key, "step": i + 1, "interval_s": g} for i, g in enumerate(gaps)]
        report(f"  repeat {rep + 1}/{repeats} done")
    return rounds, intervals


def summarise(rounds: list[dict], intervals: list[dict]) -> list[dict]:
    """Median step interval, overhead over in-process, and the fixed cost of a round."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rounds):
        per_step, round_s, steps = {}, {}, 0
        for v in VARIANTS:
            per_step[v] = statistics.median(x["interval_s"] for x in intervals
                                            if x["model"] == model and x["variant"] == v)
            mine = [r for r in rounds if r["model"] == model and r["variant"] == v]
            round_s[v], steps = statistics.median(r["round_s"] for r in mine), mine[0]["steps"]
        for v in VARIANTS:
            out.append({
                "model": model, "variant": v, "steps": steps, "s_per_step": per_step[v],
                "overhead_ms_per_step": 1000 * (per_step[v] - per_step["inprocess"]),
                "ratio_to_inprocess": per_step[v] / per_step["inprocess"],
                "round_s": round_s[v], "amortised_s_per_step": round_s[v] / steps,
                "round_fixed_s": round_s[v] - steps * per_step[v]})
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny-llama"])
    parser.add_argument("--split", type=int, default=2, help="decoder layers on the device")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=24, help="local steps per round")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("results"), help="CSV folder")
    parser.add_argument("--name", default="bench_transport",
                        help="CSV file stem: NAME_rounds.csv, NAME_steps.csv, NAME_summary.csv")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as the ClientApp does (flower-facts.md), for every variant alike

    rounds, intervals = [], []
    for name in args.models:
        print(f"{name}: split {args.split}, batch {args.batch_size} x {args.block_size} tokens, "
              f"rounds of {args.steps} steps, {args.repeats} repeats", flush=True)
        settings = Settings(model_name=name, corpus="synthetic", block_size=args.block_size,
                            batch_size=args.batch_size, seed=0)
        more = measure(Bench(settings, args.split), args.steps, args.repeats,
                       lambda line: print(line, flush=True))
        rounds, intervals = rounds + more[0], intervals + more[1]
    summary = summarise(rounds, intervals)

    args.out.mkdir(parents=True, exist_ok=True)
    for path, table in ((args.out / f"{args.name}_rounds.csv", rounds),
                        (args.out / f"{args.name}_steps.csv", intervals),
                        (args.out / f"{args.name}_summary.csv", summary)):
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
        print(f"wrote {path}")
    print(f"{'model':>14} {'variant':>12} {'ms/step':>9} {'overhead ms':>11} {'ratio':>6} "
          f"{'round fixed ms':>14}")
    for r in summary:
        print(f"{r['model']:>14} {r['variant']:>12} {1000 * r['s_per_step']:>9.2f} "
              f"{r['overhead_ms_per_step']:>11.2f} {r['ratio_to_inprocess']:>6.3f} "
              f"{1000 * r['round_fixed_s']:>14.1f}")
    return summary


if __name__ == "__main__":
    main()
