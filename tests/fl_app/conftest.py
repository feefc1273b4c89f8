"""Fixtures for the end-to-end tests that start real Flower processes."""

import pytest

from harness.runtime import FlowerHarness, flower_processes_of, start_simulation_superlink


@pytest.fixture
def harness(tmp_path):
    """A private FLWR_HOME and process registry; every process it started is gone afterwards."""
    h = FlowerHarness(tmp_path / "flwr-home")
    yield h
    survivors = h.stop()
    assert not survivors, f"processes survived cleanup: {survivors}"
    assert not flower_processes_of(h)


@pytest.fixture(scope="session")
def simulation(tmp_path_factory):
    """(harness, connection) of one simulation SuperLink shared by the e2e runs that neither
    kill its processes nor need their own environment (each run is its own Flower run, with its
    own run id and output folder); stopped and checked for survivors at the end."""
    h = FlowerHarness(tmp_path_factory.mktemp("simulation") / "flwr-home")
    yield h, start_simulation_superlink(h, "e2e-sim")
    survivors = h.stop()
    assert not survivors, f"processes survived cleanup: {survivors}"
    assert not flower_processes_of(h)
