"""One round's row of metrics: who did what, what the system model predicted, what it cost."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from allocation.allocators import ClientAllocation, RoundAllocation
from strategies.transport import TrainOutcome


def round_costs(allocations: Mapping[int, ClientAllocation],
                outcomes: Mapping[int, TrainOutcome], failures: Mapping[int, str],
                profiles: Mapping[int, Mapping[str, float]],
                plan: RoundAllocation | None, local_steps: int) -> dict:
    """Per-client decisions, the modelled costs of the plan, the measured traffic and time, and
    each client's modelled against measured seconds for the round.

    Modelled: the cost model's device, transfer, server (its tail at the whole server's
    speed) and queueing (what sharing the server adds) seconds per step, times `local_steps`.
    Measured: the device's own compute time (as it reports it), the server's time on its
    requests, and its round's wall time from the round message to the final reply;
    `measured_wait_s` is the rest (transfer, queueing behind other clients, control plane),
    to set against modelled transfer + queueing. On the stream also: `measured_queue_s` (its
    frames waiting for the server's tail worker), `measured_transfer_s` (the device's wait on
    the stream less the server's time on its frames: the wire both ways and pacing) and
    `measured_dataplane_s` (device compute + its wait on the stream: what the cost model's
    per-client time predicts, without the control plane's start-up) and `measured_start_s`
    (from the round message to its first step: that start-up).
    """
    steps = [t for o in outcomes.values() for t in o.step_times]
    per_step_wait = [o.transport_s / max(1, len(o.step_times) + 1) for o in outcomes.values()
                     if o.failure is None]
    clients = [_client_times(n, a, outcomes.get(n), profiles[n], local_steps)
               for n, a in allocations.items()]
    return {
        "clients": clients,
        "modelled_objective": plan.objective if plan else None,
        "modelled_energy_j": plan.energy_j if plan else None,
        "modelled_delay_s": plan.delay_s if plan else None,
        "modelled_stability": plan.stability if plan else None,
        # The allocator's certified optimality gap (None: nothing bounds it) and how its
        # search ended (exact, stopped by its budget, no bound...).
        "allocation_gap": (plan.gap if plan and np.isfinite(plan.gap) else None),
        "allocation_search": plan.search if plan else None,
        **model_fit(clients),
        "failures": {str(n): r for n, r in failures.items()},
        "bytes_up": sum(o.bytes_up for o in outcomes.values()),
        "bytes_down": sum(o.bytes_down for o in outcomes.values()),
        "server_tail_step_s": float(np.mean(steps)) if steps else None,
        "client_exchange_s": float(np.mean(per_step_wait)) if per_step_wait else None,
    }


def _client_times(node: int, a: ClientAllocation, outcome: TrainOutcome | None,
                  profile: Mapping[str, float], local_steps: int) -> dict:
    entry = {"node": node, "device_class": profile.get("device_class", ""),
             "label": profile.get("label", ""), "split": a.split,
             **{k: v for k, v in (("bandwidth_hz", a.bandwidth_hz), ("power_w", a.power_w),
                                  ("user_freq_hz", a.user_freq_hz),
                                  ("server_share", a.server_share), ("loss_rate", a.loss_rate),
                                  ("rate_bps", a.rate_bps), ("subchannels", a.subchannels))
                if v is not None},
             "partition": profile.get("partition_id", -1),
             "examples": int(profile["num-examples"]),
             "bytes_up": outcome.bytes_up if outcome else 0,
             "bytes_down": outcome.bytes_down if outcome else 0,
             **{f"modelled_{part}_s": local_steps * getattr(a, f"modelled_{part}_s")
                for part in ("device", "transfer", "server", "queue")}}
    entry["modelled_s"] = sum(entry[f"modelled_{part}_s"]
                              for part in ("device", "transfer", "server", "queue"))
    if a.modelled_exchange_s is not None:  # the adapter's upload after the last step
        entry["modelled_exchange_s"] = local_steps * a.modelled_exchange_s
    if a.modelled_fifo_queue_s is not None:  # the same, with a first-come-first-served server
        entry["modelled_fifo_queue_s"] = local_steps * a.modelled_fifo_queue_s
        entry["modelled_fifo_s"] = (entry["modelled_s"] - entry["modelled_queue_s"]
                                    + entry["modelled_fifo_queue_s"])
    if outcome is not None and outcome.resent:  # its round message was lost or late
        entry["resent"] = outcome.resent
    if outcome is not None and outcome.failure is None:
        server = float(sum(outcome.step_times))
        device = outcome.device_compute_s
        entry.update(measured_device_s=device, measured_server_s=server,
                     measured_s=outcome.round_s,
                     measured_wait_s=outcome.round_s - server - (device or 0.0))
        if outcome.start_s is not None:
            entry["measured_start_s"] = outcome.start_s
        entry.update(outcome.privacy)  # privacy.epsilon: the device's spend after the round
        if outcome.server_s > 0:  # the stream: the server's wall time on each frame
            entry["measured_queue_s"] = max(0.0, outcome.server_s - server)
            entry["measured_server_pacing_s"] = outcome.pacing_s
            if outcome.device_exchange_s is not None and device is not None:
                entry["measured_transfer_s"] = max(
                    0.0, outcome.device_exchange_s - outcome.server_s)
                entry["measured_dataplane_s"] = device + outcome.device_exchange_s
                if outcome.start_s is not None:  # from the data plane's end to the reply
                    entry["measured_reply_s"] = max(0.0, outcome.round_s - outcome.start_s
                                                    - entry["measured_dataplane_s"])
    return entry


#: (name in the fit, modelled keys summed, measured keys summed) of each part compared.
FIT_PARTS = (("", ("modelled_s",), ("measured_s",)),
             ("device_", ("modelled_device_s",), ("measured_device_s",)),
             ("server_", ("modelled_server_s",), ("measured_server_s",)),
             ("transfer_", ("modelled_transfer_s",), ("measured_transfer_s",)),
             ("server_queue_", ("modelled_server_s", "modelled_queue_s"),
              ("measured_server_s", "measured_queue_s")),
             ("dataplane_", ("modelled_s",), ("measured_dataplane_s",)),
             ("dataplane_fifo_", ("modelled_fifo_s",), ("measured_dataplane_s",)),
             ("reply_", ("modelled_exchange_s",), ("measured_reply_s",)))


def model_fit(clients: list[dict]) -> dict:
    """Median over the round's completed clients of modelled / measured seconds: the whole
    round of a client (control plane included), its device, server, transfer and server
    queue + tail parts, its time on the data plane, and its reply after it against the
    modelled adapter upload (None where nothing was measured)."""
    fit = {}
    for name, modelled, measured in FIT_PARTS:
        ratios = [sum(c[k] for k in modelled) / sum(c[k] for k in measured) for c in clients
                  if all(c.get(k) is not None for k in (*measured, *modelled))
                  and sum(c[k] for k in measured) > 0]
        fit[f"modelled_over_measured_{name}median"] = (float(np.median(ratios)) if ratios
                                                       else None)
    return fit


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
