"""What a user sees of a run: it starts with only a model named, its folder shows the text change
(generations, figures) and its status, `experiments.generate` reproduces its samples, and a
failure says why."""

from __future__ import annotations

import json
import logging

import pytest
from flwr.app import Context, RecordDict

from experiments import generate
from fl_app import provenance
from fl_app.client_app import app as client_app
from fl_app.server_app import RunFailed, main
from harness.configs import tiny_run_config
from harness.inprocess import InProcessGrid, run_in_process

PNG = b"\x89PNG\r\n\x1a\n"


def test_naming_only_the_model_runs_although_the_default_split_does_not_fit_it(tmp_path):
    """`split` (default 4) only matters to the fixed allocators; fp picks splits itself."""
    config = {"model.name": "tiny-llama",  # the rest only shrinks the run
              "data.corpus": "synthetic", "train.rounds": 1, "train.local-steps": 1,
              "eval.every": 0, "run.output-dir": str(tmp_path), "run.name": "run"}
    strategy, _, rows = run_in_process(config, 2)
    assert (strategy.settings.split, strategy.settings.allocator) == (4, "fp")
    assert rows[0]["completed"] == 2
    assert all(1 <= c["split"] <= 3 for c in rows[0]["clients"])


def test_a_run_folder_shows_generations_figures_and_status(tmp_path, capsys):
    # Execute
    config = tiny_run_config(output_dir=str(tmp_path), run_name="run", num_server_rounds=2,
                             eval_every=1, sample_prompts="Hello| World ", sample_tokens=6)
    run_in_process(config, 3)

    # Assert: one generation per prompt and evaluation round
    folder = tmp_path / "run"
    samples = [json.loads(line) for line in (folder / "generations.jsonl").open()]
    assert [(s["round"], s["prompt"]) for s in samples] == [
        (1, "Hello"), (1, "World"), (2, "Hello"), (2, "World")]
    assert all(isinstance(s["generation"], str) for s in samples)
    for name in ("training.png", "clients.png", "time.png"):
        assert (folder / "figures" / name).read_bytes().startswith(PNG)
    status = json.loads((folder / "status.json").read_text())
    assert status["status"] == "completed" and status["adapter"] == str(folder / "adapter")
    assert status["runtime"]["versions"]["torch"]
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").open()]
    assert all(c["bytes_up"] > 0 and c["bytes_down"] > 0 for r in rows for c in r["clients"])
    assert all(0 < r["time_samples_s"] < r["time_eval_s"] for r in rows)

    # The command loads the adapter with peft on its own and generates the same text
    for server_round, args in ((2, []), (1, ["--round", "1"])):
        generate.main(["--run", str(folder), "--prompt", "Hello", "--prompt", "World", *args])
        printed = capsys.readouterr().out
        for s in samples:
            if s["round"] == server_round:
                assert f"prompt: {s['prompt']!r}\n  adapter: {s['generation']!r}" in printed


def test_a_failed_run_ends_with_its_cause_in_the_log_and_the_run_folder(tmp_path, caplog):
    # Prepare
    missing = tmp_path / "nowhere.jsonl"
    config = tiny_run_config(output_dir=str(tmp_path), run_name="run", corpus=str(missing))
    grid = InProcessGrid(client_app, config, 2)

    # Execute
    with caplog.at_level(logging.INFO), pytest.raises(RunFailed, match="nowhere.jsonl"):
        main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                           run_config=config))

    # Assert
    cause = f"ValueError: corpus '{missing}': no such file or folder"
    assert caplog.records[-1].levelno == logging.ERROR
    assert caplog.records[-1].getMessage().startswith(f"run failed: {cause}")
    assert "EdgeSplit ServerApp: python" in caplog.text  # which environment served the run
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "failed" and status["error"].startswith(cause)


def test_the_environment_check_names_what_differs_from_the_project(tmp_path):
    # Prepare
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["torch>=2.4", "flwr[simulation]==0.0.1", '
                         '"peft==0.21.2", "nonexistent-package==1.0"]\n')

    # Execute
    pinned = provenance.pins(pyproject)
    found = provenance.mismatches(pinned)

    # Assert
    assert pinned == {"flwr": "0.0.1", "peft": "0.21.2", "nonexistent-package": "1.0"}
    assert [m.split(" in ")[0] for m in found] == [
        "flwr==0.0.1 pinned, 1.41.0", "nonexistent-package==1.0 pinned, not installed"]
    assert not any("edgesplit imported" in m for m in provenance.runtime()["mismatches"])
