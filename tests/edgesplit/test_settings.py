"""Run settings: pyproject defaults parse, overrides apply, wrong values name their key."""

import dataclasses
import re
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from edgesplit.settings import DataSettings, LoraSettings, Settings

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def run_config() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]


def test_every_pyproject_key_is_a_setting_and_defaults_agree():
    config = run_config()
    settings = Settings.from_run_config(config)
    assert set(config) == set(settings.as_dict())
    assert settings.as_dict() == config
    assert Settings().as_dict() == config  # the dataclass defaults are the built-in job


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
    settings = Settings.from_run_config({"split": 7, "lora.targets": "q_proj, v_proj",
                                         "learning-rate": 1})
    assert settings.split == 7 and settings.learning_rate == 1.0
    assert settings.lora.target_modules == ("q_proj", "v_proj")


@pytest.mark.parametrize("key, value, message", [
    ("split", 0, "config split = 0: must be >= 1"),
    ("split", "4", "config split = '4': expected int"),
    ("learning-rate", -0.1, "config learning-rate = -0.1: must be > 0"),
    ("fraction-train", 1.5, "config fraction-train = 1.5: must be in (0, 1]"),
    ("lora.dropout", 1.0, "config lora.dropout = 1.0: must be in [0, 1)"),
    ("batch-size", True, "config batch-size = True: expected int"),
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
