"""The user's own dataset from a local path, read offline with Hugging Face `datasets`.

`corpus` may name a folder written by `datasets.save_to_disk` (a `DatasetDict` gives its "train"
split), a .jsonl/.json/.csv/.parquet/.txt file, or a folder of such files of one kind (read
recursively, in name order; a .txt file gives one record per paragraph, in column "text"). Each
file is read on its own so that every record knows its file: without `data.partition-by`, a record's
natural group is its file (one file per user works with no configuration).

Bad data stops here, before any training, with an error naming the file and the field: a missing
file or column, an empty file, a record without a value.

`datasets` is imported on first use only: it costs seconds, and a device training on a built-in
corpus never needs it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgesplit.corpus import BUILTIN_CORPORA, Conversation, Corpus
from edgesplit.settings import DataSettings

# File suffix -> the `datasets` builder that reads it, and its options.
BUILDERS: dict[str, tuple[str, dict[str, str]]] = {
    ".jsonl": ("json", {}), ".json": ("json", {}), ".csv": ("csv", {}),
    ".parquet": ("parquet", {}), ".txt": ("text", {"sample_by": "paragraph"}),
}


@contextmanager
def _quiet_datasets() -> Iterator[Any]:
    """`datasets`, with its progress bars off for the duration."""
    import datasets

    was_off = datasets.utils.logging.is_progress_bar_enabled() is False
    datasets.disable_progress_bars()
    try:
        yield datasets
    finally:
        if not was_off:
            datasets.enable_progress_bars()


def _tables(path: Path) -> list[tuple[str, Any]]:
    """(name for errors and the natural id, `datasets.Dataset`) per file of the corpus."""
    if not path.exists():
        raise ValueError(f"corpus {str(path)!r}: no such file or folder (built-in corpora: "
                         f"{', '.join(BUILTIN_CORPORA)})")
    with _quiet_datasets() as datasets:
        if path.is_dir() and ((path / "state.json").is_file()
                              or (path / "dataset_dict.json").is_file()):
            return [(str(path), _saved_split(datasets.load_from_disk(str(path)), path))]
        files = ([path] if path.is_file() else
                 sorted(f for f in path.rglob("*") if f.is_file() and f.suffix in BUILDERS))
        if not files:
            raise ValueError(f"corpus folder {str(path)!r} holds no {'/'.join(BUILDERS)} file "
                             "and was not written by datasets.save_to_disk")
        kinds = {BUILDERS.get(f.suffix, (None,))[0] for f in files}
        if None in kinds:
            raise ValueError(f"corpus file {str(path)!r}: unknown kind; give a "
                             f"{'/'.join(BUILDERS)} file or a datasets.save_to_disk folder")
        if len(kinds) > 1:
            raise ValueError(f"corpus folder {str(path)!r} mixes file kinds ({sorted(kinds)}); "
                             "keep one kind per folder")
        tables = []
        for file in files:
            name = str(file if file == path else file.relative_to(path))
            if file.stat().st_size == 0:
                raise ValueError(f"corpus file {str(file)!r} is empty")
            builder, options = BUILDERS[file.suffix]
            try:
                table = datasets.load_dataset(builder, data_files=str(file), split="train",
                                              **options)
            except Exception as exc:  # datasets raises many types for unreadable files
                raise ValueError(f"corpus file {str(file)!r} is unreadable as {builder}: "
                                 f"{type(exc).__name__}: {exc}") from exc
            tables.append((name, table))
        return tables


def _saved_split(loaded: Any, path: Path) -> Any:
    """A saved `Dataset` as is; a saved `DatasetDict`'s "train" split (or its only one)."""
    if not hasattr(loaded, "keys"):
        return loaded
    splits = list(loaded.keys())
    if "train" in splits or len(splits) == 1:
        return loaded["train" if "train" in splits else splits[0]]
    raise ValueError(f"corpus {str(path)!r} holds the splits {splits} and none is 'train'")


def _column(name: str, table: Any, field: str, key: str) -> list[Any]:
    if field not in table.column_names:
        raise ValueError(f"corpus file {name!r} has no field {field!r} (set by {key}); its "
                         f"fields: {', '.join(table.column_names)}")
    return table[field][:]  # [:] reads the column in one piece


def _text(name: str, row: int, value: Any, field: str, key: str, optional: bool = False,
          blank_ok: bool = False) -> str:
    """A record's text field; None only where ``optional`` (as ""), blank only where
    ``optional`` or ``blank_ok``."""
    if value is None and optional:
        return ""
    if not isinstance(value, str) or not (optional or blank_ok or value.strip()):
        raise ValueError(f"corpus file {name!r}, record {row}: field {field!r} (set by {key}) "
                         f"is {'empty' if isinstance(value, str) else repr(value)}, not text")
    return value


def _messages(name: str, row: int, value: Any, field: str) -> Conversation:
    turns = []
    for turn in value if isinstance(value, list) else [None]:
        if not (isinstance(turn, Mapping) and isinstance(turn.get("role"), str)
                and isinstance(turn.get("content"), str)):
            raise ValueError(f"corpus file {name!r}, record {row}: field {field!r} (set by "
                             "data.messages-field) must be a list of {role, content} messages")
        turns.append((turn["role"], turn["content"]))
    if not any(role == "assistant" for role, _ in turns):
        raise ValueError(f"corpus file {name!r}, record {row}: field {field!r} has no "
                         "assistant message (the only tokens with a loss)")
    return tuple(turns)


def _records(name: str, table: Any, data: DataSettings) -> list[str | Conversation]:
    """The records of one file in the run's data format."""
    n = len(table)
    if data.data_format == "text":
        column = _column(name, table, data.text_field, "data.text-field")
        # Blank texts stay: they only add an end-of-text token, and dropping them would shift
        # the rows against their data.partition-by values.
        return [_text(name, i, v, data.text_field, "data.text-field", blank_ok=True)
                for i, v in enumerate(column)]
    if data.data_format == "chat":
        column = _column(name, table, data.messages_field, "data.messages-field")
        return [_messages(name, i, v, data.messages_field) for i, v in enumerate(column)]
    instructions = _column(name, table, data.instruction_field, "data.instruction-field")
    outputs = _column(name, table, data.output_field, "data.output-field")
    inputs = (_column(name, table, data.input_field, "data.input-field") if data.input_field
              else [None] * n)
    records: list[str | Conversation] = []
    for i in range(n):
        prompt = _text(name, i, instructions[i], data.instruction_field, "data.instruction-field")
        extra = _text(name, i, inputs[i], data.input_field, "data.input-field", optional=True)
        response = _text(name, i, outputs[i], data.output_field, "data.output-field")
        user = f"{prompt}\n\n{extra}" if extra.strip() else prompt
        records.append((("user", user), ("assistant", response)))
    return records


@lru_cache(maxsize=2)
def load_local(data: DataSettings) -> Corpus:
    """Read the local dataset ``data.corpus`` in the run's data format (cached per process).

    Parameters
    ----------
    data : DataSettings
        Its ``corpus`` (the path), ``data_format``, the field names and ``partition_by``.

    Returns
    -------
    Corpus
        Texts (``data_format = "text"``) or conversations (``"instruction"``: a user turn of
        the instruction and its input, an assistant turn of the output; ``"chat"``: the
        messages), with the ``partition_by`` value (as text) or the file as natural id.

    Raises
    ------
    ValueError
        Naming the file and the field, for a missing path, file or column, an unreadable or
        empty file, or a record without a value.
    """
    ids: list[str] = []
    records: list[str | Conversation] = []
    for name, table in _tables(Path(data.corpus).expanduser()):
        if len(table) == 0:
            raise ValueError(f"corpus file {name!r} has no records")
        records += _records(name, table, data)
        if data.partition_by:
            groups = _column(name, table, data.partition_by, "data.partition-by")
            if any(g is None for g in groups):
                row = next(i for i, g in enumerate(groups) if g is None)
                raise ValueError(f"corpus file {name!r}, record {row}: no value in field "
                                 f"{data.partition_by!r} (set by data.partition-by)")
            ids += [str(g) for g in groups]
        else:
            ids += [name] * len(table)
    if data.data_format == "text":
        return Corpus(data.corpus, tuple(ids), texts=tuple(records))
    return Corpus(data.corpus, tuple(ids), conversations=tuple(records))
