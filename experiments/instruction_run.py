"""A real run on the default model with instruction data: SmolLM2-135M-Instruct learning to
continue Shakespeare speeches ("continue this speech" pairs made from the shipped corpus), split-
federated over clients that each hold whole speaking roles, in-process.

    nice -n 10 python -m experiments.instruction_run --out results/instruction_run
    python -m experiments.instruction_run --model tiny-llama --rounds 1 --out /tmp/quick

Writes into --out the run's metrics, figures and per-round generations, and `samples.md`: for a
few famous speeches, the true next line beside the base model's and the trained adapter's
greedy continuations.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from edgesplit.generation import generate_text
from edgesplit.presets import load_tokenizer
from edgesplit.settings import Settings
from experiments.continue_speech_data import continue_speech_records, prompt_of
from experiments.generate import load_run_model
from experiments.records import keep_run
from harness.inprocess import run_in_process

# Speeches whose continuation a reader knows: (role, first words of the speech).
FAMOUS = [("hamlet/HAM", "To be, or not to be"), ("richard_iii/GLOSTER", "Now is the winter"),
          ("julius_caesar/ANTONY", "Friends, Romans")]


def samples_table(folder: Path, records: list[dict], tokens: int) -> str:
    """Markdown: per famous speech, the true next line, the base model's and the adapter's."""
    model, config = load_run_model(folder)
    tokenizer = load_tokenizer(config["model.name"])
    lines = ["| speech | true next line | base model | after training |", "|---|---|---|---|"]
    for record in records:
        prompt = prompt_of(record)
        trained = generate_text(model, tokenizer, prompt, "instruction", tokens)
        with model.disable_adapter():
            base = generate_text(model, tokenizer, prompt, "instruction", tokens)
        cells = [record["input"].replace("\n", " / "), record["output"], base, trained]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " / ")
                                       for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/instruction_run"))
    parser.add_argument("--model", default=Settings().model_name)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--clients", type=int, default=4)
    # 96 tokens hold ~94% of the records whole (SmolLM2; the longest has 110): the rest lose the
    # end of their response line.
    parser.add_argument("--block-size", type=int, default=96)
    parser.add_argument("--tokens", type=int, default=24)
    args = parser.parse_args(argv)

    records = continue_speech_records()
    famous = [next(r for r in records if r["role"] == role and r["input"].startswith(start))
              for role, start in FAMOUS]
    work = Path(tempfile.mkdtemp(prefix="instruction-run-"))
    try:
        data = work / "continue_speech.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in records))
        config = {**Settings().as_dict(), "model.name": args.model, "data.corpus": str(data),
                  "data.format": "instruction", "data.partition-by": "role",
                  "data.block-size": args.block_size, "train.rounds": args.rounds,
                  "eval.sample-prompts": "|".join(prompt_of(r) for r in famous),
                  "eval.sample-tokens": args.tokens, "run.output-dir": str(work), "run.name": "run"}
        _, _, rows = run_in_process(config, args.clients)
        folder = work / "run"
        keep_run(folder, args.out, ("config.json", "metrics.jsonl", "generations.jsonl",
                                    "figures"))
        (args.out / "samples.md").write_text(samples_table(folder, famous, args.tokens))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for r in rows:
        print(f"round {r['round']}: loss {r['train_loss']:.4f}, val ppl {r['val_ppl']:.2f}, "
              f"held-out ppl {r['heldout_ppl']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
