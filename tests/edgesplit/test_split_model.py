"""Oracle 1: head + tail equals the unsplit model, in outputs and LoRA gradients."""

import pytest
import torch

from edgesplit.families import FAMILIES
from edgesplit.presets import PRESETS
from edgesplit.settings import LoraSettings
from edgesplit.split_model import SplitModel, trainable_copy

TINY = [p for p in PRESETS if p.startswith("tiny-")]


def padded_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Four sequences: unpadded, left-padded, right-padded, and padded on both sides."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 256, (4, 16), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    mask[2, -6:] = 0
    mask[3, :2] = 0
    mask[3, -3:] = 0
    return ids, mask


def labels_of(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Next-token labels: the inputs, padding ignored (-100)."""
    return ids.masked_fill(mask == 0, -100)


def randomised(model: SplitModel, seed: int = 1) -> dict[str, torch.Tensor]:
    """Non-zero LoRA weights (peft starts B at zero, which would hide gradient bugs)."""
    gen = torch.Generator().manual_seed(seed)
    state = {k: 0.1 * torch.randn(v.shape, generator=gen) for k, v in model.lora_state().items()}
    model.load_lora_state(state)
    return state


@pytest.fixture(scope="module", params=TINY)
def model(request) -> SplitModel:
    m = SplitModel(request.param)
    randomised(m)
    return m


def test_every_split_reproduces_full_logits_and_loss(model):
    ids, mask = padded_batch()
    labels = labels_of(ids, mask)
    reference = model.full(ids, mask, labels)
    for split in range(1, model.num_layers):
        out = model.tail(model.head(ids, mask, split), mask, split, labels)
        assert (out.logits - reference.logits).abs().max() < 1e-5, split
        assert abs(out.loss.item() - reference.loss.item()) < 1e-5, split


def test_every_split_reproduces_full_lora_gradients(model):
    ids, mask = padded_batch(seed=3)
    labels = labels_of(ids, mask)
    state = model.lora_state()
    reference = trainable_copy(state)
    with model.using_lora(reference):
        model.full(ids, mask, labels).loss.backward()
    for split in range(1, model.num_layers):
        params = trainable_copy(state)
        with model.using_lora(params):
            activations = model.head(ids, mask, split)
            sent = activations.detach().requires_grad_()  # what crosses the wire
            model.tail(sent, mask, split, labels).loss.backward()
            activations.backward(sent.grad)
        for key, param in params.items():
            assert param.grad is not None, key
            assert (param.grad - reference[key].grad).abs().max() < 1e-5, (split, key)


def u_pairs(model: SplitModel) -> list[tuple[int, int]]:
    """Every U-shaped split: device head [0, k1), server body [k1, k2), device tail [k2, L)."""
    return [(k1, k2) for k1 in range(1, model.num_layers - 1)
            for k2 in range(k1 + 1, model.num_layers)]


def test_every_u_shaped_split_reproduces_full_logits_and_loss(model):
    ids, mask = padded_batch(seed=5)
    labels = labels_of(ids, mask)
    reference = model.full(ids, mask, labels)
    assert u_pairs(model)
    for k1, k2 in u_pairs(model):
        body = model.body(model.head(ids, mask, k1), mask, k1, k2)
        out = model.tail(body, mask, k2, labels)
        assert (out.logits - reference.logits).abs().max() < 1e-5, (k1, k2)
        assert abs(out.loss.item() - reference.loss.item()) < 1e-5, (k1, k2)


def test_every_u_shaped_split_reproduces_full_lora_gradients(model):
    """Gradients flow device tail -> server body -> device head through two detached cuts."""
    ids, mask = padded_batch(seed=7)
    labels = labels_of(ids, mask)
    state = model.lora_state()
    reference = trainable_copy(state)
    with model.using_lora(reference):
        model.full(ids, mask, labels).loss.backward()
    for k1, k2 in u_pairs(model):
        params = trainable_copy(state)
        with model.using_lora(params):
            head_out = model.head(ids, mask, k1)
            body_in = head_out.detach().requires_grad_()  # first cut: device -> server
            body_out = model.body(body_in, mask, k1, k2)
            tail_in = body_out.detach().requires_grad_()  # second cut: server -> device
            model.tail(tail_in, mask, k2, labels).loss.backward()
            body_out.backward(tail_in.grad)
            head_out.backward(body_in.grad)
        for key, param in params.items():
            assert param.grad is not None, key
            assert (param.grad - reference[key].grad).abs().max() < 1e-5, (k1, k2, key)


def test_base_weights_are_frozen_and_never_get_gradients(model):
    ids, mask = padded_batch()
    params = trainable_copy(model.lora_state())
    with model.using_lora(params):
        model.full(ids, mask, labels_of(ids, mask)).loss.backward()
    base = [p for n, p in model.peft_model.named_parameters() if "lora_" not in n]
    assert base and all(not p.requires_grad and p.grad is None for p in base)
    assert all(p.grad is not None for p in params.values())


def test_lora_targets_only_the_family_projections(model):
    targets = FAMILIES[model.config.model_type].lora_targets
    keys = model.lora_keys()
    modules = {k.rsplit(".lora_", 1)[0].rsplit(".", 1)[1] for k in keys}
    assert modules == set(targets)
    # A and B for every target in every layer (GPT-2 has c_proj twice per layer).
    per_layer = len(keys) // model.num_layers
    assert all(len(model.lora_keys([i])) == per_layer for i in range(model.num_layers))


def test_lora_state_round_trip_is_exact_and_per_layer(model):
    state = model.lora_state([1, 2])
    assert state and {model.layer_of(k) for k in state} == {1, 2}
    other = SplitModel(model.folder.as_posix())
    other.load_lora_state(state)
    for key, value in other.lora_state([1, 2]).items():
        assert torch.equal(value, state[key])
    with pytest.raises(KeyError, match="unknown adapter key"):
        other.load_lora_state({"not.a.key": torch.zeros(1)})


def test_device_head_holds_only_its_layers_and_matches_the_full_model(model):
    split = 2
    device = SplitModel(model.folder.as_posix(), head_layers=split)
    device.load_lora_state(model.lora_state(range(split)))
    ids, mask = padded_batch()
    assert torch.equal(device.head(ids, mask, split), model.head(ids, mask, split))
    assert set(device.lora_keys()) == set(model.lora_keys(range(split)))
    blocks = [n for n, _ in device.base_model.named_parameters()]
    assert not any(f".{split}." in n or f".{split + 1}." in n for n in blocks)
    with pytest.raises(ValueError, match="only a head"):
        device.tail(torch.zeros(1, 1, 64), mask[:1, :1], split)


def test_lora_settings_choose_rank_and_targets():
    m = SplitModel("tiny-llama", LoraSettings(rank=2, target_modules=("q_proj",)))
    state = m.lora_state()
    assert len(state) == 2 * m.num_layers
    assert all(v.shape[0] == 2 or v.shape[1] == 2 for v in state.values())


def test_unknown_model_and_broken_folder_get_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="Presets: smollm2-135m, tiny-llama"):
        SplitModel("no-such-model")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a usable Hugging Face checkpoint"):
        SplitModel(str(tmp_path))


def test_split_out_of_range_is_rejected():
    m = SplitModel("tiny-gpt2")
    ids, mask = padded_batch()
    with pytest.raises(ValueError, match="split must be in"):
        m.head(ids, mask, m.num_layers + 1)
