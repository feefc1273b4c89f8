"""The README's default job (the run config of pyproject.toml, 8 clients), in process.

The real ServerApp and ClientApp code on an in-process grid (`harness.inprocess`): devices are
threads of this process rather than Ray actors, so it needs no Flower runtime, and the run
folder is what `flwr run .` writes. Copies the run's `config.json`, `metrics.jsonl`,
`generations.jsonl` and `figures/` into --out::

    nice -n 19 python -m experiments.default_run [--out results/default_run]
    python -m experiments.default_run --quick --out /tmp/quick/default_run   # tiny-llama
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from edgesplit.settings import Settings
from experiments.records import keep_run
from harness.inprocess import run_in_process

QUICK = {"model.name": "tiny-llama", "data.corpus": "synthetic", "allocation.fixed-split": 2,
         "data.block-size": 16,
         "train.rounds": 2, "train.local-steps": 2, "eval.sample-tokens": 4}
KEPT = ("config.json", "metrics.jsonl", "generations.jsonl", "figures")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/default_run"))
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="tiny-llama, 2 rounds, 4 clients")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="default-run-"))
    try:
        config = {**Settings().as_dict(), **(QUICK if args.quick else {}),
                  "run.output-dir": str(work), "run.name": "run"}
        _, _, rows = run_in_process(config, 4 if args.quick else args.clients)
        keep_run(work / "run", args.out, KEPT)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for r in rows:
        print(f"round {r['round']}: loss {r['train_loss']:.4f}, held-out ppl "
              f"{r['heldout_ppl']:.2f}, splits {[c['split'] for c in r['clients']]}, "
              f"{r['time_round_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
