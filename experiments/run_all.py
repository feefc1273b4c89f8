"""Regenerate every result and figure of docs/results.md with one command.

    python -m experiments.run_all                 # everything into results/ (~75 min, 2 cores)
    python -m experiments.run_all --quick --out /tmp/quick    # small sizes, tiny models (CI)
    python -m experiments.run_all --only seed_allocation train_compare

Each script runs in its own process (own memory and torch threads), one after another so their
timings do not disturb each other; the wall time of each is written to `<out>/run_all.csv`.
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
    "bench_framing": (["--out", "{out}"], ["--repeats", "20", "--out", "{out}"]),
    "bad_inputs": (["--out", "{out}"], ["--out", "{out}"]),
    "instruction_run": (["--out", "{out}/instruction_run"],
                        ["--model", "tiny-llama", "--rounds", "1", "--clients", "2",
                         "--block-size", "256", "--tokens", "8",
                         "--out", "{out}/instruction_run"]),
    "bench_flood": (["--out", "{out}/bench_flood"],
                    ["--model", "tiny-llama", "--local-steps", "20", "--attempts", "200",
                     "--repeats", "1", "--out", "{out}/bench_flood"]),
    "privacy": (["--model", "smollm2-135m", "tiny-llama", "--out", "{out}/privacy"],
                ["--quick", "--out", "{out}/privacy"]),
    # Through the real Flower runtime (a private SuperLink).
    "bench_scale": (["--out", "{out}/bench_scale"], ["--quick", "--out", "{out}/bench_scale"]),
    "bench_compute_bound": (["--out", "{out}/bench_compute_bound"],
                            ["--quick", "--out", "{out}/bench_compute_bound"]),
    "bench_transport_deployment": (["--out", "{out}"], []),
    "bench_agent": (["--out", "{out}/device_agent"], ["--quick", "--out", "{out}/device_agent"]),
    "soak": (["--rounds", "200", "--fault-rate", "0.1", "--out", "{out}/soak/tiny-llama"], []),
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
        rc = subprocess.call([sys.executable, "-m", f"experiments.{name}", *argv_], env=env)
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
