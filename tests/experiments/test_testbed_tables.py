"""The testbed experiment's tables: per-client errors, per-round makespans and the allocator
table say what the round metrics say (no testbed needed: rows as a run writes them)."""

import pytest

from experiments import testbed


def _client(label, modelled, measured, queue=0.0, fifo=0.0, start=5.0):
    """A round-metrics client entry: modelled parts (device, transfer, server, queue) and
    measured parts (device, transfer, server, queue)."""
    md, mt, ms, mq = modelled
    xd, xt, xs, xq = measured
    return {"node": hash(label) % 1000, "label": label, "split": 1, "server_share": 0.5,
            "rate_bps": 1e6, "bytes_up": 10, "bytes_down": 10,
            "modelled_device_s": md, "modelled_transfer_s": mt, "modelled_server_s": ms,
            "modelled_queue_s": mq, "modelled_s": md + mt + ms + mq,
            "modelled_fifo_queue_s": fifo, "modelled_fifo_s": md + mt + ms + fifo,
            "measured_device_s": xd, "measured_transfer_s": xt, "measured_server_s": xs,
            "measured_queue_s": xq, "measured_dataplane_s": xd + xt + xs + xq,
            "measured_s": 30.0, "measured_server_pacing_s": 0.1, "measured_start_s": start}


def _row(round_, clients, delay_s, energy_j=2.0, train_s=40.0):
    return {"round": round_, "completed": len(clients), "sampled": len(clients),
            "clients": clients,
            "modelled_delay_s": delay_s, "modelled_energy_j": energy_j,
            "time_train_s": train_s, "time_calibrate_s": 5.0}


def test_errors_per_part_and_the_fifo_alternative():
    rows = [_row(1, [_client("a", (1, 1, 1, 1), (1, 1, 1, 0), fifo=0.0),
                     _client("b", (2, 2, 2, 2), (2, 2, 2, 1), fifo=1.0)], 1.0)]
    clients = testbed.client_rows("fp", rows)
    a, b = clients
    assert a["rel_error_dataplane"] == pytest.approx(4 / 3 - 1)
    assert a["rel_error_dataplane-fifo"] == pytest.approx(0.0)
    assert b["rel_error_server+queue"] == pytest.approx(4 / 3 - 1)
    assert b["rel_error_server+queue-fifo"] == pytest.approx(0.0)
    assert testbed.median_abs_error(clients, "device") == 0.0
    assert testbed.median_abs_error(clients, "dataplane") == pytest.approx(
        (1 / 3 + (8 / 7 - 1)) / 2)


def test_the_allocator_table_has_a_row_per_round_and_compares_with_edge_only_in_that_round():
    rows = {"fp": [_row(1, [_client("a", (1, 1, 1, 1), (9, 9, 9, 9))], 1.0),
                   _row(2, [_client("a", (1, 1, 1, 1), (1, 1, 1, 1))], 1.0)],
            "edge-only": [_row(1, [_client("a", (1, 1, 1, 1), (2, 2, 2, 2))], 2.0),
                          _row(2, [_client("a", (1, 1, 1, 1), (2, 2, 2, 2))], 2.0)]}
    rows["edge-only"][1]["sampled"] = 2  # one client dropped in that round
    rounds = [r for run, rs in rows.items() for r in testbed.round_rows(run, rs, 4, "1 2 3")]
    clients = [c for run, rs in rows.items() for c in testbed.client_rows(run, rs)]
    assert [r["measured_makespan_s"] for r in rounds] == [36, 4, 8, 8]
    assert [r["measured_span_s"] for r in rounds] == [36, 4, 8, 8]  # one client: its own
    assert rounds[0]["modelled_makespan_s"] == 4.0 and rounds[0]["modelled_energy_j"] == 8.0
    table = testbed.compare_table(rounds, clients, ["fp", "edge-only"])
    assert [(t["allocator"], t["round"], t["measured_makespan_s"]) for t in table] == [
        ("fp", 1, 36.0), ("fp", 2, 4.0), ("edge-only", 1, 8.0), ("edge-only", 2, 8.0)]
    text = testbed.markdown(table)
    assert "| fp | 1 | 1/1 | 36.0 | +350% | 36.0 |" in text
    assert "| fp | 2 | 1/1 | 4.0 | -50% | 4.0 |" in text
    assert "| edge-only | 2 | 1/2 | 8.0 | +0% |" in text


def test_the_span_runs_from_the_first_data_planes_start_to_the_last_ones_end():
    clients = [_client("a", (1, 1, 1, 1), (1, 1, 1, 1), start=10.0),  # 10 -> 14
               _client("b", (1, 1, 1, 1), (2, 2, 2, 2), start=3.0),  # 3 -> 11
               _client("c", (1, 1, 1, 1), (1, 1, 1, 1), start=None)]  # no stream: left out
    (row,) = testbed.round_rows("fp", [_row(1, clients, 1.0)], 4, "1 2 3")
    assert row["measured_makespan_s"] == 8 and row["measured_span_s"] == 14 - 3


def test_compare_runs_every_fixed_split_and_the_baselines():
    assert [name for name, _ in testbed.allocators(4)] == [
        "fp", "fp-makespan", "edge-only", "fixed-2", "fixed-3", "random"]


def test_a_clients_round_is_predicted_with_its_control_plane_of_the_round_before():
    rows = [_row(1, [_client("a", (1, 1, 1, 1), (1, 1, 1, 1))], 1.0),
            _row(2, [_client("a", (1, 1, 1, 1), (2, 2, 2, 2), fifo=1.0)], 1.0)]
    first, second = testbed.client_rows("fp", rows)
    assert first["modelled_round_s"] is None and first["rel_error_round"] is None
    assert first["control_plane_s"] == 30.0 - 4.0
    assert second["modelled_round_s"] == 26.0 + 4.0  # last round's control plane + FIFO plane
    assert second["rel_error_round"] == 0.0


def test_the_adapter_upload_is_its_own_part_and_moves_the_round_with_the_split():
    """Round 1 uploads for 2 s of modelled time and replies 3 s after its data plane (1 s
    beyond the upload); round 2, deeper, models a 6 s upload: its reply is predicted at 1 + 6 s
    and its round at the control plane beyond the old upload (30 - 4 - 2) + FIFO plane + 6 s."""
    first = {**_client("a", (1, 1, 1, 1), (1, 1, 1, 1)), "modelled_exchange_s": 2.0,
             "measured_reply_s": 3.0}
    second = {**_client("a", (1, 1, 1, 1), (1, 1, 1, 1), fifo=1.0), "modelled_exchange_s": 6.0,
              "measured_reply_s": 7.0, "measured_s": 30.0 + 4.0}
    one, two = testbed.client_rows("fp", [_row(1, [first], 1.0), _row(2, [second], 1.0)])
    assert one["modelled_reply_s"] is None and one["control_plane_s"] == 30.0 - 4.0
    assert two["modelled_reply_s"] == 1.0 + 6.0 and two["rel_error_reply"] == 0.0
    assert two["modelled_round_s"] == (30.0 - 4.0 - 2.0) + 4.0 + 6.0
    assert two["rel_error_round"] == 0.0


def test_tabulate_rewrites_a_finished_folders_tables_from_its_runs(tmp_path):
    import json

    rows = [_row(1, [_client("a", (1, 1, 1, 1), (2, 2, 2, 2))], 2.0)]
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "edge-only.jsonl").write_text("".join(json.dumps(r) + "\n"
                                                              for r in rows))
    (tmp_path / "rounds.csv").write_text("run,load_average\nedge-only,0.5 0.5 0.5\n")
    (tmp_path / "summary.json").write_text(json.dumps(
        {"runs": ["edge-only"], "local_steps": 4, "model": "tiny-llama", "devices": ["x"],
         "compare": []}))
    testbed.main(["--tabulate", str(tmp_path)])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["compare"][0]["measured_makespan_s"] == 8.0
    assert "| edge-only | 1 | 1/1 | 8.0 | +0% |" in (tmp_path / "compare.md").read_text()
