"""Fixtures for the end-to-end tests that start real Flower processes."""

import pytest

from harness.runtime import FlowerHarness, flower_processes_of


@pytest.fixture
def harness(tmp_path):
    """A private FLWR_HOME and process registry; every process it started is gone afterwards."""
    h = FlowerHarness(tmp_path / "flwr-home")
    yield h
    survivors = h.stop()
    assert not survivors, f"processes survived cleanup: {survivors}"
    assert not flower_processes_of(h)
