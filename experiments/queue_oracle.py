"""The FIFO queue model against a discrete-event simulation of the round it approximates.

``makespan_model.fifo_response_s`` (a mean-value analysis) predicts each client's wait at a
first-come-first-served tail worker; ``allocation.queue_simulation`` plays the same round out
event by event. Two checks, on random instances drawn here:

- error: at low, mid and high server load, the model's makespan (first data plane's start to
  the last one's end, per step) and each client's data-plane time against the simulation's,
  with deterministic step times and with step times drawn around their means (coefficient of
  variation ``JITTER_CV``, mean of ``JITTER_DRAWS`` draws);
- fp's choice: on instances small enough to simulate every split vector, the simulated makespan
  of fp's choice (time-only objective, so fp minimises the modelled makespan) against the best
  simulated makespan of any vector ("regret"), and whether that best is edge-only.

The load of an instance is the server's offered utilisation at its split vector,
``sum_n W_n / (B_n + W_n)`` (tail over device + link + tail seconds per step: how busy the
worker would be if no client ever waited); instances are scaled to a drawn target in each
level's range. Writes ``errors.csv``, ``models.csv`` (the makespan error of the model and of
``WRONG_MODELS`` per level), ``fp_regret.csv`` and ``queue_oracle.png`` to ``--out``::

    python -m experiments.queue_oracle [--quick] [--out results/queue_oracle]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np

from allocation import MakespanScenario, ModelCost, Weights, solve
from allocation.makespan_model import fifo_response_s, makespan_s, server_work_s, step_times
from allocation.queue_simulation import simulate_scenario
from experiments.plotting import save, subplots, write_csv

#: Offered-load ranges of the three levels (target drawn uniformly in each).
LOADS = {"low": (0.2, 0.5), "mid": (0.7, 1.3), "high": (1.5, 4.0)}
LOCAL_STEPS = 20
JITTER_CV, JITTER_DRAWS = 0.5, 5
#: Instances per load level (error table) and small instances (fp's choice).
INSTANCES, SMALL = 10, 30


def offered_load(scenario: MakespanScenario, split) -> float:
    """``sum_n W_n / (B_n + W_n)`` on server 0 at ``split``."""
    base, work = _base_and_work(scenario, split)
    return float(np.sum(work / (base + work)))


def _base_and_work(scenario: MakespanScenario, split) -> tuple[np.ndarray, np.ndarray]:
    association = np.zeros(scenario.n_users, int)
    device, transfer, _ = step_times(scenario, split, association, 1.0)
    return device + transfer, server_work_s(scenario, split, association)


def _scenario(n: int, layers: int, device_layer_s, device_fixed_s, transfer_s,
              server_layer_s: float, server_fixed_s: float, start_s=None) -> MakespanScenario:
    """One server with one tail worker, time-only weights, the FIFO queue."""
    model = ModelCost(layers=layers, hidden_size=64, batch_size=4, seq_len=32,
                      activation_bits=32)
    return MakespanScenario(
        device_layer_s=device_layer_s, device_fixed_s=device_fixed_s,
        device_power_w=np.ones(n), memory_bytes=np.full(n, np.inf), tx_power_w=np.ones(n),
        uplink_bps=(model.bits_per_step / np.asarray(transfer_s))[:, None],
        samples=np.full(n, 100.0), server_layer_s=[server_layer_s],
        server_fixed_s=[server_fixed_s], server_power_w=[100.0], concurrency=[1.0],
        model=model, weights=Weights(energy=0.0, stability=0.0), queue="fifo",
        start_s=start_s, local_steps=LOCAL_STEPS)


def load_instance(seed: int, level: str) -> tuple[MakespanScenario, np.ndarray]:
    """A random instance at a drawn offered load in ``LOADS[level]``, and the split vector
    it is evaluated at: 2-8 clients, 4-10 layers, devices 0.01-0.3 s per layer, links
    0.01-0.5 s per step, random splits; odd seeds with start offsets spread over up to a
    data plane's length. The server's speed is scaled to the target load (the load grows
    with the server's seconds, so a bisection finds the scale)."""
    rng = np.random.default_rng([seed, list(LOADS).index(level)])
    n, layers = int(rng.integers(2, 9)), int(rng.integers(4, 11))
    device = np.exp(rng.uniform(np.log(0.01), np.log(0.3), n))
    device_fixed = rng.uniform(0.0, 0.05, n)
    transfer = np.exp(rng.uniform(np.log(0.01), np.log(0.5), n))
    split = rng.integers(1, layers, n)
    fixed = float(rng.uniform(0.0, 0.5))
    target = min(float(rng.uniform(*LOADS[level])), 0.95 * n)  # a load below n is reachable
    spread = float(rng.uniform(0.0, 1.0))
    base, work = _base_and_work(_scenario(n, layers, device, device_fixed, transfer, 1.0,
                                          fixed), split)  # work at scale 1
    lo, hi = 1e-6, 1e3
    for _ in range(100):
        scale = float(np.sqrt(lo * hi))
        lo, hi = (scale, hi) if np.sum(scale * work / (base + scale * work)) < target else (
            lo, scale)
    start = None
    if seed % 2:
        plane = LOCAL_STEPS * float(np.median(base + scale * work))
        start = rng.uniform(0.0, spread * plane, n)
    return _scenario(n, layers, device, device_fixed, transfer, scale, fixed * scale,
                     start), split


def small_instance(seed: int) -> MakespanScenario:
    """3 clients and 4-5 layers (27 or 64 split vectors), devices 0.02-0.2 s per layer,
    links 0.01-0.3 s per step, the server 0.01-0.2 s per layer: often slower than a device
    once shared, so the best split is rarely edge-only. Odd seeds with start offsets."""
    rng = np.random.default_rng([seed, 99])
    n, layers = 3, int(rng.integers(4, 6))
    device = np.exp(rng.uniform(np.log(0.02), np.log(0.2), n))
    transfer = np.exp(rng.uniform(np.log(0.01), np.log(0.3), n))
    server = float(np.exp(rng.uniform(np.log(0.01), np.log(0.2))))
    fixed = float(rng.uniform(0.0, 0.05))
    start = (rng.uniform(0.0, 0.5, n) * LOCAL_STEPS * float(np.median(2 * device + transfer))
             if seed % 2 else None)
    return _scenario(n, layers, device, rng.uniform(0.0, 0.05, n), transfer, server, fixed,
                     start)


Response = Callable[..., np.ndarray]

#: Response-time models that are wrong, scored the same way, to show the check can fail: the
#: nonsense that fooled the first FIFO tests, no queue at all, a server always saturated
#: (every other client's tail ahead of each step: the share model's view), and the FIFO model
#: without start offsets.
WRONG_MODELS: dict[str, Response] = {
    "7W + sin(B)^2": lambda base, work, *_: 7 * work + np.sin(base) ** 2,
    "no queue": lambda base, work, *_: work,
    "always saturated": lambda base, work, *_: np.broadcast_to(
        work.sum(axis=-1, keepdims=True), work.shape),
    "start offsets ignored": lambda base, work, association, concurrency, start:
        fifo_response_s(base, work, association, concurrency, None),
}


def modelled(scenario: MakespanScenario, split, response: Response = fifo_response_s
             ) -> tuple[float, np.ndarray]:
    """The FIFO model's makespan per step and each client's data-plane seconds per step
    (``response`` replaceable, so a wrong model can be scored the same way)."""
    base, work = _base_and_work(scenario, split)
    association = np.zeros(scenario.n_users, int)
    finish = base + response(base, work, association, scenario.concurrency,
                             scenario.start_step_s)
    return makespan_s(scenario, finish), finish


def simulated(scenario: MakespanScenario, split, jitter_cv: float = 0.0, draws: int = 1
              ) -> tuple[float, np.ndarray]:
    """The simulation's makespan per step and each client's data-plane seconds per step
    (means over ``draws`` jitter seeds)."""
    rounds = [simulate_scenario(scenario, split, np.zeros(scenario.n_users, int),
                                jitter_cv=jitter_cv, seed=k) for k in range(draws)]
    steps = scenario.local_steps
    return (float(np.mean([r.span_s for r in rounds])) / steps,
            np.mean([r.dataplane_s for r in rounds], axis=0) / steps)


def error_row(seed: int, level: str, response: Response = fifo_response_s,
              jitter: bool = True) -> dict:
    """Model against simulation on one load instance."""
    sc, split = load_instance(seed, level)
    span, plane = modelled(sc, split, response)
    sim_span, sim_plane = simulated(sc, split)
    _, work = _base_and_work(sc, split)
    association = np.zeros(sc.n_users, int)
    response_model = response(*_base_and_work(sc, split), association, sc.concurrency,
                              sc.start_step_s)
    response_sim = simulate_scenario(sc, split, association).response_s
    row = {"load": level, "instance": seed, "clients": sc.n_users, "layers": sc.layers,
           "offsets": sc.start_s is not None, "offered_load": round(offered_load(sc, split), 3),
           "model_span_s": span, "sim_span_s": sim_span, "span_error": span / sim_span - 1,
           "dataplane_max_abs_error": float(np.max(np.abs(plane / sim_plane - 1))),
           "response_median_abs_error": float(np.median(np.abs(response_model / response_sim
                                                               - 1)))}
    if jitter:
        jit_span, _ = simulated(sc, split, JITTER_CV, JITTER_DRAWS)
        row.update(sim_span_jitter_s=jit_span, span_error_jitter=span / jit_span - 1)
    return row


def regret_row(seed: int) -> dict:
    """fp's choice against every split vector, all simulated."""
    sc = small_instance(seed)
    vectors = np.array(list(itertools.product(range(1, sc.layers), repeat=sc.n_users)))
    spans = np.array([simulated(sc, v)[0] for v in vectors])
    best = int(np.argmin(spans))
    choice = solve(sc, "fp").split
    chosen = simulated(sc, choice)[0]
    # The same optimiser under the share model, judged by the same simulation.
    shares_choice = solve(dataclasses.replace(sc, queue="shares"), "fp").split
    shares_chosen = simulated(sc, shares_choice)[0]
    edge = spans[0]  # vectors start at (1, ..., 1)
    return {"instance": seed, "layers": sc.layers, "offsets": sc.start_s is not None,
            "vectors": len(vectors), "fp_split": " ".join(map(str, choice)),
            "fp_shares_split": " ".join(map(str, shares_choice)),
            "fp_shares_regret": shares_chosen / spans[best] - 1,
            "sim_best_split": " ".join(map(str, vectors[best])),
            "fp_sim_span_s": chosen, "best_sim_span_s": float(spans[best]),
            "edge_only_sim_span_s": float(edge), "regret": chosen / spans[best] - 1,
            "best_is_edge_only": bool(np.all(vectors[best] == 1)),
            "model_max_abs_error": float(np.max(np.abs(
                [modelled(sc, v)[0] / s - 1 for v, s in zip(vectors, spans, strict=True)])))}


def plot(errors: list[dict], path: Path) -> None:
    fig, axes = subplots(1, 2, panel=(3.6, 3.0))
    ax = axes[0, 0]
    for i, level in enumerate(LOADS):
        rows = [r for r in errors if r["load"] == level]
        ax.scatter([r["sim_span_s"] for r in rows], [r["model_span_s"] for r in rows],
                   color=f"C{i}", label=f"{level} load")
    top = max(max(r["sim_span_s"], r["model_span_s"]) for r in errors)
    ax.plot([0, top], [0, top], "k:", label="model = simulation")
    ax.set(xlabel="simulated makespan per step (s)", ylabel="FIFO model (s)",
           xscale="log", yscale="log")
    ax.legend()
    ax = axes[0, 1]
    data = [[100 * r["span_error"] for r in errors if r["load"] == level] for level in LOADS]
    ax.boxplot(data, tick_labels=list(LOADS))
    ax.axhline(0.0, color="k", linestyle=":")
    ax.set(ylabel="model / simulation - 1 (%)", title="makespan error, deterministic steps")
    save(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 instances per level, 6 small")
    parser.add_argument("--out", type=Path, default=Path("results/queue_oracle"))
    args = parser.parse_args(argv)
    instances, small = (3, 6) if args.quick else (INSTANCES, SMALL)
    args.out.mkdir(parents=True, exist_ok=True)
    errors = [error_row(seed, level) for level in LOADS for seed in range(instances)]
    regrets = [regret_row(seed) for seed in range(small)]
    write_csv(errors, args.out / "errors.csv")
    wrong = [{"model": name, "load": level, "median_abs_span_error": float(np.median(e)),
              "max_abs_span_error": float(np.max(e))}
             for name, response in {"fifo_response_s": fifo_response_s, **WRONG_MODELS}.items()
             for level in LOADS
             for e in [np.abs([error_row(seed, level, response, jitter=False)["span_error"]
                               for seed in range(instances)])]]
    write_csv(wrong, args.out / "models.csv")
    write_csv(regrets, args.out / "fp_regret.csv")
    plot(errors, args.out / "queue_oracle.png")
    for level in LOADS:
        e = [abs(r["span_error"]) for r in errors if r["load"] == level]
        print(f"{level} load: makespan error median {np.median(e):.1%}, max {np.max(e):.1%}")
    print(f"fp's regret under the simulation: max {max(r['regret'] for r in regrets):.1%}; "
          f"best not edge-only on {sum(not r['best_is_edge_only'] for r in regrets)} of "
          f"{len(regrets)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
