"""The user's own data from a local path: every file kind, the data formats, data.partition-by, and
the errors bad data gets (naming the file and the field)."""

from __future__ import annotations

import json
import re

import pytest

from edgesplit.data import FederatedText, corpus_of
from edgesplit.settings import DataSettings
from edgesplit.tokenizer import byte_level_tokenizer

ROWS = [{"instruction": f"Say {w}", "input": "" if i % 2 else f"to {u}", "output": w.upper(),
         "user": u} for i, (w, u) in enumerate([("a", "ann"), ("b", "bob"), ("c", "ann"),
                                                 ("d", "cid"), ("e", "bob"), ("f", "cid")])]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _write(path, text):
    path.write_text(text)
    return path


def _load(path, **settings):
    return corpus_of(DataSettings(corpus=str(path), **settings))


def _instruction_conversations():
    return tuple((("user", r["instruction"] + (f"\n\n{r['input']}" if r["input"] else "")),
                  ("assistant", r["output"])) for r in ROWS)


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv", "parquet", "save_to_disk"])
def test_every_file_kind_gives_the_same_instruction_records(tmp_path, kind):
    # Prepare
    from datasets import Dataset

    table = Dataset.from_list(ROWS)
    path = tmp_path / f"data.{kind}"
    {"jsonl": lambda: _jsonl(path, ROWS),
     "json": lambda: path.write_text(json.dumps(ROWS)),
     "csv": lambda: table.to_csv(str(path), index=False),
     "parquet": lambda: table.to_parquet(str(path)),
     "save_to_disk": lambda: table.save_to_disk(str(path))}[kind]()

    # Execute
    corpus = _load(path, data_format="instruction", partition_by="user")

    # Assert: a CSV's empty input cell (None) counts as no input
    assert corpus.conversations == _instruction_conversations()
    assert corpus.ids == tuple(r["user"] for r in ROWS)
    assert corpus.texts == ()


def test_a_folder_of_text_files_gives_paragraphs_grouped_by_file(tmp_path):
    # Prepare
    (tmp_path / "ann.txt").write_text("First paragraph.\nStill first.\n\nSecond one.\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "bob.txt").write_text("Bob speaks.\n")

    # Execute
    corpus = _load(tmp_path)

    # Assert
    assert corpus.texts == ("First paragraph.\nStill first.", "Second one.\n", "Bob speaks.\n")
    assert corpus.ids == ("ann.txt", "ann.txt", "sub/bob.txt")


def test_chat_messages_and_a_saved_dataset_dict(tmp_path):
    # Prepare
    from datasets import Dataset, DatasetDict

    chats = [{"messages": [{"role": "user", "content": "hi"},
                           {"role": "assistant", "content": "hello"}], "src": "x"}] * 3
    DatasetDict({"train": Dataset.from_list(chats), "test": Dataset.from_list(chats[:1])}
                ).save_to_disk(str(tmp_path / "saved"))

    # Execute
    corpus = _load(tmp_path / "saved", data_format="chat", partition_by="src")

    # Assert
    assert corpus.conversations == ((("user", "hi"), ("assistant", "hello")),) * 3
    assert corpus.ids == ("x",) * 3


@pytest.mark.parametrize("setup, settings, message", [
    (lambda d: d / "missing.jsonl", {}, "corpus '{d}/missing.jsonl': no such file or folder"),
    (lambda d: _jsonl(d / "x.jsonl", ROWS), {"data_format": "instruction",
                                              "output_field": "response"},
     "corpus file '{d}/x.jsonl' has no field 'response' (set by data.output-field)"),
    (lambda d: _jsonl(d / "x.jsonl", ROWS), {}, "has no field 'text' (set by data.text-field)"),
    (lambda d: _jsonl(d / "x.jsonl", ROWS), {"data_format": "instruction",
                                              "partition_by": "author"},
     "has no field 'author' (set by data.partition-by)"),
    (lambda d: _write(d / "x.jsonl", ""), {}, "corpus file '{d}/x.jsonl' is empty"),
    (lambda d: _write(d / "x.json", "[]"), {}, "corpus file '{d}/x.json' is unreadable as json"),
    (lambda d: _jsonl(d / "x.jsonl", [{**ROWS[0], "output": None}]),
     {"data_format": "instruction"},
     "corpus file '{d}/x.jsonl', record 0: field 'output' (set by data.output-field) is None"),
    (lambda d: _jsonl(d / "x.jsonl", [{**ROWS[0], "output": "  "}]),
     {"data_format": "instruction"},
     "record 0: field 'output' (set by data.output-field) is empty"),
    (lambda d: _jsonl(d / "x.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}]),
     {"data_format": "chat"}, "record 0: field 'messages' has no assistant message"),
    (lambda d: _jsonl(d / "x.jsonl", [{"messages": "hi"}]), {"data_format": "chat"},
     "must be a list of {{role, content}} messages"),
    (lambda d: _write(d / "x.tsv", "a\tb\n"), {}, "unknown kind"),
    (lambda d: _write(d / "a.txt", "x") and _jsonl(d / "b.jsonl", ROWS) and d, {},
     "mixes file kinds"),
    (lambda d: d, {}, "holds no .jsonl/.json/.csv/.parquet/.txt file"),
])
def test_bad_data_gets_an_error_naming_the_file_and_the_field(tmp_path, setup, settings,
                                                              message):
    # Prepare
    path = setup(tmp_path)

    # Execute / Assert
    with pytest.raises(ValueError, match=re.escape(message.format(d=tmp_path))):
        _load(path, **settings)


def test_a_client_without_records_stops_the_run_with_the_groups_named(tmp_path):
    # Prepare: ann and bob write ten records each, cid one; nothing held out
    rows = [{**ROWS[0], "user": u} for u in ["ann"] * 10 + ["bob"] * 10 + ["cid"]]
    path = _jsonl(tmp_path / "x.jsonl", rows)
    data = DataSettings(corpus=str(path), data_format="instruction", partition_by="user",
                        heldout_fraction=0.01)
    tokenizer = byte_level_tokenizer()
    groups = f"corpus '{path}' (groups by field 'user' (data.partition-by)): "

    # Execute / Assert: with two clients, cid joins someone, but nothing is held out
    with pytest.raises(ValueError, match=re.escape(groups + "the server's hold-out is empty")):
        FederatedText(data, tokenizer, 2).check()
    # with three, whoever gets cid has no record left for validation
    with pytest.raises(ValueError, match=re.escape(groups) + r"client \d of 3 gets no "
                       "validation records with partitioning 'natural'"):
        FederatedText(data, tokenizer, 3).check()
    with pytest.raises(ValueError, match=re.escape(groups + "4 clients but only 3 natural "
                                                   "groups")):
        FederatedText(data, tokenizer, 4).check()
    with pytest.raises(ValueError, match=re.escape(groups + "30 clients but only 21 records")):
        FederatedText(DataSettings(**{**vars(data), "partitioning": "iid"}), tokenizer,
                      30).check()
