"""U-shaped split (label privacy): exact training, and no token ids or labels reach the server.

Device head [0, k1) -> server body [k1, k2) -> device tail [k2, L) + norm + LM head + loss, over
the stream transport, run in-process against the real ClientApp.
"""


import pytest

from edgesplit.records import unpack
from fl_app.client_app import app as client_app
from fl_app.run_config import parse
from fl_app.server_app import build_strategy
from harness.configs import tiny_run_config
from harness.inprocess import InProcessGrid, run_in_process
from tests.strategies.oracles import fedavg_of_full_model_training

BASE = tiny_run_config(split=2, eval_every=1, num_server_rounds=2, transport="stream")


def run(tmp_path, name, grid_hook=None, num_nodes=4, **overrides):
    config = {**BASE, "run.output-dir": str(tmp_path), "run.name": name, **overrides}
    return run_in_process(config, num_nodes, grid_hook=grid_hook)


@pytest.mark.parametrize("model_name", ["tiny-llama", "tiny-gpt2"])
def test_u_shaped_training_equals_fedavg_of_full_model_lora(tmp_path, model_name):
    """Oracle 2 with two cuts: splits k1 in {1, 2} (random per client) and k2 = L - 1."""
    strategy, final, rows = run(tmp_path, "u", **{"model.name": model_name,
                                                  "allocation.method": "random",
                                                  "privacy.device-tail-layers": 1})
    assert {c["split"] for r in rows for c in r["clients"]} == {1, 2}
    assert all(r["completed"] == 4 and not r["failures"] for r in rows)
    reference = fedavg_of_full_model_training(strategy.settings, 4, 2)
    assert final.keys() == reference.keys()
    assert max((final[k] - reference[k]).abs().max().item() for k in final) < 1e-5
    # The device computed the loss; the server still reports it, and its own held-out ppl.
    assert all(r["train_loss"] > 0 and r["heldout_ppl"] > 1 for r in rows)
    assert all("val_ppl" not in r for r in rows)  # validation labels stay on the devices too


def test_u_shaped_loss_equals_the_head_tail_loss(tmp_path):
    _, two_part, rows2 = run(tmp_path, "two-part")
    _, u_shaped, rows_u = run(tmp_path, "u", **{"privacy.device-tail-layers": 2,
                                                "allocation.fixed-split": 1})
    assert [r["train_loss"] for r in rows_u] == pytest.approx(
        [r["train_loss"] for r in rows2], abs=1e-6)
    assert max((two_part[k] - u_shaped[k]).abs().max().item() for k in two_part) < 1e-5


def test_no_token_ids_or_labels_reach_the_server(tmp_path, server_frames):
    """Record every stream frame the server decodes and every Flower reply it pulls: no integer
    tensor other than the 0/1 padding mask, and no 'labels' or 'input_ids' anywhere."""
    frames, replies = server_frames, []

    def hook(grid):
        pull = grid.pull_messages

        def recording_pull(ids):
            got = list(pull(ids))
            replies.extend(got)
            return got

        grid.pull_messages = recording_pull
        grid.send_and_receive = _recording_send_and_receive(grid.send_and_receive, replies)

    _, _, rows = run(tmp_path, "u", grid_hook=hook, **{"privacy.device-tail-layers": 1})
    assert all(r["completed"] == 4 for r in rows)
    kinds = {f.meta.get("kind") for f in frames}
    assert kinds == {"hello", "activations", "body-grad"}
    tensors = [(name, t) for f in frames for name, t in f.tensors.items()]
    for reply in replies:
        for record in reply.content.array_records.values():
            tensors += list(unpack(record).items())
        for record in (*reply.content.metric_records.values(),
                       *reply.content.config_records.values()):
            assert not {"labels", "input_ids"} & set(record), record
    assert tensors
    for name, tensor in tensors:
        assert name not in ("labels", "input_ids"), name
        if not tensor.is_floating_point():
            assert name == "attention_mask" and set(tensor.unique().tolist()) <= {0, 1}, name


def _recording_send_and_receive(send_and_receive, replies):
    def wrapped(messages, timeout=None):
        got = list(send_and_receive(messages, timeout=timeout))
        replies.extend(got)
        return got
    return wrapped


def test_u_shaped_config_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="privacy.device-tail-layers.*stream"):
        parse({**BASE, "stream.transport": "flower", "privacy.device-tail-layers": 1})
    config = {**BASE, "run.output-dir": str(tmp_path), "privacy.device-tail-layers": 3}
    grid = InProcessGrid(client_app, config, 2, concurrent=True)
    with pytest.raises(ValueError, match="privacy.device-tail-layers = 3: at most 2"):
        build_strategy(parse(config), grid)
