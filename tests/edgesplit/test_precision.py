"""A bfloat16 (or float16) frozen base: split training equals unsplit training with the same
base, and LoRA parameters and optimizer state stay float32; devices resolve with clear errors."""

import pytest
import torch

from edgesplit.placement import resolve_device
from edgesplit.split_model import SplitModel, trainable_copy
from harness.split_oracle import labels_of, padded_batch, randomised
from harness.tiny_families import SUPPORTED, save_tiny

STEPS = 3


def train(model: SplitModel, start: dict, split: int | None) -> tuple[dict, list[dict]]:
    """AdamW steps of LoRA on `model`, unsplit (`split` None) or as device head + server tail
    with the activations and their gradient crossing a float32 wire, as the stream sends them.
    Returns the final parameters and each step's gradients."""
    params = trainable_copy(start)
    optimizer = torch.optim.AdamW([params[k] for k in sorted(params)], lr=1e-2,
                                  weight_decay=0.0)
    grads = []
    for step in range(STEPS):
        ids, mask = padded_batch(seed=step)
        labels = labels_of(ids, mask)
        with model.using_lora(params):
            if split is None:
                model.full(ids, mask, labels).loss.backward()
            else:
                activations = model.head(ids, mask, split)
                sent = activations.detach().float().requires_grad_()  # the wire widens bf16
                model.tail(sent, mask, split, labels).loss.backward()
                activations.backward(sent.grad.to(activations.dtype))
        grads.append({k: p.grad.clone() for k, p in params.items()})
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    assert all(s.dtype == torch.float32 for st in optimizer.state.values() for s in st.values()
               if s.is_floating_point())
    return {k: p.detach() for k, p in params.items()}, grads


def relative_gap(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp(min=1e-12)) for k in b)


@pytest.mark.parametrize("family", ["llama", "gemma3-text", "gpt2"])
def test_bf16_split_training_equals_unsplit_training_with_the_same_base(tmp_path, family):
    folder = save_tiny(SUPPORTED[family](), tmp_path / family)
    model = SplitModel(str(folder), dtype=torch.bfloat16)
    frozen = [p for n, p in model.peft_model.named_parameters() if "lora_" not in n]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    assert all(p.dtype == torch.float32 for p in model.lora_parameters().values())
    start = randomised(model)
    reference, reference_grads = train(model, start, split=None)
    for split in range(1, model.num_layers):
        final, grads = train(model, start, split)
        # Measured 0.0 on CPU (same kernels in the same order); the bound is bfloat16's own
        # resolution (8 bits of mantissa, 2^-8 = 0.004), for kernels that round another batch
        # layout differently.
        for step in range(STEPS):
            assert relative_gap(grads[step], reference_grads[step]) < 1e-2, (split, step)
        assert relative_gap(final, reference) < 1e-2, split
    # Not vacuous: the float32 base trains measurably differently from the bfloat16 one.
    fp32, _ = train(SplitModel(str(folder)), start, split=None)
    assert relative_gap(fp32, reference) > 0


def test_fp16_base_runs_the_split_with_float32_lora(tmp_path):
    folder = save_tiny(SUPPORTED["qwen2"](), tmp_path / "qwen2")
    model = SplitModel(str(folder), dtype=torch.float16)
    ids, mask = padded_batch()
    hidden = model.head(ids, mask, 2)
    assert hidden.dtype == torch.float16
    loss = model.tail(hidden.float(), mask, 2, labels_of(ids, mask)).loss
    assert torch.isfinite(loss)


def test_devices_resolve_or_fail_naming_the_key():
    assert resolve_device("cpu", "compute.server-device") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto", "compute.server-device").type == expected
    with pytest.raises(ValueError, match="config compute.client-device = 'gpu': one of auto, cpu"):
        resolve_device("gpu", "compute.client-device")
    with pytest.raises(ValueError, match=r"config compute.server-device = 'cuda:7': this machine "
                                         r"has"):
        resolve_device("cuda:7", "compute.server-device")
