"""Run records kept under results/ name no machine's folders; other files are kept as they are."""

import json
import tempfile
from pathlib import Path

from experiments.records import PROJECT, keep_run, make_portable, portable

SCRATCH = Path(tempfile.gettempdir()).resolve()


def test_paths_become_project_relative_scratch_or_home_also_inside_longer_strings():
    record = {
        "python": f"{PROJECT}/.venv/bin/python",
        "project": str(PROJECT),
        "output": f"{SCRATCH}/default-run-x1y2/run",
        "model": f"{Path.home()}/.cache/edgesplit/models/smollm2-135m",
        "command": f"flwr run {PROJECT} --run-config run.output-dir=\"{SCRATCH}/abc/runs\"",
        "nested": [{"fleet": f"{PROJECT}/experiments/testbed_fleet.toml"}, 3, None, ""],
        "elsewhere": "/data/corpus.jsonl",
    }
    assert portable(record) == {
        "python": ".venv/bin/python",
        "project": ".",
        "output": "<scratch>/run",
        "model": "~/.cache/edgesplit/models/smollm2-135m",
        "command": "flwr run . --run-config run.output-dir=\"<scratch>/runs\"",
        "nested": [{"fleet": "experiments/testbed_fleet.toml"}, 3, None, ""],
        "elsewhere": "/data/corpus.jsonl",
    }
    # A folder whose name only starts like the project's is not inside it.
    if PROJECT.parent != SCRATCH:
        assert portable(f"{PROJECT}-old/x").endswith(f"{PROJECT.name}-old/x")


def test_a_record_made_in_another_checkout_names_its_folders_relative_to_that_checkout():
    """A run made in another worktree or clone: its folder is known by the `results/` or
    `experiments/` folder inside it, and every path under it, or it itself, becomes relative."""
    other = "/nonexistent-mount/wt/run"
    record = {"run.output-dir": f"{other}/results",
              "runtime": {"app": other, "edgesplit": f"{other}/edgesplit"},
              "adapter": f"{other}/results/cell_run/adapter",
              "fleet": "/nonexistent-mount/wt/bed/experiments/testbed_fleet.toml",
              "note": f"written by {other}/.venv/bin/python to {other}/results/x.csv",
              "unrelated": "/nonexistent-mount/wt/data/corpus.jsonl"}
    assert portable(record) == {
        "run.output-dir": "results", "runtime": {"app": ".", "edgesplit": "edgesplit"},
        "adapter": "results/cell_run/adapter", "fleet": "experiments/testbed_fleet.toml",
        "note": "written by .venv/bin/python to results/x.csv",
        "unrelated": "/nonexistent-mount/wt/data/corpus.jsonl"}


def test_keep_run_rewrites_the_records_and_copies_the_rest(tmp_path):
    run, out = tmp_path / "run", tmp_path / "out"
    (run / "figures").mkdir(parents=True)
    (run / "figures" / "loss.png").write_bytes(b"png")
    (run / "config.json").write_text(json.dumps({"run.output-dir": f"{SCRATCH}/r-1"}))
    metrics = json.dumps({"note": f"{PROJECT}/x"}) + "\n"
    (run / "metrics.jsonl").write_text(metrics)
    keep_run(run, out, ("config.json", "metrics.jsonl", "figures"))
    assert json.loads((out / "config.json").read_text()) == {"run.output-dir": "<scratch>"}
    assert (out / "metrics.jsonl").read_text() == metrics  # not a run record: as it was
    assert (out / "figures" / "loss.png").read_bytes() == b"png"


def test_make_portable_rewrites_records_in_place_and_leaves_an_adapter_alone(tmp_path):
    (tmp_path / "a" / "adapter").mkdir(parents=True)
    adapter = json.dumps({"base_model_name_or_path": f"{Path.home()}/.cache/m"})
    (tmp_path / "a" / "adapter" / "adapter_config.json").write_text(adapter)
    (tmp_path / "a" / "status.json").write_text(json.dumps({"python": f"{PROJECT}/py"}))
    (tmp_path / "fp.status.json").write_text(json.dumps({"app": f"{SCRATCH}/home/apps/x"}))
    make_portable(tmp_path)
    assert json.loads((tmp_path / "a" / "status.json").read_text()) == {"python": "py"}
    assert json.loads((tmp_path / "fp.status.json").read_text()) == {"app": "<scratch>/apps/x"}
    assert (tmp_path / "a" / "adapter" / "adapter_config.json").read_text() == adapter
