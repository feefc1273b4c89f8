"""The clock's verdict (issue 23): which runs `python -m experiments.testbed --verdict` makes, in
which order, and how their rounds are tabulated, summarised and plotted.

Every method trains the same model on the same fleet with the same seeds; split training is
exact, so the held-out perplexity follows the same curve per round whatever the split, and time
to a target perplexity is decided by round time alone (a method that excludes devices it cannot
fit trains on less data, and its curve may differ: the tables count the exclusions).

The measured quantities, the same for every method (`experiments.testbed.round_rows`):
`measured_round_s`, the round's training phase from the round message to the last accepted
reply (Flower's control plane included; `time_train_s` of the round's metrics), and
`measured_makespan_s`, the slowest client's data-plane time (device compute and its wait on the
stream). Round 1 calibrates the cost model on the testbed, so the summary judges rounds
`JUDGED_FROM` and later; the time to the target perplexity counts every round from the first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from edgesplit.settings import Settings
from experiments.plotting import method_kwargs, save, subplots, write_csv
from experiments.report.stats import mean_ci

#: Rounds before this one are calibration; the summary judges this one and later.
JUDGED_FROM = 2
#: Per-round quantities summarised per method (column in verdict_rounds.csv).
QUANTITIES = ("measured_round_s", "measured_makespan_s", "bytes_wire", "modelled_energy_j",
              "excluded", "failed")
#: Round 1's calibration time, the same timed work in every run (summarised beside them).
CALIBRATION = "calibrate_s"
#: What every verdict run evaluates: the server's held-out perplexity each round, with the
#: devices' validation overlapped and kept to one batch (it runs after the timed phase).
EVAL = {"eval.every": 1, "eval.batches": 1, "eval.overlap": True}


def fixed_brackets(layers: int) -> list[int]:
    """Fixed splits that bracket the best one: shallow (about a seventh of the layers), middle
    and deep (one above local-only's `layers - 1`, which is a method of its own); for
    SmolLM2's 30 layers 4, 15 and 28. Splits 2 to `layers - 2` only (1 is edge-only)."""
    if layers < 4:
        return []
    return sorted({min(max(2, layers // 7), layers - 2), max(2, layers // 2), layers - 2})


#: fp's objective weights per verdict method (time, energy, stability): the run config's
#: default (time alone), time and energy, seed A's objective.
FP_OBJECTIVES = {"fp": Settings().objective_weights, "fp-energy": "1,1,0", "fp-paper": "1,1,1"}
#: fp with the default objective on the cost model without the adapter's end-of-round upload
#: (`allocation.adapter-upload`): the model before the clock measured the upload.
FP_NO_UPLOAD = "fp-no-upload"


def methods(layers: int, with_random: bool = False) -> list[tuple[str, dict[str, object]]]:
    """The verdict's methods and their run-config overrides: fp with the default objective
    (time alone), with time and energy (`fp-energy`) and with seed A's objective (time, energy
    and stability: `fp-paper`), each naming its weights so a run's record says what it ran
    (and `--resume` reruns fp when the default changes); fp without the adapter upload in its
    cost model (`fp-no-upload`); edge-only, the
    fixed splits, local-only (and random). A fixed split k and local-only
    (split `layers - 1`) set the split floor `privacy.min-device-layers` to their split, so a
    device whose memory cannot hold it is excluded from the round (and counted) instead of
    being clipped to a shallower split that the method did not ask for."""
    runs: list[tuple[str, dict[str, object]]] = [
        (name, {"allocation.method": "fp", "allocation.objective-weights": weights})
        for name, weights in FP_OBJECTIVES.items()]
    runs.append((FP_NO_UPLOAD, {**runs[0][1], "allocation.adapter-upload": False}))
    runs += [("edge-only", {"allocation.method": "edge-only"})]
    runs += [(f"fixed-{k}", {"allocation.method": "fixed", "allocation.fixed-split": k,
                             "privacy.min-device-layers": k}) for k in fixed_brackets(layers)]
    runs.append(("local-only", {"allocation.method": "local-only",
                                "privacy.min-device-layers": layers - 1}))
    if with_random:
        runs.append(("random", {"allocation.method": "random"}))
    return runs


def plan(methods: Sequence[tuple[str, Mapping[str, object]]], repeats: int,
         seed: int) -> list[dict]:
    """Every run in the order to make them: repeat r (seed `seed + r`) runs all methods, rotated
    by r / repeats of the list, so each method runs early in one repeat and late in another and
    a drift of the machine over the hour falls on every method alike."""
    runs = []
    for r in range(repeats):
        shift = (r * len(methods)) // repeats
        for position, (name, overrides) in enumerate([*methods[shift:], *methods[:shift]]):
            runs.append({"run": f"{name}-r{r}", "method": name, "repeat": r, "seed": seed + r,
                         "position": position,
                         "overrides": {**overrides, **EVAL, "run.seed": seed + r}})
    return runs


def rounds_table(rounds: Sequence[Mapping], runs: Sequence[Mapping]) -> list[dict]:
    """verdict_rounds.csv: one row per method, repeat and round (from `round_rows`)."""
    by_run = {r["run"]: r for r in runs}
    return [{"method": by_run[r["run"]]["method"], "repeat": by_run[r["run"]]["repeat"],
             "seed": by_run[r["run"]]["seed"], "position": by_run[r["run"]]["position"],
             "run": r["run"], "round": r["round"], "completed": r["completed"],
             "sampled": r["sampled"], "excluded": r["excluded_memory"], "failed": r["failed"],
             "measured_round_s": r["measured_train_phase_s"],
             "measured_makespan_s": r["measured_makespan_s"], "bytes_wire": r["bytes_wire"],
             "modelled_energy_j": r["modelled_energy_j"], "heldout_ppl": r["heldout_ppl"],
             "splits": r["splits"], "calibrate_s": r["calibrate_s"]}
            for r in rounds if r["run"] in by_run]


def _runs(rows: Sequence[Mapping]) -> dict[tuple[str, int], list[Mapping]]:
    """Rows grouped by (method, repeat), each run's in round order."""
    runs: dict[tuple[str, int], list[Mapping]] = {}
    for row in rows:
        runs.setdefault((row["method"], int(row["repeat"])), []).append(row)
    return {k: sorted(v, key=lambda r: int(r["round"])) for k, v in runs.items()}


def default_target(rows: Sequence[Mapping]) -> float | None:
    """The held-out perplexity every run reaches by its last round: the highest of the runs'
    last-round perplexities (None if no run evaluated)."""
    last = [float(run[-1]["heldout_ppl"]) for run in _runs(rows).values()
            if run[-1].get("heldout_ppl") not in (None, "")]
    return max(last) if last else None


def to_target(run: Sequence[Mapping], target: float) -> tuple[int, float] | None:
    """The first round whose held-out perplexity is at most `target`, and the measured round
    time summed over the rounds up to it; None if the run never reaches it."""
    elapsed = 0.0
    for row in run:
        elapsed += float(row["measured_round_s"])
        if row.get("heldout_ppl") not in (None, "") and float(row["heldout_ppl"]) <= target:
            return int(row["round"]), elapsed
    return None


def _mean_ci(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean, half = mean_ci(values)
    return mean, None if math.isnan(half) else half


def summary(rows: Sequence[Mapping], target: float | None) -> list[dict]:
    """verdict.csv: per method (in the order of `rows`), each quantity's mean over repeats of
    each repeat's mean over rounds `JUDGED_FROM` and later, with the half-width of its 95%
    Student-t interval over repeats (empty for a single repeat); the round(s) at which the
    repeats reach `target` and the measured time to it."""
    runs = _runs(rows)
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [run for (m, _), run in runs.items() if m == method]
        entry: dict[str, object] = {"method": method, "repeats": len(mine)}
        for q in QUANTITIES:
            per_repeat = [float(np.mean(v)) for v in (
                [float(r[q]) for r in run if int(r["round"]) >= JUDGED_FROM
                 and r.get(q) not in (None, "")] for run in mine) if v]
            entry[f"{q}_mean"], entry[f"{q}_ci95"] = _mean_ci(per_repeat)
        # Round 1's calibration times the same work in every run: a check on the machine's
        # speed across sittings (a method's runs made on a slower machine read slower).
        entry[f"{CALIBRATION}_mean"], entry[f"{CALIBRATION}_ci95"] = _mean_ci(
            [float(run[0][CALIBRATION]) for run in mine
             if run[0].get(CALIBRATION) not in (None, "")])
        reached = [t for t in (to_target(run, target) for run in mine)
                   if t is not None] if target is not None else []
        target_rounds = sorted({t[0] for t in reached})
        entry.update(
            target_ppl=target, reached=f"{len(reached)}/{len(mine)}",
            target_round=("" if not target_rounds else str(target_rounds[0])
                          if len(target_rounds) == 1
                          else f"{target_rounds[0]}-{target_rounds[-1]}"))
        entry["time_to_target_s_mean"], entry["time_to_target_s_ci95"] = _mean_ci(
            [t[1] for t in reached] if len(reached) == len(mine) else [])
        out.append(entry)
    return out


def plot(table: Sequence[Mapping], rows: Sequence[Mapping], target: float | None,
         path: Path, title: str) -> None:
    """Left: each method's measured round time and data-plane makespan (rounds `JUDGED_FROM`+,
    mean and 95% interval over repeats). Right: held-out perplexity against the measured time
    elapsed, per method (mean over repeats per round), with the target."""
    fig, axes = subplots(1, 2, panel=(4.8, 3.4))
    ax_t, ax_p = axes[0]
    names = [t["method"] for t in table]
    x = np.arange(len(names))
    for offset, q, alpha in ((-0.2, "measured_round_s", 1.0),
                             (0.2, "measured_makespan_s", 0.45)):
        means = [t[f"{q}_mean"] or 0.0 for t in table]
        errors = [t[f"{q}_ci95"] or 0.0 for t in table]
        ax_t.bar(x + offset, means, 0.4, yerr=errors, capsize=3, alpha=alpha,
                 color=[method_kwargs(n)["color"] for n in names],
                 label={"measured_round_s": "round (message to last reply)",
                        "measured_makespan_s": "data-plane makespan"}[q])
    ax_t.set_xticks(x, names, rotation=25)
    ax_t.set_ylabel(f"seconds per round (rounds {JUDGED_FROM}+)")
    ax_t.legend(fontsize=7)
    runs = _runs(rows)
    for method in names:
        mine = [run for (m, _), run in runs.items() if m == method]
        n = min(len(run) for run in mine)
        elapsed = np.mean([np.cumsum([float(r["measured_round_s"]) for r in run[:n]])
                           for run in mine], axis=0)
        ppl = [np.mean([float(run[i]["heldout_ppl"]) for run in mine
                        if run[i].get("heldout_ppl") not in (None, "")] or [np.nan])
               for i in range(n)]
        ax_p.plot(elapsed, ppl, **method_kwargs(method))
    if target is not None:
        ax_p.axhline(target, color="k", lw=0.8, ls=":", label="target")
    ax_p.set_xlabel("measured time elapsed (s)")
    ax_p.set_ylabel("held-out perplexity")
    ax_p.legend(fontsize=7)
    fig.suptitle(title)
    save(fig, path)


def write(out: Path, runs: Sequence[Mapping], rounds: Sequence[Mapping],
          target: float | None, title: str) -> float | None:
    """verdict_rounds.csv, verdict.csv and verdict.png in `out` from the testbed's round rows
    of the verdict's `runs`; returns the target perplexity used (`target`, or by default the
    one every run reaches: `default_target`)."""
    rows = rounds_table(rounds, runs)
    target = default_target(rows) if target is None else target
    table = summary(rows, target)
    write_csv(rows, out / "verdict_rounds.csv")
    write_csv(table, out / "verdict.csv")
    if rows:
        plot(table, rows, target, out / "verdict.png", title)
    return target
