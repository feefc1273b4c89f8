"""The soak's checks: a dropped client is explained only by a fault drawn for that very client
(its partition), not by any fault drawn that round."""

import argparse

import torch

from clients.faults import drawn, parse_kinds
from experiments.soak import check

ARGS = argparse.Namespace(fault_rate=0.3, fault_kinds="raise,silent", seed=0, clients=6)


def rounds_with_faults(n_rounds: int, swap: int | None = None) -> list[dict]:
    """Metrics rows where node 100 + p holds partition p and exactly the drawn partitions fail;
    with ``swap``, that round drops a healthy client instead of the faulty one (same count)."""
    kinds = parse_kinds(ARGS.fault_kinds)
    rows = []
    for k in range(1, n_rounds + 1):
        faulty = [p for p in range(ARGS.clients)
                  if drawn(ARGS.fault_rate, kinds, ARGS.seed, k, p) is not None]
        if k == swap:
            healthy = next(p for p in range(ARGS.clients) if p not in faulty)
            faulty = [healthy, *faulty[1:]]
        rows.append({"round": k, "failures": {str(100 + p): "injected" for p in faulty},
                     "clients": [{"node": 100 + p, "partition": p} for p in range(ARGS.clients)],
                     "server_rss_mb": 500.0, "server_peak_rss_mb": 510.0, "train_loss": 1.0})
    return rows


def checkpoints(run_dir, n_rounds: int) -> None:
    (run_dir / "checkpoints").mkdir(parents=True)
    for k in range(1, n_rounds + 1):
        torch.save({"round": k}, run_dir / "checkpoints" / f"round-{k:04d}.pt")


def test_drops_of_the_faulty_clients_are_explained(tmp_path):
    rows = rounds_with_faults(12)
    assert sum(len(r["failures"]) for r in rows) > 0
    checkpoints(tmp_path, 12)
    summary = check(rows, tmp_path, ARGS, limit_mb=2000.0)
    assert summary["ok_explained"] and summary["ok_checkpoints"]


def test_a_healthy_client_dropped_in_a_faulty_ones_place_is_not_explained(tmp_path):
    """The same number of drops as faults drawn, but the wrong client: counting alone would
    call it explained."""
    rounds = rounds_with_faults(12)
    swap = next(r["round"] for r in rounds if r["failures"])
    rows = rounds_with_faults(12, swap=swap)
    checkpoints(tmp_path, 12)
    summary = check(rows, tmp_path, ARGS, limit_mb=2000.0)
    assert not summary["ok_explained"]
    (bad,) = summary["failures_unexplained"]
    assert bad["round"] == swap and len(bad["drawn"]) == len(bad["dropped"])
