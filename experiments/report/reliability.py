"""Reliability: long runs with faults, crashes and restarts, strangers, floods."""

from __future__ import annotations

from pathlib import Path

from .reproduce import rerun
from .stats import fixed, fmt_ci, load_json, median, rows, spread, table

SOAKS = ("tiny-llama", "smollm2-135m")


def soak_row(summary: dict) -> list[str]:
    check = summary.get("drop_check", "count")
    return [f"{summary['model']}, {summary['clients']} clients, faults "
            f"{summary['fault_kinds']} at {summary['fault_rate']:g} per client per round"
            + (f" (`{summary['command']}`)" if "command" in summary else ""),
            str(summary["rounds_recorded"]),
            f"{summary['rounds_completed']} / {len(summary['rounds_skipped'])}",
            f"{summary['clients_dropped']} ({len(summary['failures_unexplained'])} unexplained, "
            f"matched by {check})",
            f"{summary['checkpoints_written']} of {summary['rounds_recorded']}",
            f"{summary['rss_round3_mb']:.0f} -> {summary['rss_last_mb']:.0f} MB "
            f"(max {summary['rss_max_after_round3_mb']:.0f}, "
            f"{100 * summary['rss_growth_after_round3']:+.1f}%)",
            f"{summary['peak_rss_mb']:.0f} MB ({summary['goal_mb']:.0f})",
            f"{summary['wall_s'] / 60:.0f} min"]


def flood(results: Path) -> str:
    data = rows(results / "bench_flood" / "bench_flood_smollm2-135m_other.csv")
    quiet = [r for r in data if r["flooded"] == "False"]
    flooded = [r for r in data if r["flooded"] == "True"]
    body, wall, cpu = [], [], []
    for i, (q, f) in enumerate(zip(quiet, flooded, strict=True)):
        wall.append(float(f["time_round_s"]) / float(q["time_round_s"]))
        cpu.append(float(f["server_and_clients_cpu_s"]) / float(q["server_and_clients_cpu_s"]))
        body.append([i, *(f"{float(r['time_round_s']):.1f} "
                          f"({float(r['server_and_clients_cpu_s']):.1f})" for r in (q, f)),
                     f"{wall[-1]:.2f}", f"{cpu[-1]:.2f}"])
    body.append(["**median**", "", "", f"**{median(wall):.2f}**", f"**{median(cpu):.3f}**"])
    complete = all(r["completed"] == flooded[0]["completed"] for r in data)
    attempts = {r["attempts"] for r in flooded}
    refused = {r["refused"] for r in flooded}
    flooder = [float(r["flooder_cpu_s"]) / float(r["attempts"]) * 1000 for r in flooded]
    inside = all(r["flood_ended_in_round"] == "True" for r in flooded)
    over_quarter = sum(w > 1.25 for w in wall)
    completion = ("Every round, quiet or flooded, completed with all clients" if complete
                  else "Not every round completed with all clients")
    tried, turned = ", ".join(sorted(attempts)), ", ".join(sorted(refused))
    when = "inside the round" if inside else "partly outside the round"
    return f"""**Flood** ({rerun("bench_flood")}: SmolLM2-135M, in-process clients, split 3;
the flooder is a separate process dialling [::1] while the clients dial 127.0.0.1).
{completion}. In each flooded round the flooder made its {tried} attempts (TCP only, garbage,
bad hello, wrong secret, silent) {when}; the stream server refused {turned} of them with a
reason (busy from the per-address limit, bad hello, wrong secret, silence past the handshake
deadline; `refused_by_reason`) and gRPC closed the TCP-only and garbage connections. Side by
side, round time in seconds (CPU seconds of the server and the in-process clients in brackets):

{table(["pair", "undisturbed", "flooded", "wall ratio", "CPU ratio"], body)}
([results/bench_flood/bench_flood_smollm2-135m_other.csv](../results/bench_flood/bench_flood_smollm2-135m_other.csv).)
Over the {len(cpu)} pairs the CPU ratio is {fmt_ci(cpu, 3)}; the wall ratio
{fmt_ci(wall, 2)}, {over_quarter} of {len(wall)} pairs above 1.25. **The wall-time goal (at most
+25 %) is met by the median but not established pair by pair**: the run was made on a 2-vCPU
machine shared with other jobs, where the same undisturbed round took
{spread([float(q['time_round_s']) for q in quiet], fixed(0))} s, so the wall ratio
swings by more than the flood could cause. The steady measure is CPU: the flooder itself used
{spread(flooder, fixed(1))} CPU s per 1000 attempts. A clean wall-time figure needs a
rerun on a quiet machine.
"""


def render(results: Path) -> str:
    soaks = [load_json(results / "soak" / name / "soak.json") for name in SOAKS]
    body = [soak_row(s) for s in soaks]
    return f"""### Reliability: long runs, crashes, strangers, floods

**Soak** (`python -m experiments.soak`, Ray simulation through `flwr run`, one actor per client,
every client every round, random client faults; `results/soak/<model>/`):

{table(["run", "rounds", "completed / skipped", "clients dropped", "checkpoints",
        "ServerApp RSS round 3 -> last", "peak (goal: 2 x model + 1 GiB)", "wall"], body)}
![soak tiny](../results/soak/tiny-llama/soak.png)
![soak smollm2](../results/soak/smollm2-135m/soak.png)

"Explained", matched by identity: the partitions of the nodes a round dropped are exactly the
partitions that drew a fault for that round (`clients.faults.drawn`; each client's partition is
in the round's metrics); matched by count (a run made before that check): each round dropped as
many clients as drew a fault, which a healthy client dropped in a faulty one's place would also
pass. Crash faults are left out in
simulation (Flower 1.41 never replaces a killed Ray actor). The ServerApp's memory stays flat
because every tail step runs on one long-lived worker thread (`strategies/tail_queue.py`) and
free pages go back to the system after each round (`edgesplit/memory.py`); before that
each round's new stream threads kept a step's freed memory in their own glibc arenas and the
RSS grew round after round. `metrics.jsonl` records `server_rss_mb` (after the round) next to
`server_peak_rss_mb`.

**Crash and restart** (`pytest -m e2e tests/fl_app/test_e2e_crash.py`): the ServerApp SIGKILLed
mid-round in Ray simulation and in deployment, and the whole edge server (SuperLink, SuperExec,
ServerApp) SIGKILLed and restarted on its state database; each resumed run ends with the adapter
of an uninterrupted run, bit for bit (a test, not a timed benchmark); the killed simulation run
ends `finished:failed`.

**SuperNode authentication** (`tests/fl_app/test_e2e_deployment.py`, TLS test): registered
SuperNodes train; one with an unregistered key and one without a key exit with Flower's
authentication error.

{flood(results)}"""
