"""Seed B: train the split policy (PPO on a Dyna-refreshed surrogate), score it against the oracle.

Trains, on one shared real evaluator (each agent charged for the evaluations it asked for):
PPO against the surrogate (the method), A2C and DQN against their own surrogates (baselines),
and PPO against real evaluations (the costly reference). Then, per held-out channel state, the
exact oracle (every split evaluated) and the reward of each policy and baseline, on a channel
realisation (seed) none of them trained on. Writes ``split_rl.json``, the learned policy
(``policy/``, loadable with ``SplitPolicy.load``) and four figures (``split_rl_*.png``) to
``--out``; ``--plot-only`` redraws the figures from an existing ``split_rl.json``. Usage::

    python -m experiments.split_rl [--fast] [--model NAME] [--out DIR] [--plot-only]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from allocation.split_rl import (
    DynaRefresh,
    SplitEvaluator,
    SplitPolicy,
    SplitProblem,
    Surrogate,
    Tally,
    grid_states,
    oracle,
    real_ratio,
    train_agent,
)
from edgesplit.data import federated_text
from edgesplit.settings import DataSettings
from edgesplit.split_model import SplitModel
from experiments.plotting import save, subplots

TEST_SEED = 1000  # channel realisation of the held-out states; training uses seeds 0..


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much of everything a run spends.

    n_blocks : held-out blocks (32 tokens each) per real evaluation.
    grid_q : loss rates on the surrogate's initial grid (times every split).
    seeds : channel realisations used in training.
    timesteps : environment steps of every agent.
    fit_epochs : epochs of the surrogate's first fit (a third of it for each Dyna refit).
    refresh_every, refresh_states : Dyna refresh period (steps) and new states per refresh.
    n_test : held-out channel states.
    """

    n_blocks: int
    grid_q: int
    seeds: tuple[int, ...]
    timesteps: int
    fit_epochs: int
    refresh_every: int
    refresh_states: int
    n_test: int


FAST = Budget(n_blocks=2, grid_q=4, seeds=(0,), timesteps=512, fit_epochs=300,
              refresh_every=256, refresh_states=2, n_test=3)
FULL = Budget(n_blocks=4, grid_q=7, seeds=(0,), timesteps=50_000, fit_epochs=1500,
              refresh_every=10_000, refresh_states=6, n_test=8)


class RewardCurve:
    """A ratio function that records the reward of every training step it answers, in order.

    Agents only see rewards through their ratio function, so wrapping it yields the training
    curve of any agent without a callback.
    """

    def __init__(self, problem: SplitProblem, ratio: Callable[[float, int], float]) -> None:
        self.problem, self.ratio, self.rewards = problem, ratio, []

    def __call__(self, loss_rate: float, split: int) -> float:
        value = self.ratio(loss_rate, split)
        self.rewards.append(self.problem.reward(value, 1.0, split))
        return value

    def binned(self, n_bins: int = 50) -> dict:
        """Mean reward per bin of consecutive steps, with the step count at each bin's end."""
        bins = np.array_split(np.asarray(self.rewards), min(n_bins, len(self.rewards)))
        return {"timesteps": np.cumsum([len(b) for b in bins]).tolist(),
                "mean_reward": [float(b.mean()) for b in bins]}


def held_out_states(problem: SplitProblem, n: int) -> list[float]:
    """Centres of `n` equal bins over [q_low, q_high], rounded as the evaluator rounds."""
    edges = np.linspace(problem.q_low, problem.q_high, n + 1)
    return [round(float(q), 2) for q in (edges[:-1] + edges[1:]) / 2]


def surrogate_agent(algorithm: str, problem: SplitProblem, evaluator: SplitEvaluator,
                    budget: Budget, seed: int
                    ) -> tuple[SplitPolicy, Surrogate, Tally, RewardCurve, float]:
    """Fit a surrogate on the grid, train `algorithm` against it with Dyna refreshes."""
    start = time.perf_counter()
    tally = Tally(evaluator)
    surrogate = Surrogate(problem, tally, budget.seeds)
    surrogate.add(grid_states(problem, budget.grid_q))
    surrogate.fit(budget.fit_epochs)
    refresh = DynaRefresh(surrogate, budget.refresh_every, budget.refresh_states,
                          epochs=budget.fit_epochs // 3)
    curve = RewardCurve(problem, surrogate.ratio)
    policy = train_agent(algorithm, problem, curve, budget.timesteps, seed, refresh)
    return policy, surrogate, tally, curve, time.perf_counter() - start


def score(policy_split, choice, problem: SplitProblem) -> dict:
    """Reward of a split rule at one held-out state, averaged over every start split."""
    finals = [policy_split(choice.loss_rate, start) for start in problem.splits]
    return {"split": finals[0], "splits_by_start": finals,
            "reward": float(np.mean([choice.rewards[p] for p in finals]))}


def train_agents(
    problem: SplitProblem, evaluator: SplitEvaluator, budget: Budget, seed: int,
    progress: Callable[[str], None],
) -> tuple[dict, dict, dict, dict, SplitPolicy, Surrogate]:
    """Train PPO, A2C and DQN on surrogates and PPO on real evaluations.

    Returns the split rules by name, the tallies of real evaluations, the training reward
    curves, the wall times, the learned policy (PPO on the surrogate) and its surrogate.
    """
    rules, tallies, curves, wall = {}, {}, {}, {}
    ppo, surrogate, tallies["ppo-surrogate"], curves["ppo-surrogate"], \
        wall["ppo-surrogate_s"] = surrogate_agent("ppo", problem, evaluator, budget, seed)
    rules["ppo-surrogate"] = ppo.split_for
    progress("ppo against the surrogate trained")
    for name in ("a2c", "dqn"):
        agent = f"{name}-surrogate"
        policy, _, tallies[agent], curves[agent], wall[f"{agent}_s"] = surrogate_agent(
            name, problem, evaluator, budget, seed)
        rules[agent] = policy.split_for
        progress(f"{name} against the surrogate trained")

    begin = time.perf_counter()
    tallies["ppo-real"] = Tally(evaluator)
    curves["ppo-real"] = RewardCurve(problem, real_ratio(tallies["ppo-real"], budget.seeds, seed))
    ppo_real = train_agent("ppo", problem, curves["ppo-real"], budget.timesteps, seed)
    rules["ppo-real"] = ppo_real.split_for
    wall["ppo-real_s"] = time.perf_counter() - begin
    progress("ppo against real evaluations trained")

    def surrogate_argmax(q: float, _start: int) -> int:
        return max(problem.splits, key=lambda p: problem.reward(
            np.exp(surrogate.log_ratio(q, p)), 1.0, p))

    rules |= {"surrogate-argmax": surrogate_argmax,
              "fixed-shallow": lambda q, s: 1, "fixed-deep": lambda q, s: problem.p_max}
    return rules, tallies, curves, wall, ppo, surrogate


def score_held_out(problem: SplitProblem, source: Tally, rules: dict,
                   n_test: int) -> list[dict]:
    """Per held-out state: the oracle, the reward of every split, and every rule's score."""
    states = []
    for q in held_out_states(problem, n_test):
        choice = oracle(problem, source, q, TEST_SEED)
        states.append({"loss_rate": q, "oracle": {"split": choice.split, "reward": choice.reward},
                       "rewards_by_split": choice.rewards,
                       "random": float(np.mean(list(choice.rewards.values()))),
                       **{name: score(rule, choice, problem) for name, rule in rules.items()}})
    return states


@torch.no_grad()
def hidden_abs_max(model: SplitModel, batches: list[dict], splits: range) -> dict[int, float]:
    """Largest |element| of the clean hidden state each split sends (real tokens only): a few
    huge elements make erasures at that cut costly."""
    peaks = {}
    for split in splits:
        peaks[split] = max(float(model.head(b["input_ids"], b["attention_mask"], split)
                                 [b["attention_mask"].bool()].abs().max()) for b in batches)
    return peaks


def run(model_name: str, budget: Budget, out: Path, seed: int = 0) -> dict:
    """Train every agent, score them on held-out states, write the report; return it."""
    start = time.perf_counter()
    model = SplitModel(model_name)
    data = federated_text(DataSettings(), model_name, num_partitions=4)
    batches = [next(data.heldout.eval_batches(budget.n_blocks))]
    problem = SplitProblem(p_max=min(10, model.num_layers - 1))
    evaluator = SplitEvaluator(model, batches)
    clean = evaluator.clean_perplexity
    load_s = time.perf_counter() - start

    def progress(done: str) -> None:  # a default run takes minutes: say where it is
        print(f"[{time.perf_counter() - start:5.0f} s] {done}; {evaluator.evaluations} real "
              "evaluations so far", flush=True)

    progress(f"loaded {model_name}, clean perplexity {clean:.2f}")
    agents, tallies, curves, wall, ppo, surrogate = train_agents(problem, evaluator, budget,
                                                                 seed, progress)
    wall["load_s"] = load_s
    begin = time.perf_counter()
    tallies["oracle"] = Tally(evaluator)
    states = score_held_out(problem, tallies["oracle"], agents, budget.n_test)
    wall["oracle_s"] = time.perf_counter() - begin
    wall["total_s"] = time.perf_counter() - start

    per_eval_s = evaluator.seconds / evaluator.evaluations
    mean = {name: float(np.mean([s[name]["reward"] for s in states]))
            for name in ("oracle", *agents)}
    mean["random"] = float(np.mean([s["random"] for s in states]))
    qs = np.round(np.linspace(problem.q_low, problem.q_high, 30), 3)
    # How well the final surrogate predicts the held-out realisation, in log(PPL / PPL_ref).
    errors = [surrogate.log_ratio(s["loss_rate"], p)
              - np.log(evaluator.perplexity(p, s["loss_rate"], TEST_SEED) / clean)
              for s in states for p in problem.splits]
    report = {
        "model": model_name, "problem": dataclasses.asdict(problem),
        "budget": dataclasses.asdict(budget), "test_seed": TEST_SEED,
        "tokens_per_evaluation": int(sum(int(b["attention_mask"].sum()) for b in batches)),
        "clean_perplexity": clean,
        "hidden_abs_max_by_split": hidden_abs_max(model, batches, problem.splits),
        "held_out": states,
        "mean_reward": mean,
        # Relative shortfall of the learned policy's mean reward against the oracle's.
        "gap_to_oracle": (mean["oracle"] - mean["ppo-surrogate"]) / abs(mean["oracle"]),
        "policy_shape": {"loss_rate": qs.tolist(),
                         "split_from_shallowest": [ppo.split_for(q, 1) for q in qs],
                         "split_from_deepest": [ppo.split_for(q, problem.p_max) for q in qs]},
        # Mean reward per step seen in training (from the agent's own surrogate, or real).
        "reward_curves": {name: curve.binned() for name, curve in curves.items()},
        "real_evaluations": {name: t.evaluations for name, t in tallies.items()},
        "real_queries": {name: t.requests for name, t in tallies.items()},
        "evaluations_ratio_real_over_surrogate":
            tallies["ppo-real"].evaluations / tallies["ppo-surrogate"].evaluations,
        "queries_ratio_real_over_surrogate":
            tallies["ppo-real"].requests / tallies["ppo-surrogate"].evaluations,
        "surrogate_samples": surrogate.n_samples,
        "surrogate_rmse_log_ratio_held_out": float(np.sqrt(np.mean(np.square(errors)))),
        "seconds_per_evaluation": per_eval_s,
        # What each agent would have spent on real evaluations alone (the cache is shared here).
        "evaluation_s_charged": {n: t.evaluations * per_eval_s for n, t in tallies.items()},
        "evaluations_run": evaluator.evaluations,
        "wall_s": wall,
        "torch_threads": torch.get_num_threads(),
    }
    out.mkdir(parents=True, exist_ok=True)
    ppo.save(out / "policy")
    (out / "split_rl.json").write_text(json.dumps(report, indent=2))
    return report


def perplexity_table(report: dict) -> tuple[list[float], list[int], np.ndarray]:
    """Held-out loss rates, splits and PPL / PPL_ref per (rate, split), from the rewards.

    The reward is affine in PPL / PPL_ref, so the report's rewards give the ratios exactly.
    """
    problem = SplitProblem(**report["problem"])
    rates = [state["loss_rate"] for state in report["held_out"]]
    splits = list(problem.splits)
    load = np.array([problem.beta * (problem.p_max - p) / problem.p_max for p in splits])
    rewards = np.array([[state["rewards_by_split"][str(p)] for p in splits]
                        for state in report["held_out"]])
    return rates, splits, 1.0 - (rewards - load) / problem.alpha


def plot(report: dict, out: Path) -> list[Path]:
    """Draw the seed-B figures of a report (as read back from ``split_rl.json``) into `out`."""
    rates, splits, ratio = perplexity_table(report)
    oracle_split = [state["oracle"]["split"] for state in report["held_out"]]
    paths = []

    fig, axes = subplots(panel=(4.2, 3.0))
    ax = axes[0, 0]
    image = ax.imshow(np.log10(ratio), aspect="auto", origin="lower", cmap="magma",
                      extent=(splits[0] - 0.5, splits[-1] + 0.5, -0.5, len(rates) - 0.5))
    ax.plot(oracle_split, range(len(rates)), "c*", markersize=8, label="oracle split")
    ax.set(xlabel="split p (decoder layers on the device)", ylabel="loss rate q", xticks=splits,
           yticks=range(len(rates)), yticklabels=[f"{q:.2f}" for q in rates],
           title=f"{report['model']}: perplexity / clean (clean {report['clean_perplexity']:.1f})")
    ax.grid(False)
    ax.legend(loc="upper right")
    fig.colorbar(image, ax=ax, label="log10(PPL / PPL_clean)")
    paths.append(save(fig, out / "split_rl_perplexity.png"))

    fig, axes = subplots(panel=(4.2, 3.0))
    ax, shape = axes[0, 0], report["policy_shape"]
    ax.step(shape["loss_rate"], shape["split_from_shallowest"], where="mid", color="C0",
            label="PPO (surrogate), from p=1")
    ax.step(shape["loss_rate"], shape["split_from_deepest"], where="mid", color="C0",
            linestyle="--", label="PPO (surrogate), from p_max")
    for i, name in enumerate(("ppo-real", "a2c-surrogate", "dqn-surrogate", "surrogate-argmax")):
        offset = 0.1 * (i - 1.5)  # side by side where they agree
        ax.plot(rates, [state[name]["split"] + offset for state in report["held_out"]],
                linestyle="none", marker="o^vs"[i], color=f"C{i + 1}", label=name)
    ax.plot(rates, oracle_split, "k*", markersize=9, label="oracle")
    ax.set(xlabel="loss rate q", ylabel="split p", ylim=(0.5, splits[-1] + 0.5), yticks=splits,
           title="learned split against the oracle (held-out states)")
    ax.legend(fontsize=7, ncol=2)
    paths.append(save(fig, out / "split_rl_policy.png"))

    if "reward_curves" in report:  # absent from reports written before the curves were kept
        fig, axes = subplots(panel=(4.2, 3.0))
        ax = axes[0, 0]
        for i, (name, curve) in enumerate(report["reward_curves"].items()):
            ax.plot(curve["timesteps"], curve["mean_reward"], color=f"C{i}", label=name)
        ax.axhline(report["mean_reward"]["oracle"], color="k", linestyle=":",
                   label="oracle (held-out mean)")
        ax.set(xlabel="environment steps", ylabel="mean reward per step",
               title="training reward (each agent's own reward model)")
        ax.legend()
        paths.append(save(fig, out / "split_rl_rewards.png"))

    fig, axes = subplots(panel=(4.2, 3.0))
    ax = axes[0, 0]
    names = list(report["real_evaluations"])
    x = np.arange(len(names))
    ax.bar(x - 0.2, [report["real_queries"][n] for n in names], 0.4, color="0.7",
           label="queries")
    ax.bar(x + 0.2, [report["real_evaluations"][n] for n in names], 0.4, color="C0",
           label="distinct real evaluations")
    ax.set(yscale="log", ylabel="count", xticks=x,
           title=f"real evaluations: {report['evaluations_ratio_real_over_surrogate']:.1f}x "
                 "fewer with the surrogate")
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.legend()
    paths.append(save(fig, out / "split_rl_evaluations.png"))
    return paths


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true",
                        help="tiny-llama (p_max 3) and tiny budgets, for tests")
    parser.add_argument("--model", default=None,
                        help="model preset or checkpoint (default: smollm2-135m; tiny-llama "
                             "with --fast)")
    parser.add_argument("--out", type=Path, default=Path("results/split_rl"),
                        help="report folder (default: results/split_rl)")
    parser.add_argument("--seed", type=int, default=0, help="agent and environment seed")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: small tensors gain nothing from more)")
    parser.add_argument("--plot-only", action="store_true",
                        help="only redraw the figures from DIR/split_rl.json")
    args = parser.parse_args(argv)
    if args.plot_only:
        report = json.loads((args.out / "split_rl.json").read_text())
        print("wrote", ", ".join(str(p) for p in plot(report, args.out)))
        return report
    torch.set_num_threads(args.threads)
    model = args.model or ("tiny-llama" if args.fast else "smollm2-135m")
    report = run(model, FAST if args.fast else FULL, args.out, args.seed)
    plot(json.loads((args.out / "split_rl.json").read_text()), args.out)
    print(f"mean reward: oracle {report['mean_reward']['oracle']:.3f}, policy "
          f"{report['mean_reward']['ppo-surrogate']:.3f} (gap {report['gap_to_oracle']:.1%}); "
          f"real evaluations: surrogate agent {report['real_evaluations']['ppo-surrogate']}, "
          f"real agent {report['real_evaluations']['ppo-real']}; "
          f"{report['wall_s']['total_s']:.0f} s; wrote {args.out / 'split_rl.json'}")
    return report


if __name__ == "__main__":
    main()
