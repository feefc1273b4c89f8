"""`stream.pace-links`: every stream frame, both ways, passes a pacer at the rate the allocator gave
its client (in-process, real ServerApp and ClientApp code; the pacer's sleep is recorded, not
slept, so nothing here depends on the wall clock)."""

import threading

import pytest

from allocation.makespan_methods import TOLERANCE
from edgesplit.pacing import Pacer
from harness.configs import tiny_run_config
from harness.inprocess import run_in_process

STEPS = 2


@pytest.fixture
def paced(monkeypatch):
    """Every Pacer.wait call: (rate, link, bytes, seconds charged); no real sleeping."""
    calls, lock = [], threading.Lock()

    def wait(self, nbytes):
        with lock:
            calls.append((self.rate_bps, self.link_bps, nbytes, self.cost_s(nbytes)))
        return self.cost_s(nbytes)

    monkeypatch.setattr(Pacer, "wait", wait)
    return calls


def _run(tmp_path, **keys):
    config = tiny_run_config(output_dir=str(tmp_path), run_name="paced",
                             keys={"train.rounds": 1, "train.local-steps": STEPS, **keys})
    return run_in_process(config, 4)


def test_every_frame_both_ways_is_paced_at_its_clients_allocated_rate(tmp_path, paced):
    strategy, _, (row,) = _run(tmp_path, **{"stream.pace-links": True})
    assert row["completed"] == 4 and not row["failures"]
    rates = {c["rate_bps"] for c in row["clients"]}
    assert len(rates) == 4  # four devices, four links
    for client in row["clients"]:
        mine = [c for c in paced if c[0] == client["rate_bps"]]
        # Each step: the activations (device) and the gradient (server), both at its rate, on
        # links not shaped in-process (the pacer alone makes the rate).
        assert len(mine) == 2 * STEPS, client
        assert all(link == float("inf") for _, link, _, _ in mine)
        # The bytes paced are the step's frames: what the round counted beyond the adapters.
        assert sum(n for _, _, n, _ in mine) <= client["bytes_up"] + client["bytes_down"]
        # A frame of n bytes is held 8 n / rate: the transfer the cost model charges.
        for rate, _, nbytes, charged in mine:
            assert charged == pytest.approx(8 * nbytes / rate)
        # The server's pacing of its answers (the smaller frames: the gradient alone, without
        # the mask and labels) is what it recorded for the client.
        answers = sorted(mine, key=lambda c: c[2])[:STEPS]
        assert client["measured_server_pacing_s"] == pytest.approx(
            sum(charged for *_, charged in answers))
        # Makespan model: the rate is the device's uplink, the one its transfer is costed at.
        per_step = client["modelled_transfer_s"] / STEPS
        assert client["rate_bps"] * per_step == pytest.approx(strategy.costs.bits_per_step)
        # ... and its adapter's upload after the last step: the head's LoRA weights, in fp32.
        head = strategy.model.lora_parameters(range(client["split"])).values()
        assert client["modelled_exchange_s"] == pytest.approx(
            sum(p.numel() for p in head) * 32 / client["rate_bps"])
        assert client["measured_reply_s"] >= 0.0


def test_off_by_default(tmp_path, paced):
    _, _, (row,) = _run(tmp_path)
    assert row["completed"] == 4
    assert paced == []


def test_a_shaped_link_is_paced_only_for_the_difference(tmp_path, paced):
    """A device on a shaped link (the testbed's) declares it: the pacer then holds its frames
    only for what the allocation costs beyond the link's own rate."""
    def shaped(grid):  # every device declares a shaped link, downlink 1 Gbit/s
        for context in grid.contexts.values():
            context.node_config.update({"device.link-shaped": True,
                                        "device.downlink-bps": 1e9})

    config = tiny_run_config(output_dir=str(tmp_path), run_name="paced",
                             keys={"train.rounds": 1, "train.local-steps": STEPS,
                                   "stream.pace-links": True})
    _, _, (row,) = run_in_process(config, 4, grid_hook=shaped)
    assert row["completed"] == 4
    uplinks = {c["rate_bps"] for c in row["clients"]}
    device_side = [c for c in paced if c[1] in uplinks]  # device frames: link = its uplink
    server_side = [c for c in paced if c[1] == 1e9]
    assert len(device_side) == len(server_side) == 4 * STEPS
    assert all(charged == 0.0 for *_, charged in device_side)  # the link is the allocation
    assert all(charged == pytest.approx(8 * n / rate - 8 * n / 1e9)
               for rate, _, n, charged in server_side)


def test_a_cell_clients_frames_are_paced_at_its_share_of_the_band(tmp_path, paced):
    """With a cell, the simulated 5G and LTE devices share its band: each is paced at its
    subchannels' rate, which its modelled transfer is costed at; the round's metrics carry
    the allocator's certificate."""
    strategy, _, (row,) = _run(tmp_path, **{"stream.pace-links": True,
                                            "allocation.cell-bandwidth-hz": 20e6,
                                            "allocation.cell-subchannels": 10})
    assert row["completed"] == 4
    cell = [c for c in row["clients"] if "bandwidth_hz" in c]
    assert cell and sum(c["subchannels"] for c in cell) <= 10
    for client in cell:
        assert client["bandwidth_hz"] == pytest.approx(client["subchannels"] * 2e6)
        assert len([c for c in paced if c[0] == client["rate_bps"]]) == 2 * STEPS
        per_step = client["modelled_transfer_s"] / STEPS
        assert client["rate_bps"] * per_step == pytest.approx(strategy.costs.bits_per_step)
    # Exact: the search stopped within its tolerance (up to float rounding of the gap).
    assert (row["allocation_search"].endswith("exact")
            and row["allocation_gap"] <= TOLERANCE * (1 + 1e-9))
