"""The privacy frontier: differentially private frames, every attack, the model's cost."""

from __future__ import annotations

import textwrap
from pathlib import Path

from edgesplit.privacy_report import ATTACKS
from experiments.privacy_frontier import GOAL_PPL_COST, GOAL_RECOVERY

from .stats import rows, table

NAMES = {"learned": "learned", "white-box": "white-box", "gradient": "gradient (labels)"}


def _pct(x: float | str) -> str:
    return "" if x == "" else f"{100 * float(x):.1f} %"


def _eps(x: float) -> str:
    return "off" if x == 0 else f"{x:g}"


def _attacks_so_far(folder: Path, model: str) -> str:
    """The meter's rows written so far (the attack half resumes from them)."""
    path = folder / f"{model}.csv"
    if not path.exists():
        return ""
    found = [f"{NAMES[r['attack']]} {_pct(r['token_accuracy'])} at split {r['split']}"
             + ("" if float(r["noise_multiplier"]) == 0
                else f" (z {float(r['noise_multiplier']):.3g})") for r in rows(path)]
    first = rows(path)[0]
    return (f" The attack half has begun (`{model}.csv`): without noise, tokens recovered by "
            + "; ".join(found) + f" (learned decoder: {int(first['train_tokens'])} tokens of "
            f"public text, width {int(first['width'])}, {int(first['epochs'])} epochs; "
            f"{int(first['eval_tokens'])} evaluated tokens).")


def _training_only(runs: list[dict], folder: Path) -> str:
    """The frontier's first half (training under DP), while its attack half is not measured."""
    off = {r["split"]: float(r["heldout_ppl"]) for r in runs if float(r["epsilon"]) == 0}
    body = [[r["split"], _eps(float(r["epsilon"])), f"{float(r['noise_multiplier']):.3g}",
             f"{float(r['epsilon_spent']):.4g}", f"{float(r['heldout_ppl']):.1f}",
             _pct(float(r["heldout_ppl"]) / off[r["split"]] - 1) if r["split"] in off else "",
             r["seconds"]] for r in runs]
    first = runs[0]
    splits = ", ".join(dict.fromkeys(r["split"] for r in runs))
    text = (f"Not complete: `python -m experiments.privacy_frontier` trains {first['model']} "
            "with a U-shaped split (`privacy.device-tail-layers = 1`) at splits 1, 4 and 15 with "
            "`privacy.epsilon` off and on, then runs the privacy meter under each noise "
            "multiplier z the devices planned. The training half has run at "
            f"split(s) {splits} ({int(first['clients'])} clients, {int(first['rounds'])} rounds "
            f"of {int(first['local_steps'])} local steps of {int(first['batch_size'])} blocks, "
            f"held-out perplexity on {int(first['eval_tokens'])} tokens, untrained "
            f"{float(first['base_ppl']):.1f}; a single run per point); no attack has been run "
            "under DP noise, so no point of the frontier is known. The script resumes from "
            "`results/privacy/frontier/training.csv`." + _attacks_so_far(folder, first["model"]))
    header = ["split", "epsilon", "z", "epsilon spent", "held-out ppl", "ppl cost", "seconds"]
    return f"## Privacy frontier\n\n{textwrap.fill(text, 100)}\n\n{table(header, body)}"


def render(results: Path) -> str:
    folder = results / "privacy" / "frontier"
    runs = rows(folder / "training.csv")
    if not (folder / "frontier.csv").exists():
        return _training_only(runs, folder)
    points = rows(folder / "frontier.csv")
    model = points[0]["model"]
    meter = rows(folder / f"{model}.csv")
    first_run, first_leak = runs[0], meter[0]
    splits = sorted({int(p["split"]) for p in points})

    def attack_cell(split: int, attack: str) -> str:
        found = [r for r in meter if int(r["split"]) == split and r["attack"] == attack
                 and float(r["noise_multiplier"]) == 0]
        return _pct(found[0]["token_accuracy"]) if found else ""

    clean = table(["attack", *(f"split {k}" for k in splits)],
                  [[NAMES[a], *(attack_cell(k, a) for k in splits)] for a in ATTACKS])
    body = []
    for p in sorted(points, key=lambda p: (int(p["split"]), float(p["epsilon"]) == 0,
                                           -float(p["epsilon"])), reverse=False):
        body.append([p["split"], _eps(float(p["epsilon"])),
                     f"{float(p['noise_multiplier']):.3g}",
                     *(_pct(p[f"{a.replace('-', '_')}_recovery"]) for a in ATTACKS),
                     _pct(p["loss_row_accuracy"]), f"{float(p['heldout_ppl']):.1f}",
                     _pct(p["ppl_cost"]), "yes" if p["goal_met"] == "True" else "no"])
    frontier = table(["split", "epsilon", "z", *(f"{NAMES[a]} recovered" for a in ATTACKS),
                      "loss rows told apart", "held-out ppl", "ppl cost", "goal"], body)
    met = [p for p in points if p["goal_met"] == "True"]
    private = [p for p in points if p["strongest_recovery"] != ""
               and float(p["strongest_recovery"]) <= GOAL_RECOVERY]
    cheap = [p for p in points if p["ppl_cost"] != "" and float(p["ppl_cost"]) <= GOAL_PPL_COST
             and p["strongest_recovery"] != ""]
    if met:
        verdict = ("The goal is met at " + "; ".join(
            f"split {p['split']}, epsilon {_eps(float(p['epsilon']))}" for p in met) + ".")
    else:
        best_private = min(private, key=lambda p: float(p["ppl_cost"]), default=None)
        best_cheap = min(cheap, key=lambda p: float(p["strongest_recovery"]), default=None)
        verdict = "No measured setting meets the goal. "
        if best_private:
            verdict += (f"The cheapest setting that holds every attack to at most "
                        f"{_pct(GOAL_RECOVERY)} (split {best_private['split']}, epsilon "
                        f"{_eps(float(best_private['epsilon']))}) costs "
                        f"{_pct(best_private['ppl_cost'])} in held-out perplexity "
                        f"({float(best_private['heldout_ppl']):.1f}; untrained "
                        f"{float(best_private['base_ppl']):.1f}). ")
        if best_cheap:
            verdict += (f"Within {_pct(GOAL_PPL_COST)} of cost, the least leaky setting (split "
                        f"{best_cheap['split']}, epsilon {_eps(float(best_cheap['epsilon']))}) "
                        f"still lets the {best_cheap['strongest_attack']} attack recover "
                        f"{_pct(best_cheap['strongest_recovery'])} of the tokens.")
    spent = max(float(r["epsilon_spent"]) / float(r["epsilon"]) for r in runs
                if float(r["epsilon"]) > 0)
    return f"""## Privacy frontier

`python -m experiments.privacy_frontier` trains {model} with a U-shaped split
(`privacy.device-tail-layers = 1`) at splits {", ".join(map(str, splits))}, each with
`privacy.epsilon` off and on ({int(first_run['clients'])} clients,
{int(first_run['rounds'])} rounds of {int(first_run['local_steps'])} local steps of
{int(first_run['batch_size'])} blocks, the same budget for every point), scores each final
adapter's held-out perplexity on {int(first_run['eval_tokens'])} tokens, and runs the privacy
meter (`experiments.privacy`) under the noise multiplier z the devices planned: files in
`results/privacy/frontier/` (a single run per point). Every device spent at most
{_pct(spent)} of its epsilon (the accountant's figure in the run's metrics). Attacks: a learned
decoder ({int(first_leak['train_tokens'])} tokens of public text, two hidden layers of
{int(first_leak['width'])}, {int(first_leak['epochs'])} epochs), a white-box relaxed-input
inversion (no training) and the returned gradients' label recovery; recovery is measured on
the frozen model (round 1's frames), on {int(first_leak['eval_tokens'])} evaluated tokens for
the learned attack and fewer for the white-box and gradient attacks (see the meter's CSV).

Without a defence (float32), tokens recovered:

{clean}
The frontier (goal: every attack at most {_pct(GOAL_RECOVERY)} at a held-out perplexity cost of
at most {_pct(GOAL_PPL_COST)} over the same training without the defence):

{frontier}
{verdict}

![privacy frontier](../results/privacy/frontier/frontier.png)
![attacks per split](../results/privacy/frontier/{model}.png)
"""
