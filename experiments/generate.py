"""Generate text with a finished run's adapter: its peft adapter on its base model, greedy.

    python -m experiments.generate --run outputs/<run> --prompt "To be, or not to be"
    python -m experiments.generate --run outputs/<run> --round 1 --base --prompt "My lord,"
    edgesplit-generate --run outputs/<run> --prompt "..."       # the same, once pip-installed

The base model is the run's `model.name` (a preset is materialised if needed); the prompt is put
to the model as the run's training presented its data (`data.format`: plain text, or a user turn
of the chat template), as the per-round samples in the run's generations.jsonl are.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from peft import PeftModel, set_peft_model_state_dict
from transformers import AutoModelForCausalLM

from edgesplit.generation import generate_text
from edgesplit.presets import load_tokenizer, quiet_transformers, resolve_checkpoint
from edgesplit.settings import new_keys
from strategies.outputs import load_checkpoint


def load_run_model(run: Path, server_round: int | None = None) -> tuple[PeftModel, dict]:
    """The run's base model with its final adapter (or round ``server_round``'s checkpoint),
    in eval mode, and the run config."""
    config = new_keys(json.loads((run / "config.json").read_text()))[0]  # 0.1: flat keys
    if not (run / "adapter").is_dir():
        raise SystemExit(f"{run}/adapter not found: the run has not finished (its checkpoints "
                         "hold the adapters of the rounds done)")
    with quiet_transformers():
        base = AutoModelForCausalLM.from_pretrained(resolve_checkpoint(config["model.name"]),
                                                    dtype=torch.float32)
    model = PeftModel.from_pretrained(base, run / "adapter")
    if server_round is not None:
        checkpoint = load_checkpoint(run / "checkpoints" / f"round-{server_round:04d}.pt")
        set_peft_model_state_dict(model, checkpoint["lora"])
    return model.eval(), config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="the run folder")
    parser.add_argument("--prompt", action="append", required=True,
                        help="a prompt (repeat for several)")
    parser.add_argument("--round", type=int, help="a checkpoint's adapter instead of the final")
    parser.add_argument("--tokens", type=int, help="new tokens (default: the run's "
                        "eval.sample-tokens)")
    parser.add_argument("--base", action="store_true",
                        help="also generate with the base model alone, for comparison")
    args = parser.parse_args(argv)
    model, config = load_run_model(args.run, args.round)
    tokenizer = load_tokenizer(config["model.name"])
    data_format, tokens = config.get("data.format", "text"), args.tokens or config.get(
        "eval.sample-tokens", 32)
    for prompt in args.prompt:
        print(f"prompt: {prompt!r}")
        print(f"  adapter: {generate_text(model, tokenizer, prompt, data_format, tokens)!r}")
        if args.base:
            with model.disable_adapter():
                text = generate_text(model, tokenizer, prompt, data_format, tokens)
            print(f"  base:    {text!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
