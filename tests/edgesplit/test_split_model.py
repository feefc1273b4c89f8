"""Oracle 1: head + tail equals the unsplit model, in outputs and LoRA gradients, for every
family of issues 14 and 26 (tiny random configs of harness/tiny_families.py), and the refusal of
models that cannot split exactly, with the reason."""

from dataclasses import replace

import pytest
import torch
from transformers import AutoModelForCausalLM

from edgesplit import families
from edgesplit import split_model as split_model_module
from edgesplit.families import UnsupportedModel, describe
from edgesplit.settings import LoraSettings
from edgesplit.split_model import SplitModel, trainable_copy
from harness.split_oracle import cut_errors, cuts, labels_of, padded_batch, randomised
from harness.tiny_families import (
    NEEDS_WEIGHTS,
    REFUSED,
    SUPPORTED,
    save_config_only,
    save_tiny,
)


@pytest.fixture(scope="module", params=list(SUPPORTED))
def model(request, tmp_path_factory) -> SplitModel:
    """A random tiny model of one family, saved and loaded back like a user's checkpoint."""
    folder = save_tiny(SUPPORTED[request.param](), tmp_path_factory.mktemp(request.param))
    m = SplitModel(str(folder))
    randomised(m)
    return m


def test_every_cut_reproduces_full_logits_loss_and_lora_gradients(model):
    """Every head/tail split and every U-shaped split (device head -> server body -> device
    tail, gradients back through two detached cuts), on left-, right- and two-sided padding."""
    errors = cut_errors(model)
    assert set(errors) == set(cuts(model.num_layers))
    assert any(len(cut) == 2 for cut in errors)  # U-shaped cuts exist at 4 layers
    off = {cut: gaps for cut, gaps in errors.items() if not max(gaps.values()) < 1e-5}
    assert not off, off


def test_base_weights_are_frozen_and_never_get_gradients(model):
    ids, mask = padded_batch()
    params = trainable_copy(model.lora_state())
    with model.using_lora(params):
        model.full(ids, mask, labels_of(ids, mask)).loss.backward()
    base = [p for n, p in model.peft_model.named_parameters() if "lora_" not in n]
    assert base and all(not p.requires_grad and p.grad is None for p in base)
    assert all(p.grad is not None for p in params.values())


LLAMA_STYLE = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
EXPERTS = {"experts.gate_up_proj", "experts.down_proj"}
# GPT-NeoX, Falcon, BLOOM
FUSED_QKV = {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"}
# Read off each family's modeling file: attention + MLP projections, routers left out.
EXPECTED_TARGETS = {
    "gpt2": ({"c_attn", "c_proj", "c_fc"}, set()),
    "gpt-neox": (FUSED_QKV, set()),
    "phi3": ({"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}, set()),
    "starcoder2": ({"q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"}, set()),
    "glm4": ({"q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj"}, set()),
    "mixtral": ({"q_proj", "k_proj", "v_proj", "o_proj"}, EXPERTS),
    "qwen2-moe": (LLAMA_STYLE, EXPERTS),  # the shared expert's MLP; not shared_expert_gate
    "gptj": ({"q_proj", "k_proj", "v_proj", "out_proj", "fc_in", "fc_out"}, set()),
    "gpt-neo": ({"q_proj", "k_proj", "v_proj", "out_proj", "c_fc", "c_proj"}, set()),
    "codegen": ({"qkv_proj", "out_proj", "fc_in", "fc_out"}, set()),
    "falcon": (FUSED_QKV, set()),
    "falcon-alibi": (FUSED_QKV, set()),
    "bloom": (FUSED_QKV, set()),
    "mpt": ({"Wqkv", "out_proj", "up_proj", "down_proj"}, set()),
    "opt-350m": ({"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}, set()),
}


def test_lora_targets_are_the_blocks_own_linear_layers(model, request):
    family = request.node.callspec.params["model"]
    modules, experts = EXPECTED_TARGETS.get(family, (LLAMA_STYLE, set()))
    arch = model.architecture
    assert set(arch.lora_targets) == modules and set(arch.lora_parameters) == experts
    assert arch.fan_in_fan_out == (family == "gpt2")
    # A and B for every target in every layer (fused experts: one wrapper per parameter).
    keys = model.lora_keys()
    assert len(keys) == 2 * model.num_layers * (len(modules) + len(experts)) + (
        2 * model.num_layers if family == "gpt2" else 0)  # GPT-2 has c_proj twice per layer
    per_layer = len(keys) // model.num_layers
    assert all(len(model.lora_keys([i])) == per_layer for i in range(model.num_layers))


DEVICE_LAYERS = 3


@pytest.fixture(scope="module")
def device(model) -> SplitModel:
    """The same checkpoint loaded as a device's head of 3 of its 4 layers."""
    return SplitModel(model.folder.as_posix(), head_layers=DEVICE_LAYERS)


def test_lora_state_round_trip_is_exact_and_per_layer(model, device):
    state = model.lora_state([1, 2])
    assert state and {model.layer_of(k) for k in state} == {1, 2}
    device.load_lora_state(state)
    for key, value in device.lora_state([1, 2]).items():
        assert torch.equal(value, state[key])
    with pytest.raises(KeyError, match="unknown adapter key"):
        device.load_lora_state({"not.a.key": torch.zeros(1)})


def test_device_head_holds_only_its_layers_and_matches_the_full_model(model, device):
    split = DEVICE_LAYERS
    device.load_lora_state(model.lora_state(range(split)))
    ids, mask = padded_batch()
    assert torch.equal(device.head(ids, mask, split), model.head(ids, mask, split))
    assert set(device.lora_keys()) == set(model.lora_keys(range(split)))
    blocks = [n for n, _ in device.base_model.named_parameters()]
    assert any(f".{split - 1}." in n for n in blocks)
    assert not any(f".{split}." in n for n in blocks)
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


@pytest.mark.parametrize("family", list(REFUSED))
def test_models_that_cannot_split_exactly_are_refused_with_the_reason(tmp_path, family):
    config, reason = REFUSED[family]
    save = save_tiny if family in NEEDS_WEIGHTS else save_config_only  # no weight is read
    folder = save(config(), tmp_path / family)
    with pytest.raises(UnsupportedModel, match=reason):
        SplitModel(str(folder))


def test_layers_that_share_weights_are_refused():
    base = AutoModelForCausalLM.from_config(SUPPORTED["llama"]())
    base.model.layers[1].mlp = base.model.layers[0].mlp  # one MLP serving two layers
    with pytest.raises(UnsupportedModel, match="layers 0 and 1 share weights"):
        describe(base)


ATTENTION_BIAS = {"falcon": "falcon", "falcon-alibi": "falcon", "bloom": "bloom", "mpt": "mpt"}


def test_pieces_outside_the_layers_are_found(model, request):
    """BLOOM's embedding norm, the ALiBi families' bias builders, OPT's nested stack, mask-
    called position table and projections (the oracle above shows they are applied right)."""
    family = request.node.callspec.params["model"]
    arch = model.architecture
    assert arch.embedding_norm_attr == ("word_embeddings_layernorm" if family == "bloom"
                                        else None)
    assert arch.attention_bias == ATTENTION_BIAS.get(family)
    opt = family == "opt-350m"
    assert (arch.backbone_attr == "model.decoder") == opt and arch.positions_from_mask == opt
    assert (arch.project_in_attr, arch.project_out_attr, arch.norm_attr is None) == (
        ("project_in", "project_out", True) if opt else (None, None, False))


@pytest.fixture(scope="module")
def falcon_folder(tmp_path_factory):
    return save_tiny(SUPPORTED["falcon-alibi"](), tmp_path_factory.mktemp("falcon-alibi"))


def test_a_layer_input_the_split_does_not_build_is_refused_naming_it(falcon_folder,
                                                                     monkeypatch):
    monkeypatch.delitem(families.ATTENTION_BIASES, "falcon")
    with pytest.raises(UnsupportedModel, match="FalconDecoderLayer.*require alibi"):
        SplitModel(str(falcon_folder))


def test_the_load_probe_turns_any_failure_into_a_refusal_naming_it(falcon_folder,
                                                                   monkeypatch):
    """Were the bias left out after `describe` (a layer then raises TypeError), the model is
    refused with the cause, not crashed."""
    monkeypatch.setattr(split_model_module, "describe",
                        lambda base: replace(describe(base), attention_bias=None))
    with pytest.raises(UnsupportedModel,
                       match=r"running head \+ tail.*TypeError.*'alibi'") as refusal:
        SplitModel(str(falcon_folder))
    assert isinstance(refusal.value.__cause__, TypeError)


def test_a_broken_weights_file_is_a_refusal_naming_it_not_a_family_verdict(tmp_path):
    folder = save_tiny(SUPPORTED["llama"](), tmp_path / "llama")
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(UnsupportedModel, match="llama: loading it for the split failed") as e:
        SplitModel(str(folder))
    assert "not supported" not in str(e.value)


def test_a_family_that_deviates_unseen_is_refused_at_load(tmp_path, monkeypatch):
    """The load check: were Granite's logit scaling unknown, head + tail would not reproduce
    the model's own forward, and the model is refused rather than trained wrongly."""
    folder = save_tiny(SUPPORTED["granite"](), tmp_path / "granite")
    monkeypatch.setattr(split_model_module, "describe",
                        lambda base: replace(describe(base), logit_scalars=()))
    with pytest.raises(UnsupportedModel, match="differ from the model's own forward"):
        SplitModel(str(folder))
