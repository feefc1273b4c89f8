"""Batched server tails equal the clients' sequential tail steps, and leave the model as it was."""

import pytest
import torch

from fl_app.protocol import RoundTask
from fl_app.split_model import SplitModel
from strategies.batched_tail import batched_tail_step
from strategies.tail import TailSession

SPLIT, SEQ, STEPS = 1, 12, 3
TOL = dict(rtol=1e-5, atol=1e-5)


def client_lora(model, seed, split=SPLIT):
    """The tail adapter of a client that has already trained: B moved off its zero init."""
    generator = torch.Generator().manual_seed(seed)
    return {k: v + 0.05 * torch.randn(v.shape, generator=generator)
            for k, v in model.lora_state(range(split, model.num_layers)).items()}


def client_batch(model, seed, batch):
    """Activations as a device sends them (left-padded rows, padding ignored by the labels)."""
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, SEQ, model.config.hidden_size, generator=generator)
    mask = torch.ones(batch, SEQ, dtype=torch.long)
    mask[0, :3] = 0
    labels = torch.randint(0, model.config.vocab_size, (batch, SEQ), generator=generator)
    return {"hidden": hidden, "attention_mask": mask, "labels": labels.masked_fill(mask == 0, -100)}


def sessions(model, nodes, split=SPLIT):
    task = RoundTask(server_round=1, split=split, local_steps=STEPS, batch_size=2,
                     learning_rate=1e-3, optimizer="adamw", seed=0)
    return {n: TailSession(model, client_lora(model, n, split), task) for n in nodes}


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-gpt2", "tiny-qwen2"])
def model(request):
    return SplitModel(request.param)


@pytest.mark.parametrize(("batch_sizes", "max_tokens"),
                         [([2], None), ([2, 2, 2], None), ([1, 3, 2], None), ([2, 2, 2], 4 * SEQ)],
                         ids=["1-client", "3-clients", "mixed-batches", "two-passes"])
def test_batched_steps_equal_sequential_steps(model, batch_sizes, max_tokens):
    # Prepare: twin sessions per client, fresh batches per step
    nodes = [10 * (i + 1) for i in range(len(batch_sizes))]
    sequential, batched = sessions(model, nodes), sessions(model, nodes)
    steps = [{n: client_batch(model, 100 * s + n, b) for n, b in
              zip(nodes, batch_sizes, strict=True)}
             for s in range(STEPS)]

    for acts in steps:
        # Execute
        expected = {n: sequential[n].step(acts[n]) for n in nodes}
        grads = batched_tail_step(batched, acts, max_tokens)
        # Assert: the gradients each device gets back
        assert grads.keys() == expected.keys()
        for n in nodes:
            assert grads[n].shape == acts[n]["hidden"].shape
            torch.testing.assert_close(grads[n], expected[n], **TOL)
    # Assert: each client's losses and trained adapter
    for n in nodes:
        torch.testing.assert_close(torch.tensor(batched[n].losses),
                                   torch.tensor(sequential[n].losses), **TOL)
        assert len(batched[n].losses) == STEPS
        for key, value in sequential[n].lora().items():
            torch.testing.assert_close(batched[n].lora()[key], value, **TOL)


def test_clients_adapters_differ_so_routing_matters(model):
    """Guard for the test above: swapping two clients' adapters changes their gradients."""
    a, b = sessions(model, [1, 2]).values()
    acts = client_batch(model, 0, 2)
    assert not torch.allclose(a.step(acts), b.step(acts), **TOL)


def test_model_is_restored_afterwards(model):
    # Prepare
    acts = client_batch(model, 7, 2)
    modules = list(model.peft_model.modules())
    before = model.tail(acts["hidden"], acts["attention_mask"], SPLIT, acts["labels"]).loss
    # Execute: a batched step, and one that fails inside the pass (hidden size one too small)
    batched_tail_step(sessions(model, [1, 2]), {1: acts, 2: acts})
    broken = {**acts, "hidden": acts["hidden"][..., :-1]}
    with pytest.raises(RuntimeError):
        batched_tail_step(sessions(model, [1, 2]), {1: broken, 2: broken})
    # Assert: the same modules, the same loss bit for bit
    assert all(a is b for a, b in zip(model.peft_model.modules(), modules, strict=True))
    after = model.tail(acts["hidden"], acts["attention_mask"], SPLIT, acts["labels"]).loss
    assert after.item() == before.item()


def test_mismatched_groups_are_refused(model):
    acts = client_batch(model, 0, 2)
    with pytest.raises(ValueError, match="activations for"):
        batched_tail_step(sessions(model, [1, 2]), {1: acts})
    mixed = {**sessions(model, [1]), **sessions(model, [2], split=SPLIT + 1)}
    with pytest.raises(ValueError, match="share the model and the split"):
        batched_tail_step(mixed, {1: acts, 2: acts})
