"""One round's row of metrics: who did what, what the system model predicted, what it cost."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from allocation.allocators import ClientAllocation, RoundAllocation
from strategies.transport import TrainOutcome


def round_costs(allocations: Mapping[int, ClientAllocation],
                outcomes: Mapping[int, TrainOutcome], failures: Mapping[int, str],
                profiles: Mapping[int, Mapping[str, float]],
                plan: RoundAllocation | None) -> dict:
    """Per-client decisions, the modelled costs of the plan and the measured traffic and time."""
    steps = [t for o in outcomes.values() for t in o.step_times]
    per_step_wait = [o.transport_s / max(1, len(o.step_times) + 1) for o in outcomes.values()
                     if o.failure is None]
    return {
        "clients": [{"node": n, "split": a.split, "bandwidth_hz": a.bandwidth_hz,
                     "power_w": a.power_w, "user_freq_hz": a.user_freq_hz,
                     "examples": int(profiles[n]["num-examples"]),
                     **({} if a.loss_rate is None else {"loss_rate": a.loss_rate})}
                    for n, a in allocations.items()],
        "modelled_objective": plan.objective if plan else None,
        "modelled_energy_j": plan.energy_j if plan else None,
        "modelled_delay_s": plan.delay_s if plan else None,
        "modelled_stability": plan.stability if plan else None,
        "failures": {str(n): r for n, r in failures.items()},
        "bytes_up": sum(o.bytes_up for o in outcomes.values()),
        "bytes_down": sum(o.bytes_down for o in outcomes.values()),
        "server_tail_step_s": float(np.mean(steps)) if steps else None,
        "client_exchange_s": float(np.mean(per_step_wait)) if per_step_wait else None,
    }


def progress_line(row: Mapping, rounds: int) -> str:
    """The one-line summary the ServerApp logs after each round."""
    parts = [f"round {row['round']}/{rounds}", f"clients {row['completed']}/{row['sampled']}"]
    for key, fmt in (("train_loss", "loss {:.4f}"), ("val_ppl", "val ppl {:.2f}"),
                     ("heldout_ppl", "held-out ppl {:.2f}")):
        if row.get(key) is not None:
            parts.append(fmt.format(row[key]))
    parts.append(f"splits {sorted(c['split'] for c in row['clients'])}")
    parts.append(f"{row['time_round_s']:.1f} s")
    return " | ".join(parts)
