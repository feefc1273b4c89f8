"""Soak: many rounds through the real Flower runtime with random client faults; the ServerApp's
memory, the rounds completed and skipped, and the checkpoints, round by round.

One Ray simulation (`flwr run` against a private simulation SuperLink, harness/runtime.py), one
Ray actor per client, every client sampled every round. With `--fault-rate p` each client
misbehaves in a round with probability p (run config `faults.rate`; kinds from `--fault-kinds`,
drawn per (seed, round, partition) by `clients.faults.drawn`). Crash is left out of the default
kinds: Flower 1.41's Ray backend never replaces a killed actor, so every later message to it
fails and the federation shrinks round by round (deployment restarts the ClientApp process).

    python -m experiments.soak --rounds 200 --fault-rate 0.1     # tiny-llama, 8 clients
    python -m experiments.soak --model smollm2-135m --clients 4 --rounds 30 \
        --out results/soak/smollm2

Writes `<out>/soak.csv` (one row per round), `<out>/soak.json` (the summary and its checks) and
`<out>/soak.png`. The checks, from the metrics the ServerApp recorded in its own process:
- memory: current RSS at the end of each round (`server_rss_mb`), after round 3 at most 5 % above
  round 3's, and the peak at most twice the frozen model's bytes + 1 GiB;
- every round has a readable checkpoint holding that round;
- every skipped round says why, and each round lost exactly the clients that drew a fault: the
  partitions of the nodes it dropped (each client's `partition` in the round's metrics) are the
  partitions `clients.faults.drawn` picked for that round.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from clients.faults import drawn, parse_kinds
from edgesplit.presets import resolve_checkpoint
from experiments.plotting import save, subplots, write_csv
from harness.runtime import (
    FlowerHarness,
    flwr_bin,
    run_status,
    start_simulation_superlink,
    started_run_id,
)

GROWTH_LIMIT = 0.05  # RSS after round 3 may grow this much to the end
FLAT_FROM = 3  # the round after which memory must be flat


def model_bytes(model: str) -> int:
    """The frozen model's size: its fp32 safetensors weights."""
    return sum(f.stat().st_size for f in resolve_checkpoint(model).glob("*.safetensors"))


def run_soak(args: argparse.Namespace, run_dir: Path) -> tuple[str, float]:
    """Run the simulation, printing each round as it lands; returns (run status, wall s)."""
    config = (f'model.name="{args.model}" train.rounds={args.rounds} '
              f'train.local-steps={args.local_steps} train.min-clients=2 '
              f'eval.every={args.eval_every} faults.rate={args.fault_rate} '
              f'faults.kinds="{args.fault_kinds}" faults.step-timeout-s={args.step_timeout_s} '
              f'faults.reply-timeout-s={args.reply_timeout_s} run.seed={args.seed} '
              f'run.output-dir="{run_dir.parent}" run.name="{run_dir.name}" {args.extra}')
    with tempfile.TemporaryDirectory(prefix="edgesplit-soak-") as home:
        harness = FlowerHarness(Path(home))
        try:
            start_simulation_superlink(harness, "soak")
            started = time.perf_counter()
            proc = harness.start("flwr-run", [
                flwr_bin("flwr"), "run", ".", "soak", "--run-config", config,
                "--federation-config", f"num-supernodes={args.clients} "
                f"client-resources-num-cpus=1 init-args-num-cpus={args.clients}", "--stream"])
            shown = 0
            while proc.poll() is None:
                time.sleep(5)
                shown = show_new_rounds(run_dir / "metrics.jsonl", shown)
            wall = time.perf_counter() - started
            show_new_rounds(run_dir / "metrics.jsonl", shown)
            log = harness.log("flwr-run")
            status = run_status(harness, "soak", started_run_id(log))
            (Path(args.out) / "flwr-run.log").write_text(log)
        finally:
            survivors = harness.stop()
    if survivors:
        raise RuntimeError(f"processes survived: {survivors}")
    return status, wall


def show_new_rounds(metrics: Path, shown: int) -> int:
    rows = read_rows(metrics)
    for r in rows[shown:]:
        print(f"round {r['round']}: {r['completed']}/{r['sampled']} clients"
              f"{' SKIPPED ' + r['skipped'] if 'skipped' in r else ''} | "
              f"rss {r['server_rss_mb']:.0f} MB, peak {r['server_peak_rss_mb']:.0f} MB | "
              f"{r['time_round_s']:.1f} s", flush=True)
    return len(rows)


def read_rows(metrics: Path) -> list[dict]:
    if not metrics.exists():
        return []
    return [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]


def check(rows: list[dict], run_dir: Path, args: argparse.Namespace, limit_mb: float) -> dict:
    """The soak's summary and the verdict of each check."""
    kinds = parse_kinds(args.fault_kinds)
    unexplained, lost = [], []
    for r in rows:
        faulty = sorted(p for p in range(args.clients)
                        if drawn(args.fault_rate, kinds, args.seed, r["round"], p) is not None)
        partition = {str(c["node"]): c.get("partition", -1) for c in r.get("clients", [])}
        dropped = sorted(partition.get(node, -1) for node in r["failures"])
        if dropped != faulty:
            unexplained.append({"round": r["round"], "drawn": faulty, "dropped": dropped,
                                "failures": r["failures"]})
        if "skipped" in r and not r["skipped"]:
            unexplained.append({"round": r["round"], "skipped": "no reason"})
        path = run_dir / "checkpoints" / f"round-{r['round']:04d}.pt"
        try:
            if torch.load(path, weights_only=True)["round"] != r["round"]:
                lost.append(r["round"])
        except Exception:  # missing or unreadable: lost either way
            lost.append(r["round"])
    rss = [r["server_rss_mb"] for r in rows]
    after = rss[FLAT_FROM - 1:] if len(rss) >= FLAT_FROM else rss
    peak = max(r["server_peak_rss_mb"] for r in rows)
    growth = max(after) / after[0] - 1
    skipped = [{"round": r["round"], "reason": r["skipped"], "failures": r["failures"]}
               for r in rows if "skipped" in r]
    return {
        "rounds_recorded": len(rows), "rounds_completed": sum("train_loss" in r for r in rows),
        "rounds_skipped": skipped, "checkpoints_written": len(rows) - len(lost),
        "checkpoints_lost": lost, "clients_dropped": sum(len(r["failures"]) for r in rows),
        "failures_unexplained": unexplained,
        f"rss_round{FLAT_FROM}_mb": round(after[0], 1), "rss_last_mb": round(rss[-1], 1),
        "rss_max_after_round3_mb": round(max(after), 1),
        "rss_growth_after_round3": round(growth, 4), "peak_rss_mb": round(peak, 1),
        "goal_mb": round(limit_mb, 1),
        "ok_flat": growth <= GROWTH_LIMIT, "ok_within_goal": peak <= limit_mb,
        "ok_checkpoints": not lost, "ok_explained": not unexplained,
    }


def plot(rows: list[dict], summary: dict, path: Path, title: str) -> None:
    fig, axes = subplots(1, 2, panel=(4.2, 2.8))
    rounds = [r["round"] for r in rows]
    ax = axes[0, 0]
    ax.plot(rounds, [r["server_rss_mb"] for r in rows], label="RSS after the round")
    ax.plot(rounds, [r["server_peak_rss_mb"] for r in rows], label="peak RSS so far")
    ax.axhline(summary["goal_mb"], color="k", linestyle=":", label="goal: 2 x model + 1 GiB")
    ax.set(xlabel="round", ylabel="ServerApp memory (MB)", ylim=(0, None), title=title)
    ax.legend(loc="lower right")
    ax = axes[0, 1]
    ax.bar(rounds, [len(r["failures"]) for r in rows], width=1.0, label="clients dropped")
    skipped = [r["round"] for r in rows if "skipped" in r]
    if skipped:
        ax.plot(skipped, [0.2] * len(skipped), "rx", label="round skipped")
    ax.set(xlabel="round", ylabel="clients dropped", title="injected faults")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="upper right")
    save(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--fault-rate", type=float, default=0.1)
    parser.add_argument("--fault-kinds", default="raise,silent,disconnect,straggle")
    parser.add_argument("--local-steps", type=int, default=2)  # faults strike at local step 1
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--step-timeout-s", type=float, default=10.0)
    parser.add_argument("--reply-timeout-s", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra", default="", help="more run-config overrides, 'k=v ...'")
    parser.add_argument("--out", type=Path, default=Path("results/soak/tiny-llama"))
    args = parser.parse_args(argv)
    if args.model == "tiny-llama" and "corpus" not in args.extra:
        args.extra += ' data.corpus="synthetic" allocation.fixed-split=3 data.block-size=16'
    # The SuperLink starts Flower's other executables by name: find them beside this Python.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    run_dir = args.out / "run"
    status, wall = run_soak(args, run_dir)
    rows = read_rows(run_dir / "metrics.jsonl")
    if not rows:
        raise RuntimeError(f"the run recorded no round (status {status})")
    size_mb = model_bytes(args.model) / 2**20
    summary = {"command": " ".join(["python -m experiments.soak", *(argv or sys.argv[1:])]),
               "drop_check": "identity",
               "model": args.model, "model_mb": round(size_mb, 1), "clients": args.clients,
               "rounds_asked": args.rounds, "fault_rate": args.fault_rate,
               "fault_kinds": args.fault_kinds, "run_status": status,
               "wall_s": round(wall, 1),
               **check(rows, run_dir, args, 2 * size_mb + 1024)}
    write_csv([{"round": r["round"], "sampled": r["sampled"], "completed": r["completed"],
                "dropped": len(r["failures"]), "skipped": r.get("skipped", ""),
                "server_rss_mb": round(r["server_rss_mb"], 1),
                "server_peak_rss_mb": round(r["server_peak_rss_mb"], 1),
                "time_round_s": round(r["time_round_s"], 2)} for r in rows],
              args.out / "soak.csv")
    (args.out / "soak.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(rows, summary, args.out / "soak.png",
         f"{args.model}, {args.clients} clients, faults {args.fault_rate:g}/client/round")
    print(json.dumps(summary, indent=2))
    ok = status == "finished:completed" and all(v for k, v in summary.items()
                                                 if k.startswith("ok_"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
