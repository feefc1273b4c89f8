"""The queue fit: fed rounds that the event simulation itself played, the simulation's queue
matches exactly and the mean-value model's (each `service_cv2`) is what `fifo_response_s` says
for the same inputs;
clients that never overlap queue for nothing in either."""

import json

import numpy as np
import pytest

from allocation.makespan_model import fifo_response_s
from allocation.queue_simulation import FORWARD_FRACTION, simulate
from experiments import queue_fit

STEPS = 2


def _played_round(round_, device, link, work, start):
    """A metrics row whose measured seconds are those of a simulated round."""
    played = simulate(device * FORWARD_FRACTION, link / 2, work, link / 2,
                      device * (1 - FORWARD_FRACTION), start_s=start, local_steps=STEPS)
    clients = [{"node": i, "label": "dev", "split": 2, "measured_device_s": device[i] * STEPS,
                "measured_transfer_s": link[i] * STEPS, "measured_server_s": work[i] * STEPS,
                "measured_start_s": start[i] + 3.0,  # offsets from the round message
                "measured_queue_s": played.queue_s[i] * STEPS,
                "measured_dataplane_s": played.dataplane_s[i]} for i in range(len(device))]
    return {"round": round_, "clients": clients}, played


def test_rounds_the_simulation_played_fit_it_exactly(tmp_path):
    rng = np.random.default_rng(3)
    (tmp_path / "runs").mkdir()
    rows, expected, deterministic = [], [], []
    for round_ in (1, 2, 3):
        device, link, work = (rng.uniform(0.2, 2.0, 4) for _ in range(3))
        start = rng.uniform(0.0, 1.0, 4)
        row, played = _played_round(round_, device, link, work, start)
        rows.append(row)
        if round_ >= 2:  # round 1 calibrates: not judged
            response = fifo_response_s(device + link, work, np.zeros(4, int), [1.0],
                                       (start - start.min()) / STEPS)
            expected += list((response - work) * STEPS)
            response = fifo_response_s(device + link, work, np.zeros(4, int), [1.0],
                                       (start - start.min()) / STEPS, service_cv2=0.0)
            deterministic += list((response - work) * STEPS)
    (tmp_path / "runs" / "fp-r0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    clients, summary = queue_fit.fit(tmp_path, STEPS)
    assert [c["round"] for c in clients] == [2] * 4 + [3] * 4
    for c in clients:
        assert c["simulated_queue_s"] == pytest.approx(c["measured_queue_s"], abs=1e-9)
    assert [c["model_queue_s"] for c in clients] == pytest.approx(expected)
    assert [c["model_cv2_0_queue_s"] for c in clients] == pytest.approx(deterministic)
    # A deterministic tail in service leaves half of itself on average: less to wait for.
    assert sum(deterministic) < sum(expected)
    assert summary["simulated"]["median_span_error"] == pytest.approx(0.0, abs=1e-9)
    queued = [c for c in clients if c["measured_queue_s"] >= queue_fit.MIN_QUEUE_S]
    assert summary["queued_clients"] == len(queued) > 0
    if summary["simulated"]["median_abs_error"] is not None:
        assert summary["simulated"]["median_abs_error"] == pytest.approx(0.0, abs=1e-9)


def test_clients_whose_data_planes_never_overlap_do_not_queue():
    device, link, work = np.array([1.0, 1.0]), np.array([0.2, 0.2]), np.array([0.5, 0.5])
    start = np.array([0.0, 100.0])  # the second starts long after the first ended
    row, _ = _played_round(2, device, link, work, start)
    clients, spans = queue_fit.round_queues(row, STEPS)
    for c in clients:
        assert c["measured_queue_s"] == c["model_queue_s"] == c["simulated_queue_s"] == 0.0
    assert spans["model"] == pytest.approx(spans["measured"])
    assert queue_fit.round_queues({"round": 2, "clients": row["clients"][:1]}, STEPS) == ([], {})
