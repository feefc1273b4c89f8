"""Where the cost model's per-client queue error comes from: the FIFO queue model and its
discrete-event oracle fed each testbed round's *measured* inputs, against the measured queue.

The testbed's fit (`experiments.testbed`) compares the model's prediction, made before the
round from calibrated speeds and the previous round's start offsets, with the clock. Its
per-client "server + queue" error mixes two causes: inputs predicted wrong (speeds, starts) and
the queue model itself. Here every client's own measured seconds of the round (device, link,
tail, start offset) go into ``makespan_model.fifo_response_s`` (the mean-value analysis the
allocator uses, which takes service times as exponential, and the same analysis with the
residual of a tail in service for less variable tails, ``service_cv2`` 0.5 and 0) and into
``queue_simulation.simulate`` (the round played event by event, deterministic tails), so what is
left against the measured queue is each queue model's own error.

    python -m experiments.queue_fit results/verdict/weak_devices [results/verdict/...]

Writes `<folder>/queue_fit.csv` (per run, round 2+ and client: measured, model and simulated
queue seconds) and `<folder>/queue_fit.json` (median absolute relative error of each over the
clients that queued at least `MIN_QUEUE_S`, their median ratio to the measured queue, and the
median relative error of the round's span).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from allocation.makespan_model import fifo_response_s
from allocation.queue_simulation import FORWARD_FRACTION, simulate
from experiments.plotting import write_csv
from experiments.testbed_verdict import JUDGED_FROM

#: Clients that queued less than this are left out of the relative errors (a ratio of two
#: near-zero waits says nothing).
MIN_QUEUE_S = 0.5
#: The model's variants by the tails' squared coefficient of variation (`fifo_response_s`'s
#: ``service_cv2``): the allocator's (1: exponential service), halfway, deterministic.
MODEL_CV2 = {"model": 1.0, "model_cv2_0.5": 0.5, "model_cv2_0": 0.0}
#: The queue estimates compared with the clock: the model's variants, the event simulation.
ESTIMATES = (*MODEL_CV2, "simulated")


def round_queues(row: Mapping, local_steps: int) -> tuple[list[dict], dict[str, float]]:
    """One round's clients with their measured queue and the two estimates from their measured
    inputs, and the round's span (first data-plane start to last end) measured and estimated;
    ([], {}) for a round with fewer than two measured clients (nothing to queue behind)."""
    clients = [c for c in row["clients"] if c.get("measured_dataplane_s") is not None]
    if len(clients) < 2:
        return [], {}

    def per_step(key: str) -> np.ndarray:
        return np.array([c[key] for c in clients], float) / local_steps

    device, link, work = (per_step(k) for k in ("measured_device_s", "measured_transfer_s",
                                                "measured_server_s"))
    start = np.array([c["measured_start_s"] for c in clients], float)
    start -= start.min()
    responses = {k: fifo_response_s(device + link, work, np.zeros(len(clients), int), [1.0],
                                    start / local_steps, service_cv2=cv2)
                 for k, cv2 in MODEL_CV2.items()}
    played = simulate(device * FORWARD_FRACTION, link / 2, work, link / 2,
                      device * (1 - FORWARD_FRACTION), start_s=start, local_steps=local_steps)
    queues = {**{k: (r - work) * local_steps for k, r in responses.items()},
              "simulated": played.queue_s * local_steps}
    measured_end = start + np.array([c["measured_dataplane_s"] for c in clients], float)
    spans = {"measured": float(measured_end.max()), "simulated": float(played.span_s),
             **{k: float(np.max(start + (device + link + r) * local_steps))
                for k, r in responses.items()}}
    out = [{"round": row["round"], "node": str(c["node"]), "class": c.get("label", ""),
            "split": c["split"], "measured_queue_s": c["measured_queue_s"],
            **{f"{k}_queue_s": float(v[i]) for k, v in queues.items()}}
           for i, c in enumerate(clients)]
    return out, spans


def fit(folder: Path, local_steps: int) -> tuple[list[dict], dict]:
    """Every judged round of every run in `folder/runs`: the client rows and the summary."""
    clients, spans = [], []
    for path in sorted((folder / "runs").glob("*.jsonl")):
        for row in map(json.loads, path.read_text().splitlines()):
            if row["round"] < JUDGED_FROM:
                continue
            rows, span = round_queues(row, local_steps)
            clients += [{"run": path.stem, **r} for r in rows]
            spans += [span] if span else []
    measured = np.array([c["measured_queue_s"] for c in clients], float)
    queued = measured >= MIN_QUEUE_S
    summary: dict = {"clients": len(clients), "queued_clients": int(queued.sum()),
                     "min_queue_s": MIN_QUEUE_S,
                     "measured_mean_queue_s": float(measured.mean()) if clients else None}
    for k in ESTIMATES:
        estimate = np.array([c[f"{k}_queue_s"] for c in clients], float)
        ratio = estimate[queued] / measured[queued]
        summary[k] = {
            "median_abs_error": float(np.median(np.abs(ratio - 1))) if ratio.size else None,
            "median_ratio": float(np.median(ratio)) if ratio.size else None,
            "mean_queue_s": float(estimate.mean()) if clients else None,
            "median_span_error": float(np.median([s[k] / s["measured"] - 1 for s in spans]))
            if spans else None}
    return clients, summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", type=Path, nargs="+", help="testbed output folders")
    args = parser.parse_args(argv)
    for folder in args.folders:
        local_steps = json.loads((folder / "summary.json").read_text())["local_steps"]
        clients, summary = fit(folder, local_steps)
        write_csv(clients, folder / "queue_fit.csv")
        (folder / "queue_fit.json").write_text(json.dumps(summary, indent=1) + "\n")
        print(folder, json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
