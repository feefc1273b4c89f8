"""Split-inference evaluation under a channel: val_ppl crosses it, val_ppl_clean does not, and
training never sees it (in-process runs of the real ClientApp, tiny-llama, synthetic corpus)."""

import math

import pytest

from edgesplit.channel import nakagami_outage
from fl_app.run_config import parse
from harness.configs import tiny_run_config
from harness.inprocess import run_in_process

SNR_DB_Q30 = 10 * math.log10(-1 / math.log(0.7))  # Rayleigh outage 1 - exp(-1/SNR) = 0.3


def run(tmp_path, name, **overrides):
    config = tiny_run_config(transport="flower", eval_every=1, num_server_rounds=2,
                             output_dir=str(tmp_path), run_name=name, keys=overrides)
    return run_in_process(config, 4)[2]


@pytest.fixture(scope="module")
def clean_rows(tmp_path_factory):
    return run(tmp_path_factory.mktemp("clean"), "clean")


def test_no_channel_reports_only_val_ppl(clean_rows):
    assert all(r["val_ppl"] > 1 and "val_ppl_clean" not in r for r in clean_rows)


def test_erasure_raises_perplexity_and_leaves_training_alone(tmp_path, clean_rows):
    assert nakagami_outage(SNR_DB_Q30, 1.0) == pytest.approx(0.3)
    rows = run(tmp_path, "erasure", **{"channel.kind": "erasure", "channel.snr-db": SNR_DB_Q30})
    for row, clean in zip(rows, clean_rows, strict=True):
        assert row["val_ppl"] > row["val_ppl_clean"] * 1.001
        # The same activations without the channel: exactly what a channel-free run reports,
        # and training (the loss, the adapter behind the activations) is unchanged.
        assert row["val_ppl_clean"] == pytest.approx(clean["val_ppl"], rel=1e-9)
        assert row["train_loss"] == clean["train_loss"]
        assert row["heldout_ppl"] == clean["heldout_ppl"]


def test_a_milder_channel_hurts_less_and_the_channel_is_seeded(tmp_path):
    mild = run(tmp_path, "mild", **{"channel.kind": "erasure", "channel.snr-db": 20.0,
                                                      "train.rounds": 1})
    harsh = run(tmp_path, "harsh", **{"channel.kind": "erasure", "channel.snr-db": SNR_DB_Q30,
                                                        "train.rounds": 1})
    again = run(tmp_path, "again", **{"channel.kind": "erasure", "channel.snr-db": SNR_DB_Q30,
                                                        "train.rounds": 1})
    assert mild[0]["val_ppl_clean"] == harsh[0]["val_ppl_clean"]
    assert mild[0]["val_ppl"] - mild[0]["val_ppl_clean"] < harsh[0]["val_ppl"] - harsh[0][
        "val_ppl_clean"]
    assert harsh[0]["val_ppl"] == again[0]["val_ppl"]


@pytest.mark.parametrize("kind", ["noise", "quantise-flip"])
def test_other_channels_corrupt_at_low_snr(tmp_path, kind):
    (row,) = run(tmp_path, kind, **{"channel.kind": kind, "channel.snr-db": 0.0, "train.rounds": 1,
                                                  "channel.bits": 4})
    assert row["val_ppl"] > row["val_ppl_clean"] * 1.001


def test_an_unknown_channel_is_a_config_error():
    with pytest.raises(ValueError, match=r"config channel.kind = 'fog': one of"):
        parse({"channel.kind": "fog"})
