"""A run folder's figures: drawn from the metrics rows as they are (rounds without a value are
left out), redrawn when their interval has passed and when the run ends, and never able to stop
the training."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

from strategies import outputs
from strategies.outputs import RunRecorder
from strategies.run_figures import clients_figure, time_figure, training_figure

ROWS = [
    {"round": 1, "train_loss": 3.0, "val_ppl": 30.0, "heldout_ppl": 31.0,
     "modelled_delay_s": 2.0, "time_train_s": 5.0,
     "clients": [{"node": 7, "split": 2, "bandwidth_hz": 4e6, "bytes_up": 1_000_000,
                  "bytes_down": 500_000, "modelled_s": 6.0, "measured_dataplane_s": 5.0,
                  "measured_s": 50.0}]},
    {"round": 2, "skipped": "0 clients completed", "heldout_ppl": 31.0, "time_train_s": 1.0,
     "modelled_delay_s": None, "clients": []},
    {"round": 3, "train_loss": 2.5, "heldout_ppl": 20.0, "modelled_delay_s": 1.5,
     "time_train_s": 4.0,
     "clients": [{"node": 7, "split": 3, "bandwidth_hz": 5e6, "bytes_up": 2_000_000,
                  "bytes_down": 1_000_000, "modelled_s": 9.0, "measured_dataplane_s": 8.0},
                 {"node": 12345678901, "split": 1, "bandwidth_hz": 6e6, "bytes_up": 0,
                  "bytes_down": 0, "modelled_s": 3.0, "measured_dataplane_s": 2.0}]},
]


def _lines(ax) -> dict[str, tuple[list, list]]:
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
            for line in ax.lines}


def test_the_figures_show_the_metrics_of_the_rounds_that_have_them():
    loss, ppl = training_figure(ROWS).axes
    assert _lines(loss)["_child0"] == ([1, 3], [3.0, 2.5])
    assert _lines(ppl) == {"federated validation": ([1], [30.0]),
                           "server held-out": ([1, 2, 3], [31.0, 31.0, 20.0])}

    split, bandwidth, traffic = clients_figure(ROWS).axes
    assert _lines(split) == {"node 7": ([1, 3], [2, 3]), "node ...8901": ([3], [1])}
    assert _lines(bandwidth)["node 7"] == ([1, 3], [4.0, 5.0])
    assert _lines(traffic)["node 7"] == ([1, 3], [1.5, 3.0])

    slowest, each = time_figure(ROWS).axes
    assert _lines(slowest) == {"modelled": ([1, 3], [6.0, 9.0]), "measured": ([1, 3], [5.0, 8.0])}
    assert "data plane" in slowest.get_ylabel()
    points = {c.get_label(): c.get_offsets().tolist() for c in each.collections}
    assert points == {"round 1": [[5.0, 6.0]], "round 3": [[8.0, 9.0], [2.0, 3.0]]}


def test_the_time_figure_says_when_it_falls_back_to_the_whole_round():
    rows = [{"round": 1, "clients": [{"node": 1, "modelled_s": 2.0, "measured_s": 7.0}]}]
    slowest, each = time_figure(rows).axes
    assert _lines(slowest) == {"modelled": ([1], [2.0]), "measured": ([1], [7.0])}
    assert "control plane" in each.get_xlabel()


def test_a_figure_that_fails_is_logged_and_the_round_is_recorded(tmp_path, monkeypatch, caplog):
    # Prepare
    def broken(_rows):
        raise RuntimeError("no fonts")

    recorder = RunRecorder(tmp_path, "run", {}, figures_every_s=0.0)  # after every round

    # Execute
    recorder.log_round(ROWS[0])
    monkeypatch.setattr(outputs, "draw_all", broken)
    with caplog.at_level(logging.WARNING):
        recorder.log_round(ROWS[2])

    # Assert
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2
    assert "run figures not drawn: RuntimeError: no fonts" in caplog.text
    assert (tmp_path / "run" / "figures" / "training.png").is_file()  # round 1's stays


def test_rounds_faster_than_the_interval_are_drawn_when_the_run_ends(tmp_path, monkeypatch):
    # Prepare
    drawn = []
    monkeypatch.setattr(outputs, "draw_all", lambda rows: drawn.append(len(rows)) or {})
    clock = [100.0]  # the recorder's own clock only, not the process's
    monkeypatch.setattr(outputs, "time", SimpleNamespace(monotonic=lambda: clock[0],
                                                         strftime=time.strftime))
    recorder = RunRecorder(tmp_path, "run", {}, figures_every_s=30.0)

    # Execute: rounds end 10 s, 20 s, 45 s and 50 s after the start
    for row, now in zip(ROWS + ROWS[:1], (110.0, 120.0, 145.0, 150.0), strict=True):
        clock[0] = now
        recorder.log_round(row)
    recorder.status("running")
    after_rounds = list(drawn)
    recorder.status("completed")
    recorder.status("completed")  # nothing new to draw

    # Assert: one drawing once 30 s had passed (3 rounds), none at "running", the last at the
    # end, and none again for the same rounds
    assert after_rounds == [3]
    assert drawn == [3, 4]


def test_a_client_keeps_its_colour_in_a_panel_that_shows_only_some_clients():
    """Bandwidth exists only for clients that share a cell: the second client's bandwidth
    line has its colour in the split panel, not the first colour of the panel."""
    rows = [{"round": 1, "clients": [{"node": 1, "split": 1}, {"node": 5, "split": 2,
                                                                 "bandwidth_hz": 2e6}]}]
    split, bandwidth, _ = clients_figure(rows).axes
    colour = {line.get_label(): line.get_color() for line in split.lines}
    (line,) = bandwidth.lines
    assert line.get_color() == colour["node 5"] != colour["node 1"]
