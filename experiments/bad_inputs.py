"""Malformed payloads and configurations against the server, reported as a table.

Runs every case of `harness.bad_inputs.CASES` (tiny-llama, 3 clients, node 2 misbehaves in one
way per case) and writes what the server did with each.

    python -m experiments.bad_inputs [--out results]   # writes bad_inputs.md and bad_inputs.csv
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

from experiments.plotting import write_csv
from harness.bad_inputs import CASES, Bench, Result


def write_table(results: list[Result], out: Path) -> None:
    """`bad_inputs.md` (the table) and `bad_inputs.csv` (the same rows)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"plane": r.case.plane, "kind": r.case.kind, "sent": r.case.sent,
             "reason": r.reason or r.error, "outcome": r.outcome()} for r in results]
    write_csv(rows, out / "bad_inputs.csv")
    handled = sum(not r.problems() for r in results)
    crashes = sum(bool(r.error) for r in results)
    lines = [f"# Bad inputs: {len(results)} kinds tried, {handled} handled, {crashes} crashes",
             "", "Regenerate: `python -m experiments.bad_inputs --out results`. Node 2 of 3 "
             "misbehaves (tiny-llama, 1 round, 2 local steps); `flower` and `stream` are the "
             "round's transport, `config` a run started with one bad value.", "",
             "| plane | kind | what was sent | error / reason recorded | outcome |",
             "|---|---|---|---|---|"]
    for row in rows:
        cells = [str(v).replace("|", "\\|").replace("\n", " ") for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    (out / "bad_inputs.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.ERROR)  # the expected drops, one per case
    with tempfile.TemporaryDirectory() as folder:
        bench = Bench(Path(folder))
        results = []
        for case in CASES:
            results.append(bench.run(case))
            print(json.dumps({"kind": case.kind, "reason": results[-1].reason,
                              "outcome": results[-1].outcome()}))
    write_table(results, args.out)
    print(f"{len(results)} kinds; table in {args.out / 'bad_inputs.md'}")


if __name__ == "__main__":
    main()
