"""Benchmark: a round's wall time next to its compute bound, for round schedules side by side.

The compute bound of a round is the sum of its steps' unsplit compute: every completed client's
local steps as one whole-model LoRA training step each (forward, backward, AdamW; train.batch-size x
data.block-size tokens), every evaluation batch as one whole-model forward (each client's validation
blocks and the server's held-out blocks), and the sample generations. These unit costs are
measured here, in this process, on all the machine's cores, with no Flower process running:
before the first simulation, between the simulations and after the last one; the bound uses
their medians, the same for every variant. A round can only beat it by running device heads and
server tails at once on separate cores.

Each variant (a set of run-config overrides: the round schedule) is one Ray simulation of the
default job through the real Flower runtime (a private SuperLink, harness/runtime.py); variants
run interleaved, `--repeats` times. Round 1 is left out of the ratio: it loads models in every
process and times the devices (calibration). Results: CSV + PNG in the output folder.

    python -m experiments.bench_compute_bound [--local-steps 2] [--rounds 3] [--repeats 1]
    python -m experiments.bench_compute_bound --quick   # tiny-llama, synthetic corpus (~3 min)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from edgesplit.data import federated_text
from edgesplit.optim import make_optimizer
from edgesplit.settings import Settings
from edgesplit.split_model import SplitModel, trainable_copy
from experiments.plotting import save, subplots, write_csv
from experiments.records import make_portable
from harness.runtime import (
    FlowerHarness,
    flwr_bin,
    run_config_arg,
    run_status,
    start_simulation_superlink,
    started_run_id,
)
from strategies.samples import sample_generations

# The round schedules compared. "before": the ServerApp on torch's default threads (one per
# core), one client's tail at a time, the server's evaluation after the devices reply.
# "after": the server evaluates while the devices do, and serves the tails of clients waiting
# together in one pass; "after-1t" also holds the ServerApp to one thread, leaving a core to
# the devices' heads.
BEFORE = {"compute.server-threads": 0, "compute.client-threads": 1, "compute.batch-tails": False,
          "eval.overlap": False}
VARIANTS = {
    "before": BEFORE,
    "after": {**BEFORE, "compute.batch-tails": True, "eval.overlap": True},
    "after-1t": {**BEFORE, "compute.server-threads": 1, "compute.batch-tails": True,
                 "eval.overlap": True},
}


class UnitCosts:
    """Times the unsplit model's training step, evaluation forward and sample generations."""

    def __init__(self, settings: Settings, repeats: int) -> None:
        self.settings, self.repeats = settings, repeats
        self.model = SplitModel(settings.model_name, settings.lora, seed=settings.seed)
        data = federated_text(settings.data, settings.model_name, num_partitions=1)
        self.batch = data.heldout.batch(0, settings.batch_size)
        self.heldout_blocks = len(data.heldout)
        self.samples: list[dict[str, float]] = []

    def measure(self) -> dict[str, float]:
        """One sample of each unit cost (medians of `repeats` timings after a warm-up)."""
        s, model, batch = self.settings, self.model, self.batch
        torch.set_num_threads(len(os.sched_getaffinity(0)))  # the cores this process may use
        params = trainable_copy(model.lora_state())
        optimizer = make_optimizer(params, s.optimizer, s.learning_rate)

        def train_step() -> None:
            with model.training(), model.using_lora(params):
                out = model.full(batch["input_ids"], batch["attention_mask"], batch["labels"])
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        def forward() -> None:
            with torch.no_grad(), model.using_lora(params):
                model.full(batch["input_ids"], batch["attention_mask"], batch["labels"])

        def generate() -> None:
            sample_generations(model, params, s.prompts, s.data_format, s.sample_tokens)

        sample = {name: _median_time(fn, self.repeats if name != "generation_s" else 1)
                  for name, fn in (("train_step_s", train_step), ("eval_forward_s", forward),
                                   ("generation_s", generate))}
        sample["load_avg_1m"] = os.getloadavg()[0]
        self.samples.append(sample)
        return sample

    def median(self, key: str) -> float:
        return statistics.median(s[key] for s in self.samples)

    def bound(self, row: dict) -> dict[str, float]:
        """The compute bound of one metrics row (a round) and its parts."""
        s = self.settings
        steps = row["completed"] * s.local_steps
        evaluated = "heldout_ppl" in row
        val_batches = (row["completed"] - len(row.get("eval_failures", {}))) * s.eval_batches
        held = math.ceil(min(self.heldout_blocks, 4 * s.eval_batches * s.batch_size)
                         / s.batch_size)
        parts = {"train_s": steps * self.median("train_step_s"),
                 "eval_s": (val_batches + held) * self.median("eval_forward_s")
                 if evaluated else 0.0,
                 "generation_s": self.median("generation_s")
                 if evaluated and s.prompts else 0.0}
        return {**parts, "bound_s": sum(parts.values()), "train_steps": steps}


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def simulate(name: str, config: dict, clients: int, out: Path) -> list[dict]:
    """One Ray simulation through a private SuperLink; returns its metrics rows."""
    with tempfile.TemporaryDirectory(prefix="edgesplit-bound-") as home:
        harness = FlowerHarness(Path(home))
        try:
            start_simulation_superlink(harness, "bound")
            run_config = run_config_arg({**config, "run.output-dir": str(out), "run.name": name})
            rc, log = harness.run("flwr-run", [
                flwr_bin("flwr"), "run", ".", "bound", "--run-config", run_config,
                "--federation-config", f"num-supernodes={clients} client-resources-num-cpus=1",
                "--stream"], timeout_s=3600)
            status = run_status(harness, "bound", started_run_id(log))
        finally:
            harness.stop()
    if rc != 0 or status != "finished:completed":
        raise RuntimeError(f"run {name} ended {status} (rc {rc}):\n{log[-4000:]}")
    return [json.loads(line) for line in (out / name / "metrics.jsonl").open()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--clients", type=int, default=8, help="the default job's 8")
    parser.add_argument("--rounds", type=int, default=3, help="the default job's 3")
    parser.add_argument("--local-steps", type=int, default=4, help="the default job's 4")
    parser.add_argument("--repeats", type=int, default=1, help="passes over the variants")
    parser.add_argument("--unit-repeats", type=int, default=5,
                        help="timed unsplit steps per unit-cost sample")
    parser.add_argument("--extra", default="", help="more run-config overrides, k=v ...")
    parser.add_argument("--out", type=Path, default=Path("results/bench_compute_bound"))
    parser.add_argument("--quick", action="store_true",
                        help="tiny-llama on the synthetic corpus, 4 clients, 2 rounds")
    args = parser.parse_args()
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    config: dict = {"train.rounds": args.rounds, "train.local-steps": args.local_steps}
    if args.quick:
        args.clients, config["train.rounds"] = 4, 2
        config.update({"model.name": "tiny-llama", "data.corpus": "synthetic",
                       "data.block-size": 16,
                       "allocation.fixed-split": 2, "eval.sample-tokens": 8})
    for pair in args.extra.split():
        key, value = pair.split("=", 1)
        try:
            config[key] = json.loads(value)  # numbers, true/false, "quoted strings"
        except json.JSONDecodeError:
            config[key] = value
    settings = Settings.from_run_config(config)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = (args.out / "runs").resolve()

    units = UnitCosts(settings, args.unit_repeats)
    print("unit costs:", json.dumps(units.measure()), flush=True)
    results: list[tuple[str, int, list[dict]]] = []
    for repeat in range(args.repeats):
        for variant in args.variants:
            rows = simulate(f"{variant}-{repeat}", {**config, **VARIANTS[variant]},
                            args.clients, runs)
            results.append((variant, repeat, rows))
            print("unit costs:", json.dumps(units.measure()), flush=True)

    table = []
    for variant, repeat, rows in results:
        for row in rows[1:] or rows:
            bound = units.bound(row)
            table.append({"variant": variant, "repeat": repeat, "round": row["round"],
                          "completed": row["completed"], **bound,
                          "wall_s": row["time_round_s"], "train_wall_s": row["time_train_s"],
                          "eval_wall_s": row["time_eval_s"],
                          "wall_over_bound": row["time_round_s"] / bound["bound_s"],
                          **{k: json.dumps(v) for k, v in VARIANTS[variant].items()}})
    summary = []
    for variant in args.variants:
        mine = [r for r in table if r["variant"] == variant]
        summary.append({"variant": variant, "rounds": len(mine),
                        "wall_s_median": statistics.median(r["wall_s"] for r in mine),
                        "bound_s_median": statistics.median(r["bound_s"] for r in mine),
                        "wall_over_bound_median": statistics.median(
                            r["wall_over_bound"] for r in mine),
                        "settings": " ".join(f"{k}={json.dumps(v)}"
                                             for k, v in VARIANTS[variant].items())})
    units_row = {k: round(units.median(k), 4) for k in ("train_step_s", "eval_forward_s",
                                                          "generation_s")}
    make_portable(runs)
    write_csv(table, args.out / "rounds.csv")
    write_csv(summary, args.out / "summary.csv")
    write_csv(units.samples, args.out / "unit_costs.csv")
    print("unit costs (medians):", json.dumps(units_row))
    for row in summary:
        print(f"{row['variant']:>8}: round wall {row['wall_s_median']:7.1f} s, compute bound "
              f"{row['bound_s_median']:7.1f} s, wall / bound {row['wall_over_bound_median']:.2f}"
              f"  ({row['settings']})", flush=True)

    fig, axes = subplots(1, 1)
    ax = axes[0, 0]
    names = [r["variant"] for r in summary]
    ax.bar(names, [r["wall_s_median"] for r in summary], label="round wall time")
    ax.bar(names, [r["bound_s_median"] for r in summary], width=0.4, label="compute bound")
    ax.set(ylabel="seconds per round (median)", title=f"{settings.model_name}, "
           f"{args.clients} clients, {settings.local_steps} local steps")
    ax.legend()
    save(fig, args.out / "bench_compute_bound.png")


if __name__ == "__main__":
    main()
