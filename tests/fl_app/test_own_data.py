"""Training on the user's own data, in-process through the real ServerApp and ClientApp: a JSONL
instruction file and a CSV partitioned by a column."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import torch

from edgesplit.blocks import IGNORE
from edgesplit.data import federated_text
from edgesplit.presets import load_tokenizer
from harness.configs import tiny_run_config
from harness.inprocess import run_in_process
from tests.strategies.oracles import fedavg_of_full_model_training

USERS = ["ann", "bob", "cid", "dee", "eve"]
WORDS = ["sea", "crown", "rose", "sword", "gold", "moon", "wine", "ink"]


def _run(tmp_path, num_nodes, **keys):
    config = tiny_run_config(transport="flower", output_dir=str(tmp_path), run_name="run",
                             keys=keys)
    return run_in_process(config, num_nodes)


def _users_in(text: str) -> set[str]:
    return set(re.findall(r"<(\w+)>", text))


def test_instruction_jsonl_trains_on_responses_only_and_equals_full_model_lora(tmp_path):
    # Prepare: every record names its user in the input, so a block tells whose it is
    rows = [{"instruction": "Repeat the word.", "input": f"<{u}> {w}", "output": w, "user": u}
            for i, u in enumerate(USERS) for w in WORDS[i:] + WORDS[:i]]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    keys = {"data.corpus": str(path), "data.format": "instruction", "data.partition-by": "user",
            "data.block-size": 64, "train.rounds": 2}

    # Execute
    strategy, final, metrics = _run(tmp_path, 3, **keys)

    # Assert: each client holds whole users of its own, and its blocks are their records
    settings, tokenizer = strategy.settings, load_tokenizer("tiny-llama")
    data = federated_text(settings.data, settings.model_name, 3)
    owners: dict[str, int] = {}
    for client in range(3):
        rows_of = np.concatenate([data.split.train[client], data.split.val[client]])
        users = {rows[i]["user"] for i in rows_of}
        assert all(owners.setdefault(u, client) == client for u in users)
        shard = data.client(client)
        assert len(shard.train) + len(shard.val) == len(rows_of)  # one block per record
        for blocks in (shard.train, shard.val):
            texts = tokenizer.batch_decode(blocks.input_ids, skip_special_tokens=True)
            assert set().union(*map(_users_in, texts)) <= users

    # Prompt tokens carry no loss: the labelled tokens are exactly each response and its eos
    shard = data.client(0).train
    for ids, labels in zip(shard.input_ids, shard.labels, strict=True):
        text = tokenizer.decode(ids[labels != IGNORE])
        assert text in {f"{w}{tokenizer.eos_token}\n" for w in WORDS}
        prompt = tokenizer.decode(ids[: int((labels != IGNORE).nonzero()[0])])
        assert prompt.startswith("user: Repeat the word.\n\n<") and prompt.endswith(
            "assistant: ")

    # ...and the model's loss is the mean over the response tokens, computed by hand
    batch = shard.batch(0, 4)
    with strategy.model.using_lora(final):
        out = strategy.model.full(batch["input_ids"], batch["attention_mask"], batch["labels"])
    logp = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    by_hand = -logp[keep].gather(1, targets[keep][:, None]).mean()
    assert keep.sum() < batch["attention_mask"].sum() / 3  # most tokens are prompt
    torch.testing.assert_close(out.loss, by_hand)

    # The split run trained, exactly as FedAvg of full-model LoRA on the same data
    assert all(np.isfinite(r["train_loss"]) for r in metrics)
    reference = fedavg_of_full_model_training(settings, 3, 2)
    assert max((final[k] - reference[k]).abs().max().item() for k in final) < 1e-5


def test_csv_partitioned_by_a_column_keeps_each_author_on_one_client(tmp_path):
    # Prepare: plain text in a CSV with an author column (and other columns to ignore)
    path = tmp_path / "posts.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "author", "body"])
        writer.writeheader()
        for i in range(60):
            author = USERS[i % len(USERS)]
            writer.writerow({"id": i, "author": author,
                             "body": f"<{author}> writes about the {WORDS[i % len(WORDS)]}."})
    keys = {"data.corpus": str(path), "data.text-field": "body", "data.partition-by": "author",
            "train.rounds": 1}

    # Execute
    strategy, _, metrics = _run(tmp_path, 2, **keys)

    # Assert: the packed blocks of a client hold its authors' text only, and no author is
    # split between clients
    settings, tokenizer = strategy.settings, load_tokenizer("tiny-llama")
    data = federated_text(settings.data, settings.model_name, 2)
    seen = []
    for client in range(2):
        shard = data.client(client)
        blocks = torch.cat([shard.train.input_ids, shard.val.input_ids])
        seen.append(set().union(*map(_users_in, tokenizer.batch_decode(blocks))))
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert seen[0] | seen[1] <= set(USERS)
    assert metrics[0]["completed"] == 2 and np.isfinite(metrics[0]["train_loss"])
