"""The device-agent section of docs/results.md reads its numbers from the benchmark's files."""

from __future__ import annotations

import json

from experiments.plotting import write_csv
from experiments.report import device_agent


def test_the_section_shows_each_mode_and_the_ratios_from_the_files(tmp_path):
    # Prepare: two repeats of each mode, an RSS run and a testbed folder, with known numbers
    folder = tmp_path / "device_agent"
    folder.mkdir()
    messages = [{"mode": mode, "repeat": r, "node": 0, "pid": 1, "message_type": kind,
                 "cpu_s": cpu + r, "wall_s": 10 * cpu}
                for mode, cpu in (("none", 5.0), ("agent", 1.0)) for r in (0, 1)
                for kind in ("query.profile", "train.stream")]
    rounds = [{"mode": mode, "repeat": r, "round": 1, "time_round_s": seconds,
               "time_calibrate_s": 1.0, "time_train_s": 2.0, "time_eval_s": 3.0,
               "start_s_mean": 4.0, "start_s_max": 5.0, "flwr_run_s": 6.0,
               "load_before": "1", "load_after": "1"}
              for mode, seconds in (("none", 90.0), ("agent", 30.0)) for r in (0, 1)]
    rss = [{"model": "m", "node": 0, "round": n, "rss_mb": mb}
           for n, mb in enumerate([400, 410, 500, 505, 510], start=1)]
    write_csv(messages, folder / "messages.csv")
    write_csv(rounds, folder / "rounds.csv")
    write_csv(rss, folder / "rss.csv")
    (folder / "summary.json").write_text(json.dumps({
        "adapters_identical": True, "load_average": {"start": "1.0", "end": "2.0"}}))

    # Execute
    text = device_agent.render(tmp_path)

    # Assert: means (with intervals), the 3x round ratio, the RSS growth after round 3
    assert "| `query.profile` | 5.50 ± 6.35 (n=2) | 1.50 ± 6.35 (n=2) |" in text
    assert "| round (sampling to evaluation) | 90.0 ± 0.0 (n=2) | 30.0 ± 0.0 (n=2) | 3.0x |" \
        in text
    assert "| 0 | 5 | 400 | 500 | 510 | 510 | +2.0% |" in text
    assert "bit for bit the same" in text
    assert "The most CPU any ClientApp process used with the agent: 2.00 CPU-s" in text
