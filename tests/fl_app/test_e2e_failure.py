"""A failed run through the real `flwr run`: Flower still exits 0, so the failure must be
unmistakable in the log's last words, in Flower's run status and in the run folder."""

from __future__ import annotations

import json

import pytest

from harness.runtime import flwr_bin, run_status, started_run_id

pytestmark = pytest.mark.e2e


def test_a_failing_serverapp_ends_the_log_with_its_cause(simulation, tmp_path):
    # Prepare
    harness, superlink = simulation
    missing, out = tmp_path / "nowhere.jsonl", tmp_path / "outputs"

    # Execute
    rc, log = harness.run("flwr-run-failing", [
        flwr_bin("flwr"), "run", ".", superlink, "--run-config",
        f'model.name="tiny-llama" data.corpus="{missing}" run.output-dir="{out}" run.name="failed"',
        "--federation-config", "num-supernodes=2 client-resources-num-cpus=1", "--stream",
    ], timeout_s=300)

    # Assert: Flower's exit code says nothing (documented in the README)...
    assert rc == 0, log[-6000:]
    cause = f"ValueError: corpus '{missing}': no such file or folder"
    assert "EdgeSplit ServerApp: python" in log
    # ...our line names the cause, and Flower's short traceback after it ends with it again
    assert f"run failed: {cause}" in log, log[-6000:]
    after = log[log.index("run failed: "):]
    assert f"RunFailed: {cause}" in after, after
    # (Ray's own lines interleave with it, so only the traceback itself is counted.)
    traceback = after[after.index("Traceback"):after.index(f"RunFailed: {cause}")]
    assert traceback.count("\n") < 30, traceback
    assert run_status(harness, superlink, started_run_id(log)) == "finished:failed"
    status = json.loads((out / "failed" / "status.json").read_text())
    assert status["status"] == "failed" and status["error"].startswith(cause)
