"""Section: the resident device agent (issue 28): what a Flower message costs a deployed device
without and with it, a deployment round, the agent's memory, SmolLM2 on the testbed, and the
deployment e2e tests' time."""

from __future__ import annotations

import json
from pathlib import Path

from experiments.report.stats import column, fmt_ci, load_json, mean_ci, rows, table

FOLDER = "device_agent"
MODES = {"none": "without agent", "agent": "with agent"}


def _messages(folder: Path) -> str:
    messages = rows(folder / "messages.csv")
    kinds = list(dict.fromkeys(m["message_type"] for m in messages))
    body = []
    for kind in kinds:
        cells = [f"`{kind}`"]
        for key in ("cpu_s", "wall_s"):
            cells += [fmt_ci(column(messages, key, mode=mode, message_type=kind), 2)
                      for mode in MODES]
        body.append(cells)
    return table(["message", "CPU-s without agent", "CPU-s with agent",
                  "wall s without agent", "wall s with agent"], body)


def _rounds(folder: Path) -> str:
    rounds = [r for r in rows(folder / "rounds.csv") if r["round"] == "1"]
    keys = {"time_round_s": "round (sampling to evaluation)",
            "time_calibrate_s": "profile query with calibration",
            "time_train_s": "training (train message to adapters)",
            "time_eval_s": "evaluation", "start_s_mean": "train message to first step",
            "flwr_run_s": "whole `flwr run` (ServerApp start included)"}
    body = []
    for key, label in keys.items():
        before, after = (column(rounds, key, mode=mode) for mode in MODES)
        body.append([label, fmt_ci(before), fmt_ci(after),
                     f"{mean_ci(before)[0] / mean_ci(after)[0]:.1f}x"])
    return table(["seconds", *MODES.values(), "ratio"], body)


def _rss(folder: Path) -> str:
    path = folder / "rss.csv"
    if not path.is_file():
        return ""
    rss = rows(path)
    body = []
    for node in sorted({r["node"] for r in rss}):
        mb = column(rss, "rss_mb", node=node)
        growth = (max(mb[2:]) - mb[2]) / mb[2]
        body.append([node, len(mb), f"{mb[0]:.0f}", f"{mb[2]:.0f}", f"{max(mb[2:]):.0f}",
                     f"{mb[-1]:.0f}", f"{100 * growth:+.1f}%"])
    return ("Each agent's resident memory after every round's training, over one run "
            "(`rss.csv`):\n\n" + table(
                ["agent", "rounds", "MB after round 1", "after round 3",
                 "max after round 3", "after the last", "growth after round 3"], body))


def _testbed(folder: Path) -> str:
    parts = []
    for name, label in (("testbed_before", "without agents (as before)"),
                        ("testbed_after", "with agents")):
        run = folder / name
        if not (run / "summary.json").is_file():
            continue
        summary = load_json(run / "summary.json")
        round_rows = rows(run / "rounds.csv") if (run / "rounds.csv").is_file() else []
        clients = rows(run / "clients.csv") if (run / "clients.csv").is_file() else []
        body = []
        for r in round_rows:
            starts = column(clients, "measured_start_s", round=r["round"])
            body.append([r["round"], f"{r['completed']}/{r['sampled']}",
                         f"{float(r['measured_round_s']):.0f}",
                         f"{float(r['measured_train_phase_s']):.0f}",
                         f"{float(r['calibrate_s']):.0f}",
                         " ".join(f"{s:.0f}" for s in sorted(starts)), r["load_average"]])
        outcome = summary.get("outcome", "").split("; output tail")[0]  # not Flower's log
        parts.append(f"**{label}** ({summary['model']}, {len(summary['devices'])} devices, "
                     f"{summary['local_steps']} local steps, batch {summary['batch_size']} x "
                     f"{summary['block_size']} tokens){': ' + outcome if outcome else ''}\n\n"
                     + (table(["round", "clients completed", "round s", "training s",
                               "profile + calibration s", "client start offsets s",
                               "load average"], body) if body else "no round finished\n"))
    return "\n".join(parts)


def _e2e_tests(folder: Path) -> str:
    path = folder / "e2e_tests.csv"
    if not path.is_file():
        return ""
    body = [[r["code"], f"`{r['test']}`", f"{float(r['seconds']):.0f}", r["source"]]
            for r in rows(path)]
    return table(["code", "test (tests/fl_app/test_e2e_deployment.py)", "seconds", "measured by"],
                 body)


def render(results: Path) -> str:
    folder = results / FOLDER
    summary = json.loads((folder / "summary.json").read_text())
    loads = summary["load_average"]
    identical = "bit for bit the same" if summary["adapters_identical"] else "DIFFERENT"
    cpu = max(column(rows(folder / "messages.csv"), "cpu_s", mode="agent"))
    text = [
        "## Device agent: a Flower message without re-importing torch",
        "",
        "Flower 1.41 starts a fresh `flwr-clientapp` process per message. Without the agent it "
        "imports torch and builds the model for every message; with the resident agent "
        "(`edgesplit-device`, docs/deployment.md) it forwards the message over a Unix socket. "
        "`python -m experiments.bench_agent` runs one round of tiny-llama on a local deployment "
        "(2 SuperNodes; profile with calibration, stream training, evaluation), alternately "
        "without and with agents in one invocation, and writes `results/device_agent/`. "
        f"Load average {loads['start']} at the start, {loads['end']} at the end (a shared "
        f"2-core machine). Per ClientApp process, from its start to its reply "
        f"(`messages.csv`):",
        "",
        _messages(folder),
        f"The most CPU any ClientApp process used with the agent: {cpu:.2f} CPU-s. The first "
        "round, from the ServerApp's metrics (`rounds.csv`; the training phase includes each "
        "client's start-up, the message it waits for):",
        "",
        _rounds(folder),
        f"The two paths' adapters were {identical} in every repetition.",
        "",
        _rss(folder),
        "### SmolLM2-135M on the emulated testbed",
        "",
        "`python -m experiments.testbed --model smollm2-135m` on the shipped fleet "
        "(`experiments/testbed_fleet.toml`), `--no-agents` for the path before; client start "
        "offsets are from the round's train message to the client's first step (docs/testbed.md):",
        "",
        _testbed(folder),
        "### The deployment e2e tests",
        "",
        "The deployment e2e tests' time in a full `pytest -q` before the agent (no agents; "
        "pytest's `--durations`, setup and call) and after it (through agents; the JUnit report's "
        "time), `e2e_tests.csv`; single runs, each during other work on the shared machine:",
        "",
        _e2e_tests(folder),
    ]
    return "\n".join(text)
