"""`privacy.activation-noise-std`: what the server receives is the clean head output plus noise of
the configured std relative to each sequence's median token RMS, training still runs, and 0 leaves
the activations untouched."""

import pytest
import torch

from clients.session import DeviceSession
from edgesplit.data import federated_text
from edgesplit.protocol import RoundTask
from edgesplit.settings import DataSettings, LoraSettings
from edgesplit.split_model import SplitModel
from fl_app.run_config import parse
from harness.configs import tiny_run_config
from harness.inprocess import run_in_process

STD = 0.3


def relative_noise(received, clean):
    """The noise in units of each sequence's median token RMS (of the clean activations)."""
    rms = clean.pow(2).mean(-1, keepdim=True).sqrt()
    return (received - clean) / rms.median(dim=-2, keepdim=True).values


def test_session_sends_noisy_activations_and_zero_changes_nothing():
    model = SplitModel("tiny-llama", LoraSettings())
    data = federated_text(DataSettings(corpus="synthetic", block_size=16), "tiny-llama", 2)
    task = RoundTask(server_round=1, split=2, local_steps=2, batch_size=4, learning_rate=1e-3,
                     optimizer="adamw", seed=0)
    lora = model.lora_state(range(2))
    clean = DeviceSession(model, data.client(0).train, task, lora).activations(0)
    off = DeviceSession(model, data.client(0).train, task, lora, noise_std=0.0).activations(0)
    assert all(torch.equal(off[k], clean[k]) for k in clean)
    noisy = DeviceSession(model, data.client(0).train, task, lora, noise_std=STD)
    sent = noisy.activations(0)
    assert torch.equal(sent["labels"], clean["labels"])
    assert relative_noise(sent["hidden"], clean["hidden"]).std().item() == pytest.approx(
        STD, rel=0.05)
    before = {k: v.clone() for k, v in noisy.lora().items()}
    noisy.apply_gradient(0, torch.ones_like(sent["hidden"]))  # backward through the clean head
    assert any(not torch.equal(before[k], v) for k, v in noisy.lora().items())


def test_the_server_receives_head_output_plus_the_configured_noise(tmp_path, server_frames):
    """Every step-0 activation frame the server decodes is one client's clean head output (the
    initial adapter, its first batch) plus noise of 0.3 x each sequence's median token RMS."""
    config = tiny_run_config(activation_noise_std=STD, output_dir=str(tmp_path), run_name="n")
    strategy, _, rows = run_in_process(config, num_nodes=2)
    assert rows[0]["completed"] == 2 and torch.isfinite(torch.tensor(rows[0]["train_loss"]))

    settings = parse(config)
    model = SplitModel(settings.model_name, settings.lora, seed=settings.seed)
    data = federated_text(settings.data, settings.model_name, 2)
    clean = []
    with torch.no_grad():
        for partition in range(2):
            batch = data.client(partition).train.batch(0, settings.batch_size, settings.seed)
            clean += [model.head(batch["input_ids"], batch["attention_mask"], split)
                      for split in range(1, model.num_layers)]
    received = [f.tensors["hidden"] for f in server_frames
                if f.meta.get("kind") == "activations" and f.meta.get("step") == 0]
    assert len(received) == 2
    for hidden in received:
        noise = min((relative_noise(hidden, c) for c in clean), key=lambda n: n.std())
        assert noise.std().item() == pytest.approx(STD, rel=0.05)
        assert abs(noise.mean().item()) < 0.02
