"""The verdict's runs and tables (issue 23): which runs in which order, and a regime's summary
and report section checked against an independent computation from the same round rows (no
testbed needed: rows as a run's metrics hold them)."""

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from allocation.makespan_model import USABLE_MEMORY
from edgesplit.split_model import SplitModel
from experiments import testbed, testbed_verdict
from experiments.report import verdict as section
from fl_app.run_config import parse
from harness.inprocess import run_in_process
from harness.testbed import load_fleet
from strategies.split_fed import model_cost

EXPERIMENTS = Path(testbed.__file__).parent


def test_fixed_splits_bracket_and_stay_off_edge_only_and_local_only():
    assert testbed_verdict.fixed_brackets(30) == [4, 15, 28]  # SmolLM2
    assert testbed_verdict.fixed_brackets(4) == [2]
    assert testbed_verdict.fixed_brackets(3) == []
    methods = dict(testbed_verdict.methods(30, with_random=True))
    assert list(methods) == ["fp", "fp-energy", "fp-paper", "fp-no-upload", "edge-only",
                             "fixed-4", "fixed-15", "fixed-28", "local-only", "random"]
    assert methods["fp-no-upload"] == {**methods["fp"], "allocation.adapter-upload": False}
    # Each fp variant names its weights, fp the run config's default, so a kept record says
    # what it ran and `--resume` reruns fp when the default changes.
    assert {m: methods[m] for m in ("fp", "fp-energy", "fp-paper")} == {
        m: {"allocation.method": "fp", "allocation.objective-weights": w}
        for m, w in (("fp", parse({}).objective_weights), ("fp-energy", "1,1,0"),
                     ("fp-paper", "1,1,1"))}
    # A split a method asks for is a floor: a device that cannot hold it is excluded.
    assert methods["fixed-15"]["privacy.min-device-layers"] == 15
    assert methods["local-only"] == {"allocation.method": "local-only",
                                     "privacy.min-device-layers": 29}
    assert "privacy.min-device-layers" not in methods["fp"]


@pytest.mark.parametrize("n_methods, repeats", [(6, 3), (7, 3), (2, 1), (3, 5)])
def test_each_repeat_runs_every_method_once_in_a_rotated_order(n_methods, repeats):
    methods = [(f"m{i}", {"allocation.method": f"m{i}"}) for i in range(n_methods)]
    runs = testbed_verdict.plan(methods, repeats, seed=7)
    assert len(runs) == n_methods * repeats
    assert len({r["run"] for r in runs}) == len(runs)
    names = [m for m, _ in methods]
    for r in range(repeats):
        mine = [x for x in runs if x["repeat"] == r]
        order = [x["method"] for x in mine]
        shift = names.index(order[0])
        assert order == names[shift:] + names[:shift]  # a rotation
        assert [x["position"] for x in mine] == list(range(n_methods))
        assert all(x["seed"] == 7 + r and x["overrides"]["run.seed"] == 7 + r for x in mine)
        assert all(x["overrides"]["eval.every"] == 1 for x in mine)
    # Drift spreads: no method runs at the same position in every repeat (with 2+ repeats,
    # as far as there are positions to spread over).
    for name in names:
        positions = [x["position"] for x in runs if x["method"] == name]
        assert len(set(positions)) == min(repeats, n_methods)


def _metrics_row(round_, train_s, makespans, ppl, excluded=0, failed=0):
    """One round of a run's metrics.jsonl, as much of it as the tables read."""
    clients = [{"node": i, "label": "dev", "split": 2, "bytes_up": 1000, "bytes_down": 2000,
                "measured_dataplane_s": m, "measured_start_s": 1.0, "measured_s": m + 2}
               for i, m in enumerate(makespans)]
    failures = {**{str(100 + i): "allocation: memory: 0.75 GB usable" for i in range(excluded)},
                **{str(200 + i): "timeout" for i in range(failed)}}
    return {"round": round_, "sampled": len(makespans) + excluded + failed,
            "completed": len(makespans), "clients": clients, "failures": failures,
            "modelled_delay_s": 0.5, "modelled_energy_j": 1.5, "time_train_s": train_s,
            "time_round_s": train_s + 3, "bytes_up": 1000 * len(makespans),
            "bytes_down": 2000 * len(makespans), "heldout_ppl": ppl,
            "time_calibrate_s": 35.0 + round_ if round_ == 1 else 0.0}


METHODS = {"fp": 10.0, "edge-only": 14.0, "local-only": 30.0}  # typical round seconds
ROUNDS, REPEATS, STEPS = 3, 3, 4


@pytest.fixture(scope="module")
def regime(tmp_path_factory):
    """A verdict folder written by the verdict's own tabulation from synthetic metrics rows,
    and those rows (method -> repeat -> rows)."""
    rng = np.random.default_rng(0)
    runs = testbed_verdict.plan([(m, {}) for m in METHODS], REPEATS, seed=0)
    metrics, rounds = {}, []
    for run in runs:
        base = METHODS[run["method"]]
        excluded = 2 if run["method"] == "local-only" else 0
        rows = [_metrics_row(k, base * rng.uniform(0.8, 1.2) * (3 if k == 1 else 1),
                             list(base * rng.uniform(0.5, 0.9, 3)),
                             40.0 / k + rng.uniform(0, 1), excluded=excluded)
                for k in range(1, ROUNDS + 1)]
        metrics.setdefault(run["method"], {})[run["repeat"]] = rows
        rounds += testbed.round_rows(run["run"], rows, STEPS, "0.1 0.1 0.1")
    folder = tmp_path_factory.mktemp("results") / "verdict" / "weak_devices"
    folder.mkdir(parents=True)
    target = testbed_verdict.write(folder, runs, rounds, None, "synthetic")
    (folder / "queue_fit.json").write_text(json.dumps({
        "clients": 180, "queued_clients": 97, "min_queue_s": 0.5,
        "model": {"median_abs_error": 0.3596, "median_ratio": 1.2454,
                  "median_span_error": 0.0059},
        "simulated": {"median_abs_error": 0.2394, "median_ratio": 0.7899,
                      "median_span_error": -0.0028},
        "model_cv2_0": {"median_abs_error": 0.2241, "median_ratio": 0.9152,
                        "median_span_error": -0.0001}}))
    (folder / "summary.json").write_text(json.dumps({
        "model": "tiny-llama", "fleet": "experiments/fleet_weak_devices.toml",
        "devices": ["a", "b", "c"], "rounds": ROUNDS, "local_steps": STEPS, "batch_size": 4,
        "seed": 0, "median_abs_error": {"device": 0.123, "transfer": None, "round": 0.31},
        "verdict": {"repeats": REPEATS, "target_ppl": target,
                               "target_ppl_given": None, "failed_runs": {},
                               "fleet_name": "weak_devices"}}))
    return folder, metrics, target


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _interval(values):
    """Mean and 95% Student-t half-width, computed independently of the report's helpers."""
    values = np.asarray(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(),
                                 scale=stats.sem(values))
    return values.mean(), (high - low) / 2


def test_the_summary_and_the_section_say_what_the_rows_say(regime):
    folder, metrics, target = regime
    last = [rows[-1]["heldout_ppl"] for runs in metrics.values() for rows in runs.values()]
    assert target == max(last)
    text = section.render(folder.parent.parent)
    assert "verdict.png" in text
    # The other regime has no folder: the section says so, with its command.
    (pending,) = [x for x in text.split("\n### ") if "Not run yet" in x]
    assert pending.startswith("capable devices, crowded server (`crowded_server`)")
    assert "--verdict --fleet experiments/fleet_crowded_server.toml" in pending
    assert (folder / "verdict.png").is_file()
    assert ("(`summary.json`): device 12%, whole round 31%. Goal at most 20%: **missed** for "
            "whole round.") in text
    assert ("its queue is off by a median 36% (median ratio to the clock 1.25) over the 97 "
            "clients that queued at least 0.5 s, the event simulation's by 24% (ratio 0.79); "
            "the round's span is within 0.6% (model) and 0.3% (simulation). The model with "
            "the residual of deterministic tails (`service_cv2` 0): queue off by 22% (ratio "
            "0.92), span within 0.0%.\n") in text
    means = {m: float(r["measured_round_s_mean"])
             for m, r in ((r["method"], r) for r in _csv(folder / "verdict.csv"))}
    # No run records its end time here: the section says nothing about sittings.
    assert ("Sittings: round 1's calibration, the same timed work in every run, took 36 s in "
            "the fixed policies' runs; against it fp +0%.\n") in text
    assert (f"fp against local-only: {means['local-only'] / means['fp']:.2f}x as fast (goal at "
            "least 1.5x): met.") in text
    for method, runs in metrics.items():
        per_repeat = [np.mean([r["time_train_s"] for r in rows[1:]]) for rows in runs.values()]
        mean, half = _interval(per_repeat)
        assert f"{mean:.1f} ± {half:.1f} (n={REPEATS})" in text, method
        makespan = [np.mean([max(c["measured_dataplane_s"] for c in r["clients"])
                             for r in rows[1:]]) for rows in runs.values()]
        mean, half = _interval(makespan)
        assert f"{mean:.1f} ± {half:.1f} (n={REPEATS})" in text, method
        # The first round at or below the target, and the round time summed up to it.
        reached = [next((r["round"], sum(x["time_train_s"] for x in rows[:i + 1]))
                        for i, r in enumerate(rows) if r["heldout_ppl"] <= target)
                   for rows in runs.values()]
        mean, half = _interval([t for _, t in reached])
        assert f"{mean:.1f} ± {half:.1f} (n={REPEATS})" in text, method
        line = next(x for x in text.splitlines() if x.startswith(f"| {method} |"))
        excluded = "2.0 ± 0.0" if method == "local-only" else "0.0 ± 0.0"
        assert f"| {excluded} (n={REPEATS}) |" in line
        assert line.count(f"| 36.0 ± 0.0 (n={REPEATS}) |") == 1  # round 1's calibration
        rounds = sorted({r for r, _ in reached})
        shown = str(rounds[0]) if len(rounds) == 1 else f"{rounds[0]}-{rounds[-1]}"
        assert f"| {shown} | {REPEATS}/{REPEATS} |" in line


def test_the_goals_compare_fp_with_the_methods_the_issue_names():
    weak = {"fp": 10.0, "edge-only": 20.0, "fixed-4": 10.4, "fixed-15": 12.0, "fixed-28": 30.0,
            "local-only": 16.0}
    assert section.regime_goals("weak_devices", weak) == [
        "fp against local-only: 1.60x as fast (goal at least 1.5x): met.",
        "fp against the best fixed split, fixed-4: -3.8% round time (goal at most +5.0%): met."]
    crowded = {"fp": 10.0, "edge-only": 11.0, "fixed-4": 12.0, "fixed-15": 9.0,
               "fixed-28": 10.0, "local-only": 9.8, "random": 8.0}
    assert section.regime_goals("crowded_server", crowded) == [
        "fp against edge-only: 1.10x as fast (goal at least 1.15x): **missed**.",
        "fp against the best fixed policy (local-only and edge-only included), fixed-15: "
        "+11.1% round time (goal at most +5.0%): **missed**.",
        "Not among this regime's goals: the fastest method besides fp's variants was random, "
        "and fp's round time was +25.0% against it."]
    # fp's other objectives are judged the same way, beside fp, and are no fixed policy.
    assert section.regime_goals(
        "crowded_server", {**crowded, "fp-energy": 9.0, "fp-paper": 12.0})[2:-1] == [
        "fp-energy against edge-only: 1.22x as fast (goal at least 1.15x): met.",
        "fp-energy against the best fixed policy (local-only and edge-only included), "
        "fixed-15: +0.0% round time (goal at most +5.0%): met.",
        "fp-paper against edge-only: 0.92x as fast (goal at least 1.15x): **missed**.",
        "fp-paper against the best fixed policy (local-only and edge-only included), "
        "fixed-15: +33.3% round time (goal at most +5.0%): **missed**."]
    # Against each regime's best method (random included): fixed-4 +4.0% / +50.0%, ...
    both = section.cross_goal({"weak_devices": weak, "crowded_server": crowded})
    assert both.endswith(": met.") and "fixed-4 +4.0% / +50.0%" in both
    crowded["fixed-4"] = 8.3  # now within 5% of the best (random, 8.0) there too
    both = section.cross_goal({"weak_devices": weak, "crowded_server": crowded})
    assert both.endswith("**missed** (fixed-4 is within it in both).")
    assert section.regime_goals("weak_devices", {"edge-only": 3.0}) == [
        "fp has no judged round: no goal can be checked."]
    # Edge-only is none of regime (i)'s rivals; when it is the fastest, the goals say so.
    assert section.regime_goals("weak_devices", {**weak, "edge-only": 8.0})[-1] == (
        "Not among this regime's goals: the fastest method besides fp's variants was edge-only, "
        "and fp's round time was +25.0% against it.")


def test_without_results_the_section_says_how_to_run_it(tmp_path):
    text = section.render(tmp_path)
    assert "Not run yet" in text
    assert "--verdict --fleet experiments/fleet_weak_devices.toml" in text
    assert "--verdict --fleet experiments/fleet_crowded_server.toml" in text


def test_a_finished_verdict_folder_is_tabulated_again_from_its_runs(tmp_path, regime):
    """`--tabulate` on a verdict folder rewrites verdict.csv from the runs' metrics, as the
    testbed run wrote it."""
    folder, metrics, target = regime
    runs = testbed_verdict.plan([(m, {}) for m in METHODS], REPEATS, seed=0)
    (tmp_path / "runs").mkdir()
    for run in runs:
        rows = metrics[run["method"]][run["repeat"]]
        (tmp_path / "runs" / f"{run['run']}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows))
    summary = json.loads((folder / "summary.json").read_text())
    summary["runs"] = [r["run"] for r in runs]
    summary["verdict"]["runs"] = [{k: v for k, v in r.items() if k != "overrides"}
                                  for r in runs]
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "rounds.csv").write_text("run,load_average\n")
    testbed.main(["--tabulate", str(tmp_path)])
    assert (tmp_path / "verdict.csv").read_text() == (folder / "verdict.csv").read_text()
    assert json.loads((tmp_path / "summary.json").read_text())["verdict"]["target_ppl"] == target


def test_the_verdict_runs_train_and_local_only_excludes_a_device_that_cannot_hold_it(tmp_path):
    """The run configs `--verdict` gives the testbed, run in process (the real ServerApp and
    ClientApp code, no testbed) on three tiny-llama devices, one of which declares memory for
    split 1 but not for local-only's split 3: local-only excludes it every round and counts it,
    fp keeps it; both evaluate the held-out perplexity."""
    args = argparse.Namespace(model="tiny-llama", corpus="shakespeare", rounds=1, local_steps=2,
                              batch_size=8, block_size=128, seed=0, server_queue="fifo",
                              no_agents=False,
                              work=tmp_path)  # memory needs above the profile's 10 MB floor
    fleet = load_fleet(EXPERIMENTS / "fleet_weak_devices.toml")
    runs = testbed_verdict.plan(
        [m for m in testbed_verdict.methods(4) if m[0] in ("fp", "local-only")], 1, seed=0)
    configs = {r["method"]: testbed.run_config(args, fleet, r["run"], r["overrides"])
               for r in runs}
    settings = parse(configs["fp"])
    need = model_cost(settings, SplitModel(settings.model_name, settings.lora)).device_bytes(
        np.array([1, 3]))
    memory_gb = float(need.mean()) / USABLE_MEMORY / 1e9  # holds split 1, not split 3

    def small_first_device(grid):
        grid.contexts[1].node_config["device.memory-gb"] = memory_gb

    rounds = {m: testbed.round_rows(m, run_in_process(c, 3, grid_hook=small_first_device)[2],
                                    args.local_steps, "")
              for m, c in configs.items()}
    assert [(r["completed"], r["excluded_memory"], r["splits"]) for r in rounds["local-only"]] \
        == [(2, 1, "3 3")]
    assert [(r["completed"], r["excluded_memory"]) for r in rounds["fp"]] == [(3, 0)]
    for method, rows in rounds.items():
        assert all(r["heldout_ppl"] > 0 and r["measured_train_phase_s"] > 0 for r in rows), method


def _scratch_run(work: Path, name: str, rows: list[dict], status: str) -> None:
    """A run folder as the testbed's scratch holds it when the run ends."""
    run = work / "runs" / name
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "status.json").write_text(json.dumps({"status": status}))


def test_resume_keeps_only_runs_that_completed_with_the_same_config(tmp_path):
    work, out = tmp_path / "scratch", tmp_path / "out"
    rows = [_metrics_row(1, 10.0, [5.0], 40.0)]
    config = {"model.name": "tiny-llama", "train.rounds": 1,
              "run.output-dir": str(work / "runs")}
    _scratch_run(work, "fp-r0", rows, "completed")
    _scratch_run(work, "edge-only-r0", rows[:0], "failed")
    for name in ("fp-r0", "edge-only-r0"):
        testbed.keep_run(work, out, name, "0.5 0.5 0.5", config)
    elsewhere = {**config, "run.output-dir": "/another/scratch"}  # where it ran does not matter
    planned = {"fp-r0": elsewhere, "edge-only-r0": elsewhere, "local-only-r0": elsewhere}
    assert testbed.completed_runs(out, planned) == ["fp-r0"]
    assert testbed.completed_runs(out, {"fp-r0": {**config, "train.rounds": 2}}) == []
    clients, rounds = testbed.tabulate_run(out, "fp-r0", local_steps=2)
    assert [r["run"] for r in rounds] == ["fp-r0"] and len(clients) == 1
    assert rounds[0]["load_average"].startswith("0.5 0.5 0.5 -> ")
    # A later try that did not complete (interrupted, failed) keeps the completed record...
    (work / "runs" / "fp-r0" / "status.json").write_text(json.dumps({"status": "running"}))
    testbed.keep_run(work, out, "fp-r0", "", config)
    assert testbed.completed_runs(out, planned) == ["fp-r0"]
    assert (out / "runs" / "fp-r0.incomplete.jsonl").is_file()
    # ...and one that completed replaces every record of the earlier try.
    (work / "runs" / "fp-r0" / "status.json").write_text(json.dumps({"status": "completed"}))
    (work / "runs" / "fp-r0" / "metrics.jsonl").unlink()
    testbed.keep_run(work, out, "fp-r0", "", config)
    assert not (out / "runs" / "fp-r0.jsonl").exists()
    assert not (out / "runs" / "fp-r0.incomplete.jsonl").exists()
    assert testbed.completed_runs(out, planned) == []


def test_a_verdict_whose_runs_all_completed_resumes_to_its_tables_without_a_testbed(
        tmp_path, regime, monkeypatch):
    """`--resume` on a folder whose runs all completed (as `keep_run` left them) starts no
    testbed and writes the same verdict table the runs' own tabulation gave."""
    folder, metrics, _ = regime
    argv = ["--verdict", "--fleet", str(EXPERIMENTS / "fleet_weak_devices.toml"), "--layers",
            "30", "--only", ",".join(METHODS), "--rounds", str(ROUNDS), "--local-steps",
            str(STEPS), "--out", str(tmp_path / "verdict"), "--resume"]
    args = testbed.parse_args(argv)
    args.work = tmp_path / "scratch"
    fleet = load_fleet(args.fleet)
    methods = [m for m in testbed_verdict.methods(30) if m[0] in METHODS]
    for run in testbed_verdict.plan(methods, REPEATS, seed=0):
        _scratch_run(args.work, run["run"], metrics[run["method"]][run["repeat"]], "completed")
        testbed.keep_run(args.work, args.out, run["run"], "0.1 0.1 0.1",
                         testbed.run_config(args, fleet, run["run"], run["overrides"]))

    def no_testbed(*_args, **_kwargs):
        raise AssertionError("--resume started a testbed with nothing left to run")

    monkeypatch.setattr(testbed, "Testbed", no_testbed)
    testbed.main(argv)
    assert (args.out / "verdict.csv").read_text() == (folder / "verdict.csv").read_text()
    summary = json.loads((args.out / "summary.json").read_text())
    assert len(summary["kept_from_earlier"]) == len(METHODS) * REPEATS
    assert summary["outcome"] == "completed"
    assert not (args.out / "logs-2").exists() and not (args.out / "links.csv").exists()


def test_a_variant_made_in_another_sitting_is_said_beside_its_goals(tmp_path):
    """The fixed policies' runs ended 08:00-09:00 and calibrated in 30 and 36 s (mean 33); fp's
    ended among them (08:30, 09:00); fp-energy's after (14:00): another sitting, whose
    calibration took 45 s (+36%). Only fp-energy's goals carry the aside."""
    with (tmp_path / "verdict.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "calibrate_s_mean"])
        writer.writerows([["fp", 34.0], ["fp-energy", 45.0], ["fixed-4", 30.0],
                          ["local-only", 36.0]])
    (tmp_path / "runs").mkdir()
    for run, ended in (("fixed-4-r0", "08:00"), ("local-only-r0", "09:00"), ("fp-r0", "08:30"),
                       ("fp-r1", "09:00"), ("fp-energy-r0", "14:00")):
        (tmp_path / "runs" / f"{run}.status.json").write_text(
            json.dumps({"updated": f"2026-12-07T{ended}:00"}))
    assert section.made_apart(tmp_path) == {"fp-energy"}
    line = section.drift_line(tmp_path, section.made_apart(tmp_path))
    assert "took 33 s in the fixed policies' runs; against it fp +3%, fp-energy +36%." in line
    assert "Made in the fixed policies' sitting, their runs interleaved: fp." in line
    assert "Made in another sitting: fp-energy: its goals compare sittings as much as" in line
    goals = section.regime_goals("weak_devices", {"fp": 10.0, "fp-energy": 12.0,
                                                  "fixed-4": 11.0, "local-only": 20.0},
                                 section.made_apart(tmp_path))
    assert [g.endswith("compares sittings as much as methods).") for g in goals] == [
        False, False, True, True]
