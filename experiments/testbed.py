"""The emulated edge testbed: the cost model and the allocators judged by the clock.

Builds the fleet of a TOML file on this machine (`harness.testbed`: each device a SuperNode and
its resident device agent in their own network namespace, behind a veth shaped to its class's
uplink and downlink, in a cgroup with its class's CPU share and memory; the ServerApp in the
server's cgroup, the SuperLink in one of its own), and runs real Flower rounds through it with
`stream.pace-links` on and the makespan cost model calibrated on the testbed itself. Every round's
metrics hold, per client, the cost model's seconds (device, transfer, server, queueing) beside
the measured ones; this script tabulates them, plots them and computes the median absolute
relative error of each client's modelled data-plane time (device compute + its wait on the
stream) against the clock.

`--compare` runs the same fleet and seeds under fp, every fixed split (edge-only is split 1),
and random, one after the other on the same testbed, and writes a table and a figure of the
measured round makespan (the slowest client's data-plane time, and the training phase's wall
time with Flower's control plane) beside the modelled makespan and energy.

`--verdict` (issue 23, `experiments.testbed_verdict`) runs fp (the default objective, and with
time and energy as fp-energy, seed A's as fp-paper), edge-only, three fixed splits
bracketing the best one, local-only (and with `--random` random) `--repeats` times, each repeat
with its own seed and the methods' order rotated, evaluating the held-out perplexity every
round; it goes on past a failed run (and says so) and writes `verdict_rounds.csv` (per method,
repeat and round), `verdict.csv` (per method: mean and 95% interval over repeats of rounds 2+,
the round reaching the target perplexity and the time to it) and `verdict.png`.

Everything the testbed creates is removed on exit, on failure and on Ctrl-C/SIGTERM; the script
checks and says so at the end. Needs root, `ip`/`tc` and the cgroup cpu and memory controllers.
Usage (docs/testbed.md)::

    python -m experiments.testbed [--fleet experiments/testbed_fleet.toml] [--rounds 2]
        [--local-steps 80] [--server-queue fifo] [--out results/testbed] [--compare]
        [--model smollm2-135m] [--no-agents]
    python -m experiments.testbed --verdict --fleet experiments/fleet_weak_devices.toml
        --model smollm2-135m --layers 30 [--repeats 3] [--rounds 3] [--local-steps 2]
        [--batch-size 2] [--random] [--target-ppl X] [--out results/verdict/weak_devices]
        [--resume]

Writes to `--out`: `clients.csv` (one row per run, round and client), `rounds.csv` (one row per
run and round), `summary.json` (errors, settings, load averages), `fit.png`; with `--compare`
also `compare.csv`, `compare.md` and `compare.png`; `runs/<run>.jsonl` (each run's metrics, also
of a run that failed or ran out of time, as far as it got, with `runs/<run>.status.json` and
`runs/<run>.testbed.json`, kept as soon as the run ends: `--resume` keeps the completed ones and
makes only the rest) and `logs/` (every process's log: SuperLink, SuperExec, each SuperNode with
its ClientApps' lines, each device agent, each `flwr run`; a resumed sitting's in `logs-2/`, ...),
kept whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from experiments import testbed_verdict
from experiments.plotting import METHOD_STYLE, save, subplots, write_csv
from experiments.records import portable, write_portable
from harness.runtime import FlowerHarness
from harness.testbed import Fleet, Testbed, leftovers, load_fleet, measure_mbit

FLEET = Path(__file__).with_name("testbed_fleet.toml")


#: Modelled part(s) and measured part(s) compared per client (`strategies.round_metrics`).
PARTS = {
    "dataplane": (("modelled_s",), ("measured_dataplane_s",)),
    "device": (("modelled_device_s",), ("measured_device_s",)),
    "transfer": (("modelled_transfer_s",), ("measured_transfer_s",)),
    "server+queue": (("modelled_server_s", "modelled_queue_s"),
                     ("measured_server_s", "measured_queue_s")),
    # The same two with the server's queue modelled first come first served (the real tail
    # worker) instead of the allocator's shares (`makespan_model.fifo_queue_s`).
    "dataplane-fifo": (("modelled_fifo_s",), ("measured_dataplane_s",)),
    "server+queue-fifo": (("modelled_server_s", "modelled_fifo_queue_s"),
                          ("measured_server_s", "measured_queue_s")),
    # From the data plane's end to the accepted reply: the modelled adapter upload, plus what
    # the reply took beyond it the round before (serialising, Flower's delivery).
    "reply": (("reply_overhead_before_s", "modelled_exchange_s"), ("measured_reply_s",)),
    # The client's whole round (round message to final reply): the FIFO data plane and the
    # adapter upload, plus the control plane's time for that client measured the round before
    # beyond its modelled upload (ClientApp start-up, message delivery), which the cost model
    # does not have.
    "round": (("control_plane_before_s", "modelled_fifo_s", "modelled_exchange_s"),
              ("measured_s",)),
}


def load_average() -> str:
    """The machine's 1, 5 and 15 minute load averages (other work distorts CPU shares)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_config(args: argparse.Namespace, fleet: Fleet, name: str,
               overrides: Mapping[str, object]) -> dict[str, object]:
    """The run config of one testbed run."""
    config: dict[str, object] = {
        "model.name": args.model, "data.corpus": args.corpus, "train.rounds": args.rounds,
        "train.local-steps": args.local_steps, "train.batch-size": args.batch_size,
        "data.block-size": args.block_size, "run.seed": args.seed,
        "allocation.cost-model": "makespan",
        "allocation.server-queue": args.server_queue,
        "allocation.calibration": "track", "stream.pace-links": True, "eval.every": 0,
        "eval.sample-prompts": "",
        "faults.step-timeout-s": 600.0, "run.output-dir": str(args.work / "runs"), "run.name": name}
    if fleet.server_class:
        config["allocation.server-class"] = fleet.server_class
    if not args.no_agents:  # loaded agents answer in seconds: a silent device costs 3 min, not 10
        config["faults.reply-timeout-s"] = 180.0
    return {**config, **overrides}


def client_rows(run: str, rows: Sequence[Mapping]) -> list[dict]:
    """One row per round and completed client: modelled and measured parts, relative errors."""
    out = []
    # node -> its control-plane seconds in its last round, and its reply's, each beyond the
    # modelled upload (runs recorded before the model had one: 0)
    control: dict[str, float] = {}
    overhead: dict[str, float] = {}
    for row in rows:
        for c in row["clients"]:
            if c.get("measured_dataplane_s") is None:
                continue
            node = str(c["node"])
            c = {"modelled_exchange_s": 0.0, **c,
                 **({"control_plane_before_s": control[node]} if node in control else {}),
                 **({"reply_overhead_before_s": overhead[node]} if node in overhead else {})}
            control[node] = (c["measured_s"] - c["measured_dataplane_s"]
                             - c["modelled_exchange_s"])
            if c.get("measured_reply_s") is not None:
                overhead[node] = c["measured_reply_s"] - c["modelled_exchange_s"]
            entry = {"run": run, "round": row["round"], "node": str(c["node"]),
                     "class": c.get("label", ""), "split": c["split"],
                     "measured_start_s": c.get("measured_start_s"),
                     "resent": c.get("resent", 0),
                     "server_share": c.get("server_share"), "rate_bps": c.get("rate_bps"),
                     "bytes_up": c["bytes_up"], "bytes_down": c["bytes_down"]}
            for part, (modelled, measured) in PARTS.items():
                known = all(c.get(k) is not None for k in (*modelled, *measured))
                m = sum(c[k] for k in modelled) if known else None
                x = sum(c[k] for k in measured) if known else None
                entry[f"modelled_{part}_s"], entry[f"measured_{part}_s"] = m, x
                entry[f"rel_error_{part}"] = (m - x) / x if known and x > 0 else None
            entry["measured_server_pacing_s"] = c.get("measured_server_pacing_s")
            entry["control_plane_s"] = control[node] + c["modelled_exchange_s"]
            out.append(entry)
    return out


def round_rows(run: str, rows: Sequence[Mapping], local_steps: int,
               load: str) -> list[dict]:
    """One row per round: the measured makespan (slowest client's data-plane time; the span
    from the first data plane's start to the last one's end, which a "fifo" server's model
    predicts; the training phase's wall time with the control plane) beside the modelled one
    and energy; bytes on the wire both ways, the held-out perplexity, and how many sampled
    clients the allocator excluded or the round lost."""
    out = []
    for row in rows:
        done = [c for c in row["clients"] if c.get("measured_dataplane_s") is not None]
        started = [c for c in done if c.get("measured_start_s") is not None]
        failures = row.get("failures", {})
        out.append({
            "run": run, "round": row["round"], "completed": row["completed"],
            "sampled": row["sampled"],
            "splits": " ".join(str(c["split"]) for c in row["clients"]),
            "measured_makespan_s": max((c["measured_dataplane_s"] for c in done), default=None),
            "measured_span_s": (max(c["measured_start_s"] + c["measured_dataplane_s"]
                                    for c in started)
                                - min(c["measured_start_s"] for c in started)
                                if started else None),
            "measured_train_phase_s": row["time_train_s"],
            "measured_round_s": row.get("time_round_s"),
            "modelled_makespan_s": (row["modelled_delay_s"] or 0.0) * local_steps,
            "modelled_energy_j": (row["modelled_energy_j"] or 0.0) * local_steps,
            "bytes_wire": row.get("bytes_up", 0) + row.get("bytes_down", 0),
            "heldout_ppl": row.get("heldout_ppl"),
            # Left out by the allocator (memory holds no split it may give) or lost.
            "excluded_memory": sum(r.startswith("allocation:") for r in failures.values()),
            "failed": sum(not r.startswith("allocation:") for r in failures.values()),
            "calibrate_s": row.get("time_calibrate_s"), "load_average": load})
    return out


def median_abs_error(clients: Sequence[Mapping], part: str) -> float | None:
    errors = [abs(c[f"rel_error_{part}"]) for c in clients
              if c.get(f"rel_error_{part}") is not None]
    return float(np.median(errors)) if errors else None


def plot_fit(clients: Sequence[Mapping], path: Path, title: str) -> None:
    """Modelled against measured seconds per client and round, one panel per part."""
    fig, axes = subplots(1, len(PARTS), panel=(3.2, 3.2))
    axes = axes[0]
    classes = sorted({c["class"] for c in clients})
    for ax, part in zip(axes, PARTS, strict=True):
        for i, name in enumerate(classes):
            mine = [c for c in clients if c["class"] == name
                    and c[f"modelled_{part}_s"] is not None]
            ax.scatter([c[f"measured_{part}_s"] for c in mine],
                       [c[f"modelled_{part}_s"] for c in mine], s=14, color=f"C{i}",
                       label=name)
        values = [v for c in clients for v in (c[f"measured_{part}_s"], c[f"modelled_{part}_s"])
                  if v is not None and v > 0]
        if values:
            lo, hi = min(values) / 1.5, max(values) * 1.5
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.set_xscale("log")
            ax.set_yscale("log")
        error = median_abs_error(clients, part)
        ax.set_title(f"{part}: median |error| "
                     + ("n/a" if error is None else f"{100 * error:.0f}%"))
        ax.set_xlabel("measured s per round")
    axes[0].set_ylabel("modelled s per round")
    axes[0].legend(loc="upper left")
    fig.suptitle(title)
    save(fig, path)


def plot_compare(table: Sequence[Mapping], path: Path) -> None:
    """Measured round makespan (data plane) per allocator and round, beside the modelled one,
    and modelled energy."""
    fig, axes = subplots(1, 2, panel=(4.5, 3.4))
    ax_t, ax_e = axes[0]
    names = list(dict.fromkeys(r["allocator"] for r in table))
    rounds = sorted({r["round"] for r in table})
    width = 0.8 / (2 * len(rounds))
    x = np.arange(len(names))
    for i, rnd in enumerate(rounds):
        mine = {r["allocator"]: r for r in table if r["round"] == rnd}
        got = [mine.get(n) for n in names]
        offset = (2 * i - len(rounds)) * width + width / 2
        ax_t.bar(x + offset, [g["measured_makespan_s"] if g else 0 for g in got], width,
                 color=f"C{i}", label=f"round {rnd}, measured")
        ax_t.bar(x + offset + width, [g["modelled_makespan_s"] if g else 0 for g in got], width,
                 color=f"C{i}", alpha=0.4, label=f"round {rnd}, modelled")
    ax_t.set_xticks(x, names, rotation=20)
    ax_t.set_ylabel("round makespan, data plane (s)")
    ax_t.legend(fontsize=7)
    energy = [float(np.mean([r["modelled_energy_j"] for r in table if r["allocator"] == n]))
              for n in names]
    ax_e.bar(x, energy, color=[METHOD_STYLE.get(n, ("C7",))[0] for n in names])
    ax_e.set_xticks(x, names, rotation=20)
    ax_e.set_ylabel("modelled energy per round (J)")
    save(fig, path)


def compare_table(rounds: Sequence[Mapping], clients: Sequence[Mapping],
                  runs: Sequence[str]) -> list[dict]:
    """One row per allocator and round: measured and modelled makespan, how many clients
    completed (a dropped client's tails no longer contend, which flatters its round: compare
    rounds in which every allocator kept every client), the round's median error."""
    table = []
    for run in runs:
        for r in (r for r in rounds if r["run"] == run):
            mine = [c for c in clients if c["run"] == run and c["round"] == r["round"]]
            table.append({
                "allocator": run, "round": r["round"],
                "completed": f"{r['completed']}/{r['sampled']}",
                **{k: r[k] for k in ("measured_makespan_s", "measured_span_s",
                                      "measured_train_phase_s", "modelled_makespan_s",
                                      "modelled_energy_j", "splits", "load_average")},
                "median_abs_error_dataplane": median_abs_error(mine, "dataplane")})
    return table


def markdown(table: Sequence[Mapping]) -> str:
    edge = {r["round"]: r for r in table if r["allocator"] == "edge-only"}
    lines = ["| allocator | round | clients completed | measured makespan (s) | vs edge-only | "
             "measured span (s) | train phase (s) | modelled makespan (s) | "
             "modelled energy (J) | median abs error | splits | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        base = edge.get(r["round"])
        versus = (f"{100 * (r['measured_makespan_s'] / base['measured_makespan_s'] - 1):+.0f}%"
                  if base else "")
        error = r["median_abs_error_dataplane"]
        span = r["measured_span_s"]
        lines.append(
            f"| {r['allocator']} | {r['round']} | {r['completed']} | "
            f"{r['measured_makespan_s']:.1f} | {versus} | "
            f"{'n/a' if span is None else f'{span:.1f}'} | "
            f"{r['measured_train_phase_s']:.1f} | {r['modelled_makespan_s']:.1f} | "
            f"{r['modelled_energy_j']:.1f} | "
            f"{'n/a' if error is None else f'{100 * error:.0f}%'} | {r['splits']} | "
            f"{r['load_average']} |")
    return "\n".join(lines) + "\n"


def allocators(layers: int) -> list[tuple[str, dict[str, object]]]:
    """fp (the run config's default objective), fp on makespan alone, every
    fixed split (split 1 = edge-only), random."""
    runs: list[tuple[str, dict[str, object]]] = [
        ("fp", {"allocation.method": "fp"}),
        ("fp-makespan", {"allocation.method": "fp", "allocation.objective-weights": "1,0,0"}),
        ("edge-only", {"allocation.method": "edge-only"})]
    runs += [(f"fixed-{k}", {"allocation.method": "fixed",
                             "allocation.fixed-split": k}) for k in range(2, layers)]
    return runs + [("random", {"allocation.method": "random"})]


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, with the defaults that depend on the mode filled in."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fleet", type=Path, default=FLEET)
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--layers", type=int, default=4, help="the model's decoder layers "
                        "(--compare runs every fixed split below it)")
    parser.add_argument("--corpus", default="shakespeare")
    parser.add_argument("--rounds", type=int, default=None,
                        help="default 2 (--verdict: 3, round 1 calibrates)")
    parser.add_argument("--local-steps", type=int, default=None,
                        help="default 80 (--verdict: 2)")
    parser.add_argument("--server-queue", default="fifo", help="the makespan model's server "
                        "(fifo: what the stream transport does; shares: the fluid model)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default 8 (--verdict: 2)")
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--allocator", default="fp", help="without --compare")
    parser.add_argument("--compare", action="store_true")
    parser.add_argument("--only", default="", help="--compare, --verdict: comma-separated "
                        "subset of the methods")
    parser.add_argument("--verdict", action="store_true", help="issue 23: fp, edge-only, fixed "
                        "splits bracketing the best, local-only (and --random), --repeats times "
                        "each with its own seed, the order rotated per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="--verdict: repeats per method")
    parser.add_argument("--random", action="store_true", help="--verdict: also random")
    parser.add_argument("--target-ppl", type=float, default=None, help="--verdict: held-out "
                        "perplexity to time (default: the highest of the runs' last-round ones, "
                        "which every run reaches)")
    parser.add_argument("--out", type=Path, default=None, help="default results/testbed "
                        "(--verdict: results/verdict/<fleet file's name without fleet_>)")
    parser.add_argument("--timeout-s", type=float, default=1800.0, help="per run")
    parser.add_argument("--resume", action="store_true", help="keep the runs of --out that "
                        "completed (an interrupted verdict, a regime split over sittings) and "
                        "make only the rest of the plan")
    parser.add_argument("--tabulate", type=Path, default=None, metavar="DIR",
                        help="only rewrite the tables of a finished testbed folder")
    parser.add_argument("--no-agents", action="store_true", help="no device agents: every "
                        "Flower message starts a ClientApp that imports torch and builds the "
                        "model at the device's CPU share (the testbed before issue 28)")
    args = parser.parse_args(argv)
    defaults = ({"rounds": 3, "local_steps": 2, "batch_size": 2} if args.verdict
                else {"rounds": 2, "local_steps": 80, "batch_size": 8})
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.out is None:
        args.out = (Path("results/verdict") / args.fleet.stem.removeprefix("fleet_")
                    if args.verdict else Path("results/testbed"))
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.tabulate:
        tabulate(args.tabulate)
        return
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` cleans up like Ctrl-C
    fleet = load_fleet(args.fleet)
    args.out.mkdir(parents=True, exist_ok=True)
    verdict_runs: list[dict] = []
    if args.verdict:
        methods = testbed_verdict.methods(args.layers, args.random)
        if args.only:
            methods = [m for m in methods if m[0] in args.only.split(",")]
        verdict_runs = testbed_verdict.plan(methods, args.repeats, args.seed)
        plan = [(r["run"], r["overrides"]) for r in verdict_runs]
    else:
        plan = (allocators(args.layers) if args.compare
                else [(args.allocator, {"allocation.method": args.allocator})])
        if args.only:
            plan = [p for p in plan if p[0] in args.only.split(",")]
    before = leftovers()
    clients: list[dict] = []
    rounds: list[dict] = []
    links: list[dict] = []
    loads = {"start": load_average()}
    outcome = "completed"
    failed_runs: dict[str, str] = {}  # --verdict goes on past a failed run and says so
    with tempfile.TemporaryDirectory(prefix="edgesplit-testbed-") as scratch:
        args.work = Path(scratch)
        configs = {name: run_config(args, fleet, name, overrides) for name, overrides in plan}
        kept = completed_runs(args.out, configs) if args.resume else []
        if kept:
            print(f"[testbed] --resume: keeping {len(kept)} completed runs of {args.out}: "
                  f"{', '.join(kept)}", flush=True)
        name, load = "", ""
        try:
            with (Testbed(fleet, FlowerHarness(args.work / "flwr-home"),
                          agents=not args.no_agents) if len(kept) < len(plan)
                  else contextlib.nullcontext()) as bed:
                for index, device_class in enumerate(fleet.devices if bed is not None else []):
                    device = fleet.classes[device_class]
                    links.append({"device": index, "class": device_class,
                                  "uplink_mbit": device.uplink_mbit,
                                  "measured_uplink_mbit": measure_mbit(bed, index, "up", 250_000),
                                  "downlink_mbit": device.downlink_mbit,
                                  "measured_downlink_mbit": measure_mbit(bed, index, "down",
                                                                         500_000)})
                for name in configs:
                    if name in kept:
                        new_clients, new_rounds = tabulate_run(args.out, name, args.local_steps)
                        clients, rounds = clients + new_clients, rounds + new_rounds
                        name = ""
                        continue
                    started, load = time.perf_counter(), load_average()
                    print(f"[testbed] {name}: running (load average {load})", flush=True)
                    try:
                        completed_run(bed, args, name, configs[name])
                    except RuntimeError as exc:
                        if not args.verdict:
                            raise
                        failed_runs[name] = str(exc)[:300]
                        print(f"[testbed] {name} failed, going on: {exc!s:.300}", flush=True)
                    keep_run(args.work, args.out, name, load, configs[name])
                    new_clients, new_rounds = tabulate_run(args.out, name, args.local_steps)
                    clients, rounds = clients + new_clients, rounds + new_rounds
                    print(f"[testbed] {name}: {time.perf_counter() - started:.0f} s, "
                          f"makespans {[round(r['measured_makespan_s'] or 0, 1) for r in new_rounds]}",  # noqa: E501
                          flush=True)
                    name = ""
        except Exception as exc:  # keep what the failed run measured, as far as it got
            outcome = f"{name or 'setup'}: {type(exc).__name__}: {str(exc)[:300]}"
            print(f"[testbed] stopped: {outcome}", flush=True)
            if name:
                keep_run(args.work, args.out, name, load, configs[name])
                new_clients, new_rounds = tabulate_run(args.out, name, args.local_steps)
                clients, rounds = clients + new_clients, rounds + new_rounds
                name = ""
        finally:
            if name:  # interrupted (Ctrl-C, SIGTERM) mid-run: keep what it measured
                keep_run(args.work, args.out, name, load, configs[name])
            loads["end"] = load_average()
            left = {k: v for k, v in leftovers().items() if v != before[k]}
            print(f"[testbed] cleaned up: {'yes' if not left else left}", flush=True)
            keep_logs(args.work, args.out, resumed=bool(kept))
    if links:  # a resumed verdict with nothing left to run keeps the links it measured
        write_csv(links, args.out / "links.csv")
    summary = {
        "fleet": portable(str(args.fleet.resolve())), "devices": fleet.devices, "model": args.model,
        "agents": not args.no_agents, "outcome": outcome,
        "rounds": args.rounds, "local_steps": args.local_steps, "batch_size": args.batch_size,
        "block_size": args.block_size, "seed": args.seed, "runs": [p[0] for p in plan],
        "kept_from_earlier": kept,
        "server_queue": args.server_queue, "load_average": loads, "leftovers_after": left}
    if args.verdict:
        summary["verdict"] = {
            "runs": [{k: v for k, v in r.items() if k != "overrides"} for r in verdict_runs],
            "repeats": args.repeats, "target_ppl_given": args.target_ppl,
            "failed_runs": failed_runs, "fleet_name": args.fleet.stem.removeprefix("fleet_")}
        if failed_runs and outcome == "completed":
            outcome = f"runs failed: {sorted(failed_runs)}"
    write_tables(args.out, summary, clients, rounds, compare=args.compare)
    if outcome != "completed":
        raise SystemExit(f"[testbed] {outcome}")


def completed_run(bed: Testbed, args: argparse.Namespace, name: str,
                  config: Mapping[str, object]) -> None:
    """Run `name` on the testbed; RuntimeError (with its log's tail) unless it completed."""
    rc, log = bed.run(dict(config), timeout_s=args.timeout_s)
    metrics = args.work / "runs" / name / "metrics.jsonl"
    if rc != 0 or not metrics.exists():
        raise RuntimeError(f"run {name} failed (exit {rc}):\n{log[-3000:]}")
    status = json.loads((metrics.parent / "status.json").read_text())
    if status.get("status") != "completed":
        raise RuntimeError(f"run {name}: {status}")


def tabulate_run(out: Path, name: str, local_steps: int) -> tuple[list[dict], list[dict]]:
    """The client and round rows of run `name`'s finished rounds, from its records kept in
    `out` (none if it has none)."""
    metrics = out / "runs" / f"{name}.jsonl"
    rows = [json.loads(line) for line in metrics.open()] if metrics.exists() else []
    testbed = out / "runs" / f"{name}.testbed.json"
    load = json.loads(testbed.read_text())["load_average"] if testbed.exists() else ""
    return client_rows(name, rows), round_rows(name, rows, local_steps, load)


def _comparable(config: Mapping[str, object]) -> dict[str, object]:
    """A run's config without the scratch folder it ran in."""
    return {k: v for k, v in config.items() if k != "run.output-dir"}


def keep_run(work: Path, out: Path, name: str, load_before: str,
             config: Mapping[str, object]) -> None:
    """Copy run `name`'s metrics (as far as it got) and status from the testbed's scratch
    folder to `out/runs` as soon as it ends, with its run config and the machine's load average
    before and after it (`<run>.testbed.json`): what `--resume` finds after an interruption."""
    run, kept = work / "runs" / name, out / "runs"
    kept.mkdir(parents=True, exist_ok=True)
    if _completed(kept / f"{name}.status.json") and not _completed(run / "status.json"):
        # A try that did not complete never replaces a completed record (a resumed regime
        # interrupted again keeps what it had); its metrics are kept beside it.
        if (run / "metrics.jsonl").is_file():
            shutil.copyfile(run / "metrics.jsonl", kept / f"{name}.incomplete.jsonl")
        print(f"[testbed] {name}: kept the completed record; this try's metrics in "
              f"{name}.incomplete.jsonl", flush=True)
        return
    for stale in kept.glob(f"{name}.*"):  # a rerun replaces every record of the earlier try
        stale.unlink()
    if (run / "metrics.jsonl").is_file():
        shutil.copyfile(run / "metrics.jsonl", kept / f"{name}.jsonl")
    if (run / "status.json").is_file():
        write_portable(run / "status.json", kept / f"{name}.status.json")
    record = {"load_average": f"{load_before} -> {load_average()}",
              "run_config": _comparable(config)}
    (kept / f"{name}.testbed.json").write_text(json.dumps(record, indent=1) + "\n")


def _completed(status: Path) -> bool:
    return status.is_file() and json.loads(status.read_text()).get("status") == "completed"


def completed_runs(out: Path, configs: Mapping[str, Mapping[str, object]]) -> list[str]:
    """The runs of `configs` whose records in `out` say they completed with the same run
    config (`--resume` keeps them; a run made with other settings is run again)."""
    kept, runs = [], out / "runs"
    for name, config in configs.items():
        status, record = runs / f"{name}.status.json", runs / f"{name}.testbed.json"
        if not (_completed(status) and record.is_file() and (runs / f"{name}.jsonl").is_file()):
            continue
        if json.loads(record.read_text()).get("run_config") != _comparable(config):
            print(f"[testbed] --resume: {name} ran with another config: running it again",
                  flush=True)
            continue
        kept.append(name)
    return kept


def keep_logs(work: Path, out: Path, resumed: bool) -> None:
    """Copy every process's log from the testbed's scratch folder to `out/logs` (after a
    `--resume`, to `out/logs-2`, `logs-3`, ...: the earlier sittings' logs stay)."""
    logs = work / "flwr-home" / "logs"
    target = out / "logs"
    if resumed:
        sitting = 2
        while (target := out / f"logs-{sitting}").exists():
            sitting += 1
    if logs.is_dir():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(logs, target)
    print(f"[testbed] logs and run metrics kept in {out}", flush=True)


def write_tables(out: Path, summary: dict, clients: list[dict], rounds: list[dict],
                 compare: bool) -> None:
    """clients.csv, rounds.csv, fit.png, summary.json (with the errors) and, comparing,
    compare.csv/.md/.png; for a verdict (`summary["verdict"]`) verdict_rounds.csv, verdict.csv
    and verdict.png."""
    write_csv(clients, out / "clients.csv")
    write_csv(rounds, out / "rounds.csv")
    if "verdict" in summary:
        verdict = summary["verdict"]
        verdict["target_ppl"] = testbed_verdict.write(
            out, verdict["runs"], rounds, verdict["target_ppl_given"],
            f"{summary['model']} on {verdict['fleet_name']}: {verdict['repeats']} repeats")
    summary["median_abs_error"] = {part: median_abs_error(clients, part) for part in PARTS}
    plot_fit(clients, out / "fit.png", f"{summary['model']}, {len(summary['devices'])} "
             "emulated devices: modelled vs measured")
    if compare:
        table = compare_table(rounds, clients, summary["runs"])
        write_csv(table, out / "compare.csv")
        (out / "compare.md").write_text(markdown(table))
        plot_compare(table, out / "compare.png")
        summary["compare"] = table
        print(markdown(table))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["median_abs_error"], indent=2))


def tabulate(out: Path) -> None:
    """Rewrite the tables of a finished testbed folder from its runs' metrics (after a change
    to how they are tabulated; no testbed needed)."""
    summary = json.loads((out / "summary.json").read_text())
    loads = {}
    with (out / "rounds.csv").open() as f:
        for row in csv.DictReader(f):
            loads.setdefault(row["run"], row["load_average"])
    clients, rounds = [], []
    for run in summary["runs"]:
        rows = [json.loads(line) for line in (out / "runs" / f"{run}.jsonl").open()]
        clients += client_rows(run, rows)
        rounds += round_rows(run, rows, summary["local_steps"], loads.get(run, ""))
    write_tables(out, summary, clients, rounds, compare="compare" in summary)


if __name__ == "__main__":
    main()
