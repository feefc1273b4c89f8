"""Run settings: pyproject defaults parse, overrides apply, wrong values name their key."""

import re
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from fl_app.config import Settings

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def run_config() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]


def test_every_pyproject_key_is_a_setting_and_defaults_agree():
    config = run_config()
    settings = Settings.from_run_config(config)
    assert set(config) == set(settings.as_dict())
    assert settings.as_dict() == config
    assert Settings().as_dict() == config  # the dataclass defaults are the built-in job


def test_overrides_and_lora_targets():
    settings = Settings.from_run_config({"split": 7, "lora.targets": "q_proj, v_proj",
                                         "learning-rate": 1})
    assert settings.split == 7 and settings.learning_rate == 1.0
    assert settings.lora.target_modules == ("q_proj", "v_proj")


@pytest.mark.parametrize("key, value, message", [
    ("split", 0, "config split = 0: must be >= 1"),
    ("split", "4", "config split = '4': expected int"),
    ("learning-rate", -0.1, "config learning-rate = -0.1: must be > 0"),
    ("optimizer", "adam", "config optimizer = 'adam': one of"),
    ("allocator", "magic", "config allocator = 'magic': one of"),
    ("partitioning", "by-play", "config partitioning = 'by-play': one of"),
    ("fraction-train", 1.5, "config fraction-train = 1.5: must be in (0, 1]"),
    ("lora.dropout", 1.0, "config lora.dropout = 1.0: must be in [0, 1)"),
    ("batch-size", True, "config batch-size = True: expected int"),
])
def test_wrong_values_get_an_error_naming_the_key(key, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Settings.from_run_config({key: value})
