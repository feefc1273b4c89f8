"""An instruction dataset made from the shipped Shakespeare corpus: "continue this speech" pairs.

    python -m experiments.continue_speech_data --out outputs/data/continue_speech.jsonl

Every speech of at least `--prompt-lines` + 1 lines gives one record: `instruction` names the
speaker and the play, `input` holds the speech's first lines, `output` the line that follows,
and `role` ("play/ROLE") is its natural group, so `data.partition-by = "role"` gives each client
whole speaking roles as the built-in corpus does. The same file every time (no randomness).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgesplit.corpus import load_corpus

DEFAULT_OUT = Path("outputs/data/continue_speech.jsonl")


def continue_speech_records(prompt_lines: int = 2) -> list[dict[str, str]]:
    """One record per speech with more than ``prompt_lines`` lines, in corpus order."""
    corpus = load_corpus("shakespeare")
    records = []
    for role, speech in zip(corpus.ids, corpus.texts, strict=True):
        lines = speech.splitlines()
        if len(lines) <= prompt_lines:
            continue
        play, speaker = role.split("/", 1)
        records.append({
            "instruction": f"Continue this speech by {speaker} in "
                           f"{play.replace('_', ' ').title()}.",
            "input": "\n".join(lines[:prompt_lines]), "output": lines[prompt_lines],
            "role": role})
    return records


def prompt_of(record: dict[str, str]) -> str:
    """The user turn the instruction data format makes of a record (a sample prompt)."""
    return f"{record['instruction']}\n\n{record['input']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--prompt-lines", type=int, default=2)
    args = parser.parse_args(argv)
    records = continue_speech_records(args.prompt_lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in records))
    print(f"{len(records)} records from {len({r['role'] for r in records})} roles -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
