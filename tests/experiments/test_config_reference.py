"""docs/config.md's key reference is what pyproject.toml and the settings say (it lists the
old flat keys: rename-keys: keep)."""

from experiments import config_reference
from experiments.config_reference import PAGE, render


def test_the_page_is_up_to_date():
    assert config_reference.main(["--check"]) == 0, (
        "docs/config.md is stale: run `python -m experiments.config_reference`")


def test_every_key_appears_once_with_its_default_and_conditions():
    reference = render()
    assert reference in PAGE.read_text()
    assert reference.count("| `train.rounds` (start here) | `3` |") == 1
    assert "| `allocation.server-bandwidth-hz` | `20e6` | allocation.cost-model = \"paper\" |" \
        in reference
    assert "| `num-server-rounds` | `train.rounds` |" in reference
