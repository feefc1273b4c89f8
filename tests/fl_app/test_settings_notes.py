"""What a run says about its settings at start: a warning for each changed key it does not read
(naming the setting that leaves it unread), and a summary of the effective settings. The summary
names keys within their section (`local-steps`): rename-keys: keep."""

import logging
import re

import torch

from edgesplit.settings import START_HERE, Settings, key_of
from fl_app.run_config import RULES, deciders, ignored, read, summary
from fl_app.server_app import read_settings
from harness.configs import tiny_run_config
from harness.inprocess import run_in_process

# Under harness.configs.TINY (synthetic corpus, heterogeneous-fixed, makespan model, no
# calibration, no evaluation, no faults, no channel) none of these is read.
UNREAD_UNDER_TINY = {
    "text_field": "body", "instruction_field": "q", "input_field": "", "output_field": "a",
    "messages_field": "conversation", "dirichlet_alpha": 3.0, "trim_fraction": 0.3,
    "rl_policy": "nowhere/policy", "server_bandwidth_hz": 5e6, "calibration_steps": 7,
    "privacy_report": "nowhere.csv", "channel_snr_db": 3.0, "channel_bits": 4, "nakagami_m": 2.0,
    "eval_batches": 5, "eval_overlap": True, "sample_prompts": "Hi", "sample_tokens": 3,
    "fault_kinds": "raise"}


def test_keys_the_run_does_not_read_change_nothing_and_each_gets_a_warning(tmp_path):
    """The rules' claim checked against training itself: changing every key they call unread,
    all at once, leaves the trained adapter bit for bit the same."""
    base = tiny_run_config(output_dir=str(tmp_path), run_name="base")
    changed = {**base, "run.name": "changed",
               **{key_of(a): v for a, v in UNREAD_UNDER_TINY.items()}}
    settings, warnings = read(changed)
    assert sorted(re.match(r"config (\S+) = ", w).group(1) for w in warnings) == sorted(
        key_of(a) for a in UNREAD_UNDER_TINY)
    _, final, rows = run_in_process(base, 2)
    _, final_changed, rows_changed = run_in_process(changed, 2)
    assert all(torch.equal(final[k], final_changed[k]) for k in final)
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in rows_changed]


def test_the_warning_names_the_setting_that_leaves_the_key_unread():
    assert ignored(Settings(server_bandwidth_hz=5e6)) == [
        "config allocation.server-bandwidth-hz = 5000000.0 has no effect: it is read only when "
        "allocation.cost-model = \"paper\" (this run: allocation.cost-model = 'makespan')"]
    assert ignored(Settings(server_bandwidth_hz=5e6, cost_model="paper")) == []
    assert ignored(Settings(text_field="body", corpus="data.jsonl")) == []
    [message] = ignored(Settings(text_field="body", corpus="data.jsonl", data_format="chat"))
    assert "read only when data.format = \"text\"" in message
    assert ignored(Settings()) == []  # keys at their defaults are never warned about


def test_every_rule_names_real_settings():
    names = set(vars(Settings()))
    for attribute, is_read, when in RULES:
        assert attribute in names and set(deciders(when)) <= names and deciders(when)
        assert isinstance(is_read(Settings()), bool)


def test_the_summary_shows_what_matters_and_marks_what_changed():
    lines = summary(Settings(num_server_rounds=5, corpus="mine.jsonl", text_field="body",
                             partition_by="user"))
    text = "\n".join(lines)
    assert re.search(r"^train\s+rounds=5\* local-steps=4 ", text, re.M)
    assert "corpus='mine.jsonl'* format='text' text-field='body'* partition-by='user'*" in text
    default = "\n".join(summary(Settings()))
    assert "text-field" not in default and "partition-by" not in default  # unread: shakespeare
    shown = {f"{section}.{item.split('=')[0]}" for line in summary(Settings())
             for section, *items in [line.split()] for item in items}
    assert shown >= set(START_HERE) - {"data.text-field", "data.partition-by"}
    assert len(summary(Settings())) <= 12  # a short summary: one line per section


def test_a_run_logs_its_warnings_then_its_settings(caplog):
    config = tiny_run_config(keys={"allocation.server-bandwidth-hz": 5e6})
    with caplog.at_level(logging.INFO):
        settings = read_settings(config)
    assert settings.server_bandwidth_hz == 5e6
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == ignored(settings)
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert info[-1].startswith("effective settings")
    assert re.search(r"\n  model +name='tiny-llama'\* base-dtype='float32'\n", info[-1])

