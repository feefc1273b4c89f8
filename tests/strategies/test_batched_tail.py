"""Batched server tails equal the clients' sequential tail steps, and leave the model as it was."""

import pytest
import torch

from edgesplit.protocol import RoundTask
from edgesplit.split_model import SplitModel
from strategies.batched_tail import serve_requests
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
        grads = serve_requests(batched, acts, max_tokens=max_tokens)
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
    assert all(isinstance(g, torch.Tensor) for g in
               serve_requests(sessions(model, [1, 2]), {1: acts, 2: acts}).values())
    broken = {**acts, "hidden": acts["hidden"][..., :-1]}
    answers = serve_requests(sessions(model, [1, 2]), {1: broken, 2: broken})
    # Assert: each client gets its own error; the same modules, the same loss bit for bit
    assert all(isinstance(a, RuntimeError) for a in answers.values()), answers
    assert all(a is b for a, b in zip(model.peft_model.modules(), modules, strict=True))
    after = model.tail(acts["hidden"], acts["attention_mask"], SPLIT, acts["labels"]).loss
    assert after.item() == before.item()


def test_clients_at_two_splits_are_served_in_their_own_passes(model):
    # Prepare: two clients at each of two splits, twins stepped one by one
    acts = {n: client_batch(model, n, 2) for n in (1, 2, 3, 4)}
    def mixed():
        return {**sessions(model, [1, 2]), **sessions(model, [3, 4], split=SPLIT + 1)}
    batched, sequential = mixed(), mixed()
    # Execute
    grads = serve_requests(batched, acts)
    # Assert
    for n, session in sequential.items():
        torch.testing.assert_close(grads[n], session.step(acts[n]), **TOL)


def test_a_client_with_bad_activations_fails_alone(model):
    """A pass that fails is redone client by client: only the culprit gets an error."""
    acts = {n: client_batch(model, n, 2) for n in (1, 2, 3)}
    acts[2] = {**acts[2], "hidden": acts[2]["hidden"] * float("inf")}
    answers = serve_requests(sessions(model, [1, 2, 3]), acts)
    assert isinstance(answers[2], Exception) and "non-finite" in str(answers[2])
    assert all(isinstance(answers[n], torch.Tensor) for n in (1, 3))
