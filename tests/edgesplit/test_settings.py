"""Run settings: pyproject defaults parse, overrides apply, wrong values name their key."""

import dataclasses
import re
import warnings
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from edgesplit.settings import (
    KEYS,
    START_HERE,
    DataSettings,
    LoraSettings,
    Settings,
    old_names,
)

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def run_config() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]


def placeholders(config: dict) -> dict:
    """pyproject's old flat keys, each holding the name of the key that replaced it."""
    return {k: v for k, v in config.items() if k in old_names()}


def test_every_pyproject_key_is_a_setting_and_defaults_agree():
    config = run_config()
    current = {k: v for k, v in config.items() if k not in placeholders(config)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the placeholders are not set: no deprecation warning
        settings = Settings.from_run_config(config)
    assert current == settings.as_dict()
    assert Settings().as_dict() == current  # the dataclass defaults are the built-in job
    assert list(current) == [*START_HERE, *(k for k in KEYS.values() if k not in START_HERE)]


def test_every_setting_has_one_key_in_a_section():
    missing = [f.name for f in dataclasses.fields(Settings) if f.name not in KEYS]
    assert not missing, (f"settings without a section: {missing}; add a line "
                         "`attribute: \"section.key\"` to KEYS in edgesplit/settings.py")
    assert len(set(KEYS.values())) == len(KEYS)
    assert all(re.fullmatch(r"[a-z]+\.[a-z][a-z0-9-]*", key) for key in KEYS.values())
    sections = list(dict.fromkeys(key.split(".")[0] for key in KEYS.values()))
    order = [key.split(".")[0] for key in KEYS.values()]
    assert order == sorted(order, key=sections.index), "a section's keys must be together"


def test_pyproject_declares_each_old_key_with_the_name_of_its_new_key():
    """Flower refuses `--run-config` keys pyproject.toml does not declare, so an old flat key
    works under `flwr run` only while it is declared there."""
    olds = placeholders(run_config())
    assert len(olds) == 71 and all(old_names()[old] == new for old, new in olds.items())


def test_a_newcomers_edit_needs_only_the_start_here_block():
    """A local checkpoint and a JSONL file: model, data and its format, in the first screen."""
    assert {"model.name", "data.corpus", "data.format", "data.text-field",
            "data.partition-by"} <= set(START_HERE)
    assert len(START_HERE) <= 16
    lines = PYPROJECT.read_text().split("[tool.flwr.app.config]")[1].splitlines()
    first_screen = "\n".join(lines[:len(START_HERE) + 2])
    assert all(f'"{key}"' in first_screen for key in START_HERE)


def test_the_groups_handed_to_components_have_the_same_defaults():
    """One home per default: a component's own settings group defaults to the run's."""
    assert DataSettings() == Settings().data
    assert LoraSettings() == Settings().lora
    for group in (DataSettings, LoraSettings):
        names = {f.name for f in dataclasses.fields(group)}
        assert names <= {f.name for f in dataclasses.fields(Settings)} | {"rank", "alpha",
                                                                           "dropout",
                                                                           "target_modules"}


def test_overrides_and_lora_targets():
    settings = Settings.from_run_config({"allocation.fixed-split": 7,
                                         "lora.targets": "q_proj, v_proj",
                                         "train.learning-rate": 1})
    assert settings.split == 7 and settings.learning_rate == 1.0
    assert settings.lora.target_modules == ("q_proj", "v_proj")


@pytest.mark.parametrize("key, value, message", [
    ("allocation.fixed-split", 0, "config allocation.fixed-split = 0: must be >= 1"),
    ("allocation.fixed-split", "4", "config allocation.fixed-split = '4': expected int"),
    ("train.learning-rate", -0.1, "config train.learning-rate = -0.1: must be > 0"),
    ("train.client-fraction", 1.5, "config train.client-fraction = 1.5: must be in (0, 1]"),
    ("lora.dropout", 1.0, "config lora.dropout = 1.0: must be in [0, 1)"),
    ("train.batch-size", True, "config train.batch-size = True: expected int"),
])
def test_wrong_values_get_an_error_naming_the_key(key, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Settings.from_run_config({key: value})


def test_settings_import_nothing_of_ours_or_torch():
    import subprocess
    import sys

    code = ("import sys, edgesplit.settings; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'allocation', 'strategies', 'clients', 'fl_app')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
