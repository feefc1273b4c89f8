"""Oracle 2 and the round loop's failure handling, run in-process against the real ClientApp."""

import json
from collections import Counter

import pytest
import torch
from flwr.app import ArrayRecord, Error, Message, RecordDict
from peft import PeftModel
from transformers import AutoModelForCausalLM

from edgesplit.protocol import ACTIVATIONS, QUERY_PROFILE, TRAIN_STEP
from edgesplit.split_model import SplitModel
from harness.configs import tiny_run_config
from harness.inprocess import DROP, run_in_process
from tests.strategies.oracles import fedavg_of_full_model_training


def run(tmp_path, num_nodes=4, fault=None, name="run", **overrides):
    # The Flower-message transport: the in-process grid then runs handlers synchronously.
    config = tiny_run_config(transport="flower", output_dir=str(tmp_path), run_name=name,
                             keys=overrides)
    return run_in_process(config, num_nodes, fault=fault)


@pytest.mark.parametrize("model_name, base_dtype", [("tiny-llama", "float32"),
                                                    ("tiny-gpt2", "float32"),
                                                    ("tiny-llama", "bfloat16")])
def test_split_federated_equals_fedavg_of_full_model_lora(tmp_path, model_name, base_dtype):
    strategy, final, rows = run(tmp_path, **{"model.name": model_name, "train.rounds": 3,
                                             "model.base-dtype": base_dtype})
    splits = {c["split"] for r in rows for c in r["clients"]}
    assert len(splits) > 1, "the check needs a mix of split points"
    reference = fedavg_of_full_model_training(strategy.settings, 4, 3)
    assert final.keys() == reference.keys()
    worst = max((final[k] - reference[k]).abs().max().item() for k in final)
    # bfloat16: the same base on both sides and float32 on the wire, so the split loses nothing
    # either; the bound is bfloat16's, for kernels that round another batch layout differently.
    assert worst < (1e-5 if base_dtype == "float32" else 1e-3)
    assert any(v.abs().max() > 0 for k, v in final.items() if "lora_B" in k)  # it did train
    assert all(v.dtype == torch.float32 for v in final.values())
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["model.base-dtype"], config["compute.server-device"]) == (base_dtype, "cpu")


def test_metrics_checkpoints_and_exported_adapter(tmp_path):
    strategy, final, rows = run(tmp_path, **{"train.rounds": 2, "eval.every": 1})
    folder = tmp_path / "run"
    assert [r["round"] for r in rows] == [1, 2]
    for r in rows:
        assert r["completed"] == 4 and r["train_loss"] > 0 and r["val_ppl"] > 1
        assert r["bytes_up"] > 0 and r["bytes_down"] > 0 and not r["failures"]
        # Each client is named by its data partition as well as its node id.
        assert {c["node"]: c["partition"] for c in r["clients"]} == {n: n - 1 for n in range(1, 5)}
    assert (folder / "metrics.csv").read_text().startswith("round,")
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == [
        "round-0001.pt", "round-0002.pt"]
    saved = torch.load(folder / "checkpoints" / "round-0002.pt")
    assert all(torch.equal(saved["lora"][k], final[k]) for k in final)

    base = AutoModelForCausalLM.from_pretrained(strategy.model.folder)
    peft_model = PeftModel.from_pretrained(base, folder / "adapter")
    batch = strategy.evaluator.heldout_blocks.batch(0, 2)
    with strategy.model.using_lora(final):
        ours = strategy.model.full(batch["input_ids"], batch["attention_mask"]).logits
    theirs = peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        position_ids=batch["attention_mask"].cumsum(-1).clamp(min=1) - 1).logits
    assert (ours - theirs).abs().max() < 1e-5


def _fail_node(node, how):
    def fault(msg):
        if msg.metadata.dst_node_id != node or msg.metadata.message_type != TRAIN_STEP:
            return None
        if how == "error":
            return Message(Error(code=2, reason="device crashed"), reply_to=msg)
        if how == "silent":
            return DROP
        garbage = RecordDict({ACTIVATIONS: ArrayRecord({})})
        return Message(garbage, reply_to=msg)
    return fault


@pytest.mark.parametrize("how", ["error", "silent", "malformed"])
def test_a_failing_client_is_dropped_and_the_round_completes(tmp_path, how):
    # Only the silent client waits for the timeout; the others reply at once in-process.
    _, final, rows = run(tmp_path, fault=_fail_node(2, how),
                         **{"train.rounds": 1, "faults.step-timeout-s": 3.0})
    (row,) = rows
    assert row["completed"] == 3 and "train_loss" in row
    assert list(row["failures"]) == ["2"]
    assert all(torch.isfinite(v).all() for v in final.values())


def test_round_is_skipped_when_too_few_clients_complete(tmp_path):
    def everyone_fails(msg):
        return DROP if msg.metadata.message_type == TRAIN_STEP else None
    strategy, final, rows = run(tmp_path, fault=everyone_fails,
                                **{"train.rounds": 1, "faults.step-timeout-s": 1.0})
    assert rows[0]["completed"] == 0 and "skipped" in rows[0]
    initial = SplitModel("tiny-llama", strategy.settings.lora, seed=0).lora_state()
    assert all(torch.equal(final[k], initial[k]) for k in final)


def test_a_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path):
    _, uninterrupted, rows = run(tmp_path, name="whole", **{"train.rounds": 3})
    run(tmp_path, name="stopped", **{"train.rounds": 2})
    _, resumed, resumed_rows = run(tmp_path, name="resumed", **{
        "train.rounds": 3, "run.resume-from": str(tmp_path / "stopped")})
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)
    assert [r["train_loss"] for r in resumed_rows] == [r["train_loss"] for r in rows]


def test_resuming_from_a_missing_or_foreign_checkpoint_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match="no checkpoints"):
        run(tmp_path, **{"run.resume-from": str(tmp_path)})
    run(tmp_path, name="gpt2", **{"model.name": "tiny-gpt2", "train.rounds": 1})
    with pytest.raises(ValueError, match="does not match this model"):
        run(tmp_path, name="llama", **{"run.resume-from": str(tmp_path / "gpt2")})
    with pytest.raises(ValueError, match=r"config changed.*seed 0 -> 1"):
        run(tmp_path, name="reseeded", **{"model.name": "tiny-gpt2", "run.seed": 1,
                                          "run.resume-from": str(tmp_path / "gpt2")})


@pytest.mark.parametrize("transport", ["flower", "stream"])
def test_overlapped_evaluation_gives_the_same_numbers_and_samples(tmp_path, transport):
    # Prepare
    keys = {"stream.transport": transport, "eval.every": 1, "train.rounds": 2,
            "eval.sample-prompts": "Hello", "eval.sample-tokens": 4}

    # Execute
    runs = {}
    for overlap in (False, True):
        config = tiny_run_config(output_dir=str(tmp_path), run_name=f"overlap-{overlap}",
                                 keys={**keys, "eval.overlap": overlap})
        _, final, rows = run_in_process(config, 3)
        samples = (tmp_path / f"overlap-{overlap}" / "generations.jsonl").read_text()
        runs[overlap] = final, rows, samples

    # Assert
    (final, rows, samples), (final_o, rows_o, samples_o) = runs[False], runs[True]
    assert all(torch.equal(final[k], final_o[k]) for k in final)
    for row, row_o in zip(rows, rows_o, strict=True):
        for key in ("val_ppl", "heldout_ppl", "train_loss"):
            assert row[key] == row_o[key]
        assert row_o["eval_failures"] == {} and row_o["time_samples_s"] > 0
    assert samples == samples_o


def test_each_profile_is_asked_once_per_run_and_a_failed_one_again(tmp_path):
    """The steady state is one message per device per round: a node's profile is asked in the
    first round it is sampled, and again only if that answer failed (node 2's first one)."""
    asked = Counter()

    def count(msg):
        if msg.metadata.message_type != QUERY_PROFILE:
            return None
        node = msg.metadata.dst_node_id
        asked[node] += 1
        if node == 2 and asked[node] == 1:
            return Message(Error(code=2, reason="RuntimeError: not ready"), reply_to=msg)
        return None

    config = tiny_run_config(num_server_rounds=3, output_dir=str(tmp_path), run_name="once")
    _, _, rows = run_in_process(config, 3, fault=count)
    assert asked == {1: 1, 2: 2, 3: 1}
    assert list(rows[0]["failures"]) == ["2"] and "profile: " in rows[0]["failures"]["2"]
    assert [r["completed"] for r in rows] == [2, 3, 3]


def test_the_cost_model_counts_the_adapter_upload_unless_told_not_to():
    """The makespan model's adapter bits per layer are one decoder layer's LoRA parameters at
    32 bits (what a device's reply carries per layer it trained); `allocation.adapter-upload =
    false` leaves the upload out."""
    from edgesplit.settings import Settings
    from strategies.split_fed import model_cost

    settings = Settings(model_name="tiny-llama")
    model = SplitModel(settings.model_name, settings.lora)
    per_layer = sum(p.numel() for p in model.lora_parameters([1]).values())
    assert per_layer > 0
    assert model_cost(settings, model).adapter_bits(3) == 3 * per_layer * 32
    off = Settings(model_name="tiny-llama", adapter_upload=False)
    assert model_cost(off, model).adapter_bits(3) == 0
