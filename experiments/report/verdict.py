"""Section: the clock's verdict (issue 23): fp against edge-only, fixed splits and local-only on
the emulated testbed with SmolLM2, per regime (a folder results/verdict/<fleet name>/ written by
`python -m experiments.testbed --verdict`), repeated, with 95% intervals."""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path

import numpy as np

from experiments.report.stats import load_json, num, pct, rows, table

FOLDER = "verdict"
#: The regimes issue 23 asks for: results folder name (the fleet file's, less `fleet_`) -> what
#: it is.
REGIMES = {"weak_devices": "weak devices, strong server",
           "crowded_server": "capable devices, crowded server"}
COMMAND = ("sudo flock /tmp/edgesplit-testbed.lock flock /tmp/edgesplit-clock.lock "
           "python -m experiments.testbed --verdict --fleet experiments/fleet_{name}.toml "
           "--model smollm2-135m --layers 30 --rounds 3 --local-steps 2 --batch-size 2")
#: Issue 23's goals on the mean round wall time (rounds 2+): within this margin of the best
#: counts as "as fast".
MARGIN = 0.05
#: The modelled per-client time's goal: median absolute relative error at most this.
ERROR_GOAL = 0.20
#: Parts of the per-client fit (`experiments.testbed.PARTS`) the section shows.
ERROR_PARTS = {"device": "device", "transfer": "transfer",
               "server+queue-fifo": "server + queue (FIFO)",
               "dataplane-fifo": "data plane (FIFO)", "reply": "reply (adapter upload)",
               "round": "whole round"}
#: verdict.csv quantity -> (column header, scale, digits).
COLUMNS = {"measured_round_s": ("round wall time (s)", 1.0, 1),
           "measured_makespan_s": ("data-plane makespan (s)", 1.0, 1),
           "bytes_wire": ("on the wire (MB)", 1e-6, 1),
           "modelled_energy_j": ("modelled energy (J)", 1.0, 1),
           "excluded": ("excluded (memory)", 1.0, 1), "failed": ("failed", 1.0, 1),
           "calibrate_s": ("round-1 calibration (s): same work every run", 1.0, 1)}


def interval(mean: str, half: str, n: int, scale: float = 1.0, digits: int = 1) -> str:
    """`mean ± half (n=k)` from a summary row's strings (`single run` without a half-width,
    `n/a` without a mean)."""
    if mean == "":
        return "n/a"
    if half == "" or math.isnan(float(half)):
        return f"{float(mean) * scale:.{digits}f} (single run)"
    return f"{float(mean) * scale:.{digits}f} ± {float(half) * scale:.{digits}f} (n={n})"


def _round_means(folder: Path) -> dict[str, float]:
    """method -> mean round wall time over repeats (rounds 2+), for the methods that have one."""
    return {r["method"]: float(r["measured_round_s_mean"]) for r in rows(folder / "verdict.csv")
            if r["measured_round_s_mean"]}


#: The methods that decide per round: fp with the default objective (time), on the model
#: without the adapter upload, with time and energy, with seed A's
#: (`testbed_verdict.FP_OBJECTIVES`, `FP_NO_UPLOAD`).
DECIDING = ("fp", "fp-no-upload", "fp-energy", "fp-paper")


def _fixed_policies(means: dict[str, float]) -> dict[str, float]:
    """The methods that decide nothing per round: edge-only, every fixed split, local-only."""
    return {m: t for m, t in means.items() if m not in DECIDING and m != "random"}


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def regime_goals(name: str, means: dict[str, float],
                 apart: Collection[str] = ()) -> list[str]:
    """Issue 23's per-regime goals for each fp variant run (`DECIDING`), from the methods'
    mean round wall times; a variant made in another sitting than the fixed policies
    (`apart`, from `made_apart`) says so beside its goals."""
    deciding = [m for m in DECIDING if m in means]
    if not deciding:
        return ["fp has no judged round: no goal can be checked."]
    # Regime (i) holds fp against local-only and the fixed splits, regime (ii) against
    # edge-only and every fixed policy.
    if name == "weak_devices":
        against, speedup_goal = "local-only", 1.5
        rivals = {m: t for m, t in means.items() if m.startswith("fixed-")}
        rival_text = "the best fixed split"
    else:
        against, speedup_goal = "edge-only", 1.15
        rivals = _fixed_policies(means)
        rival_text = "the best fixed policy (local-only and edge-only included)"
    lines = []
    for fp in deciding:
        t = means[fp]
        aside = " (made in another sitting: this compares sittings as much as methods)" \
            if fp in apart else ""
        if against in means:
            speedup = means[against] / t
            lines.append(f"{fp} against {against}: {speedup:.2f}x as fast (goal at least "
                         f"{speedup_goal:g}x): {_met(speedup >= speedup_goal)}{aside}.")
        if rivals:
            best = min(rivals, key=rivals.get)
            gap = t / rivals[best] - 1
            lines.append(f"{fp} against {rival_text}, {best}: {pct(gap, 1, sign=True)} round "
                         f"time (goal at most {pct(MARGIN, 1, sign=True)}): "
                         f"{_met(gap <= MARGIN)}{aside}.")
    others = {m: t for m, t in means.items() if m not in DECIDING}
    fastest = min(others, key=others.get) if others else None
    if fastest is not None and fastest not in rivals and fastest != against:
        # Outside this regime's goals, but a reader comparing methods needs it.
        lines.append(f"Not among this regime's goals: the fastest method besides fp's variants "
                     f"was {fastest}, and {deciding[0]}'s round time was "
                     f"{pct(means[deciding[0]] / others[fastest] - 1, 1, sign=True)} against it.")
    return lines


def made_apart(folder: Path) -> set[str] | None:
    """The fp variants whose runs were made in another sitting than the fixed policies': all of
    their runs ended before the first or after the last fixed policy's run (`runs/<run>.
    status.json`'s `updated`); the rest were interleaved with them. None without those
    records."""
    ended: dict[str, list[str]] = {}
    for status in (folder / "runs").glob("*.status.json"):
        method = status.name.removesuffix(".status.json").rsplit("-r", 1)[0]
        ended.setdefault(method, []).append(load_json(status)["updated"])
    fixed = [t for times in _fixed_policies(ended).values() for t in times]
    if not fixed:
        return None
    first, last = min(fixed), max(fixed)
    return {m for m in DECIDING if m in ended
            and (max(ended[m]) < first or min(ended[m]) > last)}


def calibration_drift(folder: Path) -> tuple[float | None, dict[str, float]]:
    """Round 1's calibration, the same timed work in every run: the fixed policies' mean (s)
    and each fp variant's relative to it; (None, {}) if not recorded."""
    calibration = {r["method"]: float(r["calibrate_s_mean"]) for r in rows(folder / "verdict.csv")
                   if r.get("calibrate_s_mean")}
    fixed = list(_fixed_policies(calibration).values())
    if not fixed:
        return None, {}
    reference = float(np.mean(fixed))
    return reference, {m: calibration[m] / reference - 1 for m in DECIDING if m in calibration}


def drift_line(folder: Path, apart: set[str] | None) -> str:
    """Which fp variants were made in the fixed policies' sitting and which in another
    (`apart`, from `made_apart`), and how fast the machine ran each, by round 1's calibration
    ("" if not recorded)."""
    reference, drift = calibration_drift(folder)
    if reference is None or not drift:
        return ""
    same = [m for m in drift if apart is not None and m not in apart]
    elsewhere = [m for m in drift if apart and m in apart]
    sentences = [
        "Sittings: round 1's calibration, the same timed work in every run, took "
        f"{num(reference)} s in the fixed policies' runs; against it "
        + ", ".join(f"{m} {pct(d, 0, sign=True)}" for m, d in drift.items()) + "."]
    if same:
        sentences.append(f"Made in the fixed policies' sitting, their runs interleaved: "
                         f"{', '.join(same)}.")
    if elsewhere:
        sentences.append(f"Made in another sitting: {', '.join(elsewhere)}: "
                         f"{'its' if len(elsewhere) == 1 else 'their'} goals compare sittings "
                         "as much as methods; variants made in one sitting compare with each "
                         "other.")
    return "\n" + " ".join(sentences) + "\n"


def cross_goal(regimes: dict[str, dict[str, float]]) -> str:
    """Issue 23's case for deciding per round: no fixed policy within `MARGIN` of the best
    method in every regime."""
    names = set.intersection(*(set(_fixed_policies(m)) for m in regimes.values()))
    close = {p: [regimes[r][p] / min(regimes[r].values()) - 1 for r in regimes]
             for p in sorted(names)}
    everywhere = [p for p, gaps in close.items() if all(g <= MARGIN for g in gaps)]
    detail = "; ".join(f"{p} " + " / ".join(pct(g, 1, sign=True) for g in gaps)
                       for p, gaps in close.items())
    return (f"No fixed policy within {pct(MARGIN)} of the best method in both regimes "
            f"({' / '.join(regimes)}, round time against each regime's best: {detail}): "
            f"{_met(not everywhere)}"
            + (f" ({', '.join(everywhere)} is within it in both)." if everywhere else "."))


def _queue_line(queue: dict) -> str:
    """What `experiments.queue_fit` found: the queue model's own error, inputs measured."""
    model, played = queue["model"], queue["simulated"]
    return (
        "\nThe queue model alone (`queue_fit.json`, `python -m experiments.queue_fit`): fed "
        "each judged round's measured inputs (every client's device, link and tail seconds "
        f"and start), its queue is off by a median {pct(model['median_abs_error'])} (median "
        f"ratio to the clock {model['median_ratio']:.2f}) over the {queue['queued_clients']} "
        f"clients that queued at least {queue['min_queue_s']} s, the event simulation's by "
        f"{pct(played['median_abs_error'])} (ratio {played['median_ratio']:.2f}); the round's "
        f"span is within {pct(abs(model['median_span_error']), 1)} (model) and "
        f"{pct(abs(played['median_span_error']), 1)} (simulation)."
        + "".join(
            f" The model with the residual of {what} tails (`service_cv2` {cv2}): queue off "
            f"by {pct(v['median_abs_error'])} (ratio {v['median_ratio']:.2f}), span within "
            f"{pct(abs(v['median_span_error']), 1)}."
            for key, what, cv2 in (("model_cv2_0.5", "less variable", "0.5"),
                                   ("model_cv2_0", "deterministic", "0"))
            if (v := queue.get(key)))
        + "\n")


def _regime(folder: Path) -> str:
    summary = load_json(folder / "summary.json")
    verdict = summary["verdict"]
    body = rows(folder / "verdict.csv")
    fp = next((r for r in body if r["method"] == "fp"), None)
    cells = []
    for r in body:
        n = int(r["repeats"])
        versus = (pct(float(r["measured_round_s_mean"]) / float(fp["measured_round_s_mean"]) - 1,
                      sign=True)
                  if fp and r["measured_round_s_mean"] and fp["measured_round_s_mean"] else "n/a")
        # .get: a folder tabulated before a column existed shows it as n/a.
        cells.append([r["method"], *(interval(r.get(f"{q}_mean", ""), r.get(f"{q}_ci95", ""), n,
                                              scale, digits)
                                     for q, (_, scale, digits) in COLUMNS.items()),
                      versus, r["target_round"] or "not reached", r["reached"],
                      interval(r["time_to_target_s_mean"], r["time_to_target_s_ci95"], n)])
    target = verdict.get("target_ppl")
    how = ("given" if verdict.get("target_ppl_given") is not None
           else "the highest last-round perplexity of all runs, so every run reaches it")
    errors = summary.get("median_abs_error", {})
    fit = ", ".join(f"{label} {pct(errors[part])}" for part, label in ERROR_PARTS.items()
                    if errors.get(part) is not None)
    over = [label for part, label in ERROR_PARTS.items()
            if errors.get(part) is not None and errors[part] > ERROR_GOAL]
    queue = load_json(folder / "queue_fit.json") if (folder / "queue_fit.json").is_file() else {}
    failed = verdict.get("failed_runs", {})
    name = verdict.get("fleet_name", folder.name)
    apart = made_apart(folder)
    return (
        f"### {REGIMES.get(name, name)} (`{folder.name}`)\n\n"
        f"{summary['model']}, fleet `{summary['fleet']}` ({len(summary['devices'])} devices), "
        f"{summary['rounds']} rounds of {summary['local_steps']} local steps at batch "
        f"{summary['batch_size']}, {verdict['repeats']} repeats with seeds from "
        f"{summary['seed']}; per-round means over rounds 2+ (round 1 calibrates), "
        "mean ± 95% interval over repeats. Target held-out perplexity "
        f"{'n/a' if target is None else num(target)} ({how}); the time to it sums every "
        "round's wall time from round 1."
        + (f" Runs that failed: {', '.join(sorted(failed))}." if failed else "") + "\n\n"
        + table(["method", *(h for h, _, _ in COLUMNS.values()), "round time vs fp",
                 "round reaching the target", "runs reaching it", "time to target (s)"], cells)
        + (f"\nMedian absolute relative error of the modelled per-client time against the "
           f"clock, over every run's clients and rounds (`summary.json`): {fit}. Goal at most "
           f"{pct(ERROR_GOAL)}: " + (f"**missed** for {', '.join(over)}.\n" if over
                                    else "met for every part.\n")
           if fit else "")
        + (_queue_line(queue) if queue.get("queued_clients") else "")
        + drift_line(folder, apart)
        + "\nGoals (issue 23), on the mean round wall time:\n\n"
        + "".join(f"- {line}\n" for line in regime_goals(name, _round_means(folder),
                                                          apart or ()))
        + f"\n![verdict {folder.name}](../results/{FOLDER}/{folder.name}/verdict.png)\n"
        f"\nFiles: `results/{FOLDER}/{folder.name}/` (`verdict.csv`, `verdict_rounds.csv`, "
        "`rounds.csv`, `clients.csv`, `summary.json`, `runs/`, `logs/`).\n")


def render(results: Path) -> str:
    base = results / FOLDER
    folders = sorted(p for p in base.iterdir()
                     if (p / "verdict.csv").is_file()) if base.is_dir() else []
    head = (
        "## The clock's verdict: the allocator against fixed splits and local training\n\n"
        "fp (makespan model, FIFO server, calibration tracked; with the default objective, the "
        "round's time alone, and as fp-energy with time and energy, as fp-paper with seed A's "
        "time, energy and stability; fp-no-upload is fp with the default objective on the cost "
        "model without each device's end-of-round adapter upload, `allocation.adapter-upload = "
        "false`, the model before the clock measured the upload) against edge-only, "
        "fixed splits "
        "bracketing the best one and local-only (split `layers - 1`), the same seeds, on the "
        "emulated testbed with SmolLM2-135M and the resident device agent, in two regimes, "
        "repeated with the methods' order rotated per repeat. Measured for every method alike: "
        "the round's training phase from the round message to the last accepted reply, and "
        "the slowest client's data-plane time. A fixed split or local-only excludes (and "
        "counts) a device whose memory cannot hold its split.\n")
    if not folders:
        return head + (
            "\nNot run yet (80-100 minutes per regime). Each regime's command:\n\n"
            + "".join(f"    {COMMAND.format(name=name)}\n" for name in REGIMES))
    text = head + "".join("\n" + _regime(f) for f in folders)
    text += "".join(f"\n### {title} (`{name}`)\n\nNot run yet (80-100 minutes). Its command "
                    f"(`--resume` goes on from the runs an interrupted one kept):\n\n"
                    f"    {COMMAND.format(name=name)}\n"
                    for name, title in REGIMES.items() if name not in {f.name for f in folders})
    regimes = {f.name: _round_means(f) for f in folders if f.name in REGIMES}
    if len(regimes) == len(REGIMES) and all(regimes.values()):
        text += "\n### Both regimes\n\n" + cross_goal(regimes) + "\n"
    return text
