"""Benchmark: seconds per split step of each transport in a real deployment on loopback.

`experiments.bench_transport` times the transports in one process (no SuperLink); this starts a
SuperLink and one SuperNode on 127.0.0.1 (plaintext, a temporary FLWR_HOME, started by
`harness.deployment` as in the e2e tests) and runs one round of tiny-llama per
(transport, local steps) with `flwr run`. A round's training time is a fixed cost (the Flower
messages that start and end it: a fresh ClientApp process each) plus one cost per step, so
the per-step figure is the slope between two step counts:
(time_train_s(more steps) - time_train_s(fewer steps)) / (difference in steps). The metrics'
`client_exchange_s` (mean wait per exchange, fixed costs included) is reported beside it, and the
in-process figures of `results/bench_transport_summary.csv` next to both.

    python -m experiments.bench_transport_deployment [--flower-steps 1 3] [--stream-steps 2 22]
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

from experiments.plotting import write_csv
from harness.deployment import start_deployment
from harness.runtime import FlowerHarness, flwr_run_metrics

ROUND_TIMEOUT_S = 480


def one_round(harness: FlowerHarness, connection: str, transport: str, steps: int,
              out: Path) -> dict:
    """Run one round; return its metrics row (timings of the round's phases)."""
    name = f"{transport}-{steps}"
    config = (f'model.name="tiny-llama" data.corpus="synthetic" train.rounds=1 '
              f'allocation.fixed-split=2 allocation.method="fixed" train.local-steps={steps} '
              f'train.batch-size=4 data.block-size=64 train.min-clients=1 eval.every=0 '
              f'stream.transport="{transport}" faults.step-timeout-s=120 run.output-dir="{out}" '
              f'run.name="{name}"')
    row = flwr_run_metrics(harness, name, connection, config, out / name, ROUND_TIMEOUT_S)[0]
    if row["completed"] != 1:
        raise RuntimeError(f"{name}: the client did not complete: {row['failures']}")
    return {"transport": transport, "steps": steps, "time_train_s": row["time_train_s"],
            "time_round_s": row["time_round_s"], "client_exchange_s": row["client_exchange_s"],
            "server_tail_step_s": row["server_tail_step_s"]}


def summarise(rounds: list[dict], inprocess_csv: Path) -> list[dict]:
    """Per transport: the slope of training time over steps, beside the in-process figure."""
    inprocess = {}
    if inprocess_csv.is_file():
        with inprocess_csv.open() as f:
            inprocess = {r["variant"]: float(r["s_per_step"]) for r in csv.DictReader(f)
                         if r["model"] == "tiny-llama"}
    out = []
    for transport in dict.fromkeys(r["transport"] for r in rounds):
        few, many = sorted((r for r in rounds if r["transport"] == transport),
                           key=lambda r: r["steps"])
        slope = (many["time_train_s"] - few["time_train_s"]) / (many["steps"] - few["steps"])
        out.append({"transport": transport, "steps": f"{few['steps']}->{many['steps']}",
                    "deployment_s_per_step": slope,
                    "deployment_fixed_s": few["time_train_s"] - few["steps"] * slope,
                    "deployment_client_exchange_s": many["client_exchange_s"],
                    "inprocess_s_per_step": inprocess.get(transport, float("nan"))})
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flower-steps", type=int, nargs=2, default=[1, 3])
    parser.add_argument("--stream-steps", type=int, nargs=2, default=[2, 22])
    parser.add_argument("--out", type=Path, default=Path("results"), help="CSV folder")
    parser.add_argument("--inprocess", type=Path,
                        default=Path("results") / "bench_transport_summary.csv",
                        help="experiments.bench_transport's summary, shown alongside")
    args = parser.parse_args(argv)

    rounds = []
    with tempfile.TemporaryDirectory(prefix="edgesplit-bench-") as tmp:
        harness = FlowerHarness(Path(tmp) / "flwr-home")
        try:
            connection = start_deployment(harness, 1).connection
            for transport, counts in (("stream", args.stream_steps),
                                      ("flower", args.flower_steps)):
                for steps in counts:
                    rounds.append(one_round(harness, connection, transport, steps,
                                            Path(tmp) / "outputs"))
                    print(json.dumps(rounds[-1]), flush=True)
        finally:
            survivors = harness.stop()
            if survivors:
                print(f"warning: processes survived the cleanup: {survivors}")
    summary = summarise(rounds, args.inprocess)
    args.out.mkdir(parents=True, exist_ok=True)
    for path, table in ((args.out / "bench_transport_deployment_rounds.csv", rounds),
                        (args.out / "bench_transport_deployment_summary.csv", summary)):
        print(f"wrote {write_csv(table, path)}")
    print(f"{'transport':>10} {'steps':>7} {'deployment s/step':>17} {'fixed s':>8} "
          f"{'exchange s':>10} {'in-process s/step':>17}")
    for r in summary:
        print(f"{r['transport']:>10} {r['steps']:>7} {r['deployment_s_per_step']:>17.4f} "
              f"{r['deployment_fixed_s']:>8.1f} {r['deployment_client_exchange_s']:>10.3f} "
              f"{r['inprocess_s_per_step']:>17.4f}")
    return summary


if __name__ == "__main__":
    main()
