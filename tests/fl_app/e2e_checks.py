"""What a finished e2e run must have produced, and the fault-injection run's expectations."""

from __future__ import annotations

import os
from pathlib import Path

from edgesplit.data import federated_text
from edgesplit.settings import DataSettings


def check_run_outputs(run_dir: Path, rounds: int, clients: int) -> list[dict]:
    """Assert the run folder of a finished EdgeSplit run; return its metrics rows."""
    import json
    import math

    import torch
    from peft import PeftModel, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == list(range(1, rounds + 1)), rows
    for r in rows:
        assert r["sampled"] == clients and r["completed"] == clients, r
        assert r["failures"] == {}, r["failures"]
        assert "skipped" not in r, r
        assert math.isfinite(r["train_loss"]) and r["train_loss"] > 0, r
        assert math.isfinite(r["val_ppl"]) and r["val_ppl"] > 1, r
        assert math.isfinite(r["heldout_ppl"]) and r["heldout_ppl"] > 1, r
        assert len(r["clients"]) == clients, r["clients"]
        assert len({c["node"] for c in r["clients"]}) == clients, r["clients"]
        for c in r["clients"]:
            assert isinstance(c["split"], int) and c["split"] >= 1, c
            assert c["examples"] > 0, c
        assert r["bytes_up"] > 0 and r["bytes_down"] > 0, r
        assert r["time_round_s"] > 0, r
    assert (run_dir / "metrics.csv").is_file()
    csv_lines = (run_dir / "metrics.csv").read_text().splitlines()
    assert len(csv_lines) == rounds + 1, csv_lines
    assert (run_dir / "config.json").is_file()
    for n in range(1, rounds + 1):
        assert (run_dir / "checkpoints" / f"round-{n:04d}.pt").is_file()

    last = torch.load(run_dir / "checkpoints" / f"round-{rounds:04d}.pt", weights_only=False)
    assert last["round"] == rounds
    lora = last["lora"]
    cache = Path(os.environ["EDGESPLIT_CACHE"])
    base = AutoModelForCausalLM.from_pretrained(cache / "models" / "tiny-llama")
    model = PeftModel.from_pretrained(base, run_dir / "adapter")
    saved = get_peft_model_state_dict(model)
    assert set(saved) == set(lora), sorted(set(saved) ^ set(lora))[:6]
    for key, value in lora.items():
        torch.testing.assert_close(saved[key], value.to(saved[key].dtype), rtol=0, atol=0,
                                   msg=key)
    # The run trained: some LoRA B matrix moved away from peft's zero init.
    assert any(v.abs().sum() > 0 for k, v in lora.items() if "lora_B" in k)
    return rows


# ---- fault-injection runs ----------------------------------------------------------------------
# One round, 7 clients, 5 of them faulty (one of each kind); the Dirichlet split gives every
# partition a different number of training blocks, which is how a node id in the metrics is
# traced back to its partition.
FAULT_CLIENTS = 7
FAULTS = {0: "raise", 1: "silent", 2: "crash", 3: "disconnect", 4: "straggle"}
# Ray simulation leaves out the crash: it kills a Ray actor, and Flower 1.41 fails whatever
# message it had queued on that actor too, which can be a healthy client's (seen in CI with one
# actor per client); deployment runs every kind, each client in its own process.
SIMULATION_FAULTS = {p: k for p, k in FAULTS.items() if k != "crash"}
# faults.step-timeout-s of the fault runs: the silent and straggling clients cost the round this
# (plus the transport's grace for a dropped client's reply, and they sleep 1.5 times it), while
# a healthy client's next frame or final reply comes within about 2 s here (a tiny model; the
# reply through Flower). Cold Ray actors and agents load before they connect: the step timeout
# does not apply to that, faults.reply-timeout-s does.
FAULT_STEP_TIMEOUT_S = 12


def fault_run_config(faults: dict[int, str] = FAULTS) -> str:
    """The run config of a fault-injection run with `faults` ({partition: kind})."""
    return ('model.name="tiny-llama" data.corpus="synthetic" data.partitioning="dirichlet" '
            'train.rounds=1 allocation.fixed-split=3 train.local-steps=2 data.block-size=16 '
            'eval.every=0 train.min-clients=2 stream.transport="stream" faults.inject="'
            + ",".join(f"{p}:{k}" for p, k in faults.items()) + '"')


FAULT_RUN_CONFIG = fault_run_config()
# What the server records for each kind (stream transport; every fault hits local step 1).
FAULT_REASONS = {
    "raise": r"^step 1: .*client error \d+: .*injected fault: raise \(partition 0, step 1\)",
    "silent": r"^step 1: no activations within \d+ s",
    "straggle": r"^step 1: no activations within \d+ s",
    # The process dies: its stream is lost, and Flower may report the dead ClientApp.
    "crash": r"^step 1: (stream cancelled or lost|PayloadError: stream closed)",
    "disconnect": r"^step 1: (stream cancelled or lost|PayloadError: stream closed)",
}


def check_fault_round(run_dir: Path, server_log: str,
                      faults: dict[int, str] = FAULTS) -> dict[int, str]:
    """Assert the round of a FAULT_RUN_CONFIG run: each faulty partition dropped with a reason
    of its kind (and logged), the healthy ones trained, a checkpoint written. Returns
    {partition: recorded reason}."""
    import json
    import math
    import re

    (row,) = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    data = DataSettings(corpus="synthetic", partitioning="dirichlet", block_size=16)
    text = federated_text(data, "tiny-llama", FAULT_CLIENTS)
    sizes = [len(text.client(p).train) for p in range(FAULT_CLIENTS)]
    assert len(set(sizes)) == FAULT_CLIENTS, sizes  # else nodes cannot be told apart
    partition_of = {str(c["node"]): sizes.index(c["examples"]) for c in row["clients"]}
    assert sorted(partition_of.values()) == list(range(FAULT_CLIENTS)), row["clients"]
    reasons = {partition_of[node]: reason for node, reason in row["failures"].items()}
    assert sorted(reasons) == sorted(faults), row["failures"]
    for partition, kind in faults.items():
        assert re.search(FAULT_REASONS[kind], reasons[partition]), (kind, reasons[partition])
        node = next(n for n, p in partition_of.items() if p == partition)
        assert f"client {node} dropped: step 1" in server_log, f"drop of {node} not logged"
    assert "injected fault" not in reasons[3]  # a cut stream, not an error the client raised
    assert row["sampled"] == FAULT_CLIENTS and row["completed"] == FAULT_CLIENTS - len(faults)
    assert "skipped" not in row and math.isfinite(row["train_loss"]), row
    assert (run_dir / "checkpoints" / "round-0001.pt").is_file()
    assert (run_dir / "adapter").is_dir()
    return reasons
