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


def _wrap(text: str) -> str:
    """A paragraph at 100 columns, never broken inside a hyphenated name."""
    return textwrap.fill(text, 100, break_on_hyphens=False, break_long_words=False)


def _eps(x: float) -> str:
    return "off" if x == 0 else f"{x:g}"


def _leaders(points: list[dict], split: int) -> str:
    """'learned (off, 1e+06), gradient (100000)': at `split`, each attack that is the strongest
    somewhere and the epsilons where it is."""
    mine = [p for p in points if int(p["split"]) == split and p["strongest_attack"]]
    return ", ".join(f"{attack} (" + ", ".join(_eps(float(p["epsilon"])) for p in mine
                                               if p["strongest_attack"] == attack) + ")"
                     for attack in dict.fromkeys(p["strongest_attack"] for p in mine))


def render(results: Path) -> str:
    folder = results / "privacy" / "frontier"
    if not (folder / "frontier.csv").exists():
        return ("## Privacy frontier\n\nNot run: `python -m experiments.privacy_frontier` "
                "writes `results/privacy/frontier/`.\n")
    runs = rows(folder / "training.csv")
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
    for p in sorted(points, key=lambda p: (int(p["split"]), float(p["epsilon"]) != 0,
                                           -float(p["epsilon"]))):
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
    strongest = "; ".join(f"split {k}: {_leaders(points, k)}" for k in splits)
    spent = max(float(r["epsilon_spent"]) / float(r["epsilon"]) for r in runs
                if float(r["epsilon"]) > 0)
    intro = (f"""`python -m experiments.privacy_frontier` trains {model} with a U-shaped split
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
the learned attack and fewer for the white-box and gradient attacks (see the meter's CSV).""")
    verdict += f" The strongest attack by split (and the epsilons where it leads): {strongest}."
    return f"""## Privacy frontier

{_wrap(" ".join(intro.split()))}

Without a defence (float32), tokens recovered:

{clean}
The frontier (goal: every attack at most {_pct(GOAL_RECOVERY)} at a held-out perplexity cost of
at most {_pct(GOAL_PPL_COST)} over the same training without the defence):

{frontier}
{_wrap(verdict)}

![privacy frontier](../results/privacy/frontier/frontier.png)
"""
