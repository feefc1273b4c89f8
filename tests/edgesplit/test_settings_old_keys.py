"""The old flat keys of EdgeSplit 0.1 still work for one release, with a warning naming the new
key; given beside their new key with another value, they stop the run. rename-keys: keep (this
file spells the old keys on purpose)."""

import re

import pytest
from flwr.common.config import flatten_dict, fuse_dicts

from edgesplit.settings import DeprecatedKeyWarning, Settings, new_keys
from tests.edgesplit.test_settings import run_config


def test_an_old_key_works_and_the_warning_names_its_new_key():
    with pytest.warns(DeprecatedKeyWarning) as caught:
        settings = Settings.from_run_config({"num-server-rounds": 7, "split": 2})
    assert (settings.num_server_rounds, settings.split) == (7, 2)
    assert [str(w.message) for w in caught] == [
        "config key num-server-rounds is deprecated (removed in the next release): use "
        "train.rounds = 7",
        "config key split is deprecated (removed in the next release): use "
        "allocation.fixed-split = 2"]


def test_an_old_key_through_flowers_own_merge_of_run_config_overrides():
    """`flwr run --run-config 'local-steps=2'`: Flower merges the override into pyproject's
    config (refusing undeclared keys), then the ServerApp reads the result."""
    defaults = flatten_dict(run_config())
    with pytest.raises(ValueError, match="not present"):
        fuse_dicts(defaults, {"no-such-key": 2}, check_keys=True)
    merged = fuse_dicts(defaults, {"local-steps": 2}, check_keys=True)
    with pytest.warns(DeprecatedKeyWarning, match="use train.local-steps = 2") as caught:
        settings = Settings.from_run_config(merged)
    assert settings.local_steps == 2 and len(caught) == 1  # the other placeholders are unset


def test_an_old_key_beside_its_new_key():
    with pytest.raises(ValueError, match=re.escape(
            "config local-steps = 2 and train.local-steps = 5 are both set: local-steps is the "
            "old name of train.local-steps, keep train.local-steps only")):
        Settings.from_run_config({"local-steps": 2, "train.local-steps": 5})
    with pytest.warns(DeprecatedKeyWarning):  # the same value twice, or the new one at default
        assert Settings.from_run_config({"local-steps": 2, "train.local-steps": 2}).local_steps == 2
        assert Settings.from_run_config({"local-steps": 2, "train.local-steps": 4}).local_steps == 2


def test_errors_name_the_new_key_whichever_name_the_check_uses():
    settings = Settings(split=0)
    for name in ("split", "allocation.fixed-split"):
        assert str(settings.error(name, "must be >= 1")) == (
            "config allocation.fixed-split = 0: must be >= 1")
    with pytest.raises(ValueError, match=re.escape("config allocation.fixed-split = 0")), \
            pytest.warns(DeprecatedKeyWarning):
        Settings.from_run_config({"split": 0})


def test_a_run_folder_of_0_1_reads_with_the_new_keys():
    """Checkpoints and config.json of 0.1 hold flat keys: resuming and `experiments.generate`
    rename them silently (`new_keys`)."""
    renamed, messages = new_keys({"model-name": "tiny-llama", "lora.rank": 4, "seed": 1})
    assert renamed == {"model.name": "tiny-llama", "lora.rank": 4, "run.seed": 1}
    assert len(messages) == 2
