"""The source of the spoken corpus: real human chit-chat (PyPI `chitchat-dataset`, MIT), read
from its JSON, cleaned into speakable turns, split by hashed conversation id and cut into
S L S L S + R windows (the candidates es4r.data.corpus renders)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SOURCE_PACKAGE = "chitchat_dataset"  # PyPI chitchat-dataset; its JSON is read, never imported
SOURCE_FILE = "dataset.json"
SOURCE_NAME = "chitchat-dataset 0.9.0 (BYU PCC lab Chit-Chat Challenge)"
SOURCE_LICENCE = "MIT"
SOURCE_URL = "https://github.com/BYU-PCCL/chitchat-dataset"
INSTALL_HINT = "pip install chitchat-dataset==0.9.0"
SPEAKER_TURNS = 3  # speaker turns per sample: three are needed to see a sustained fall
WINDOW_TURNS = 2 * SPEAKER_TURNS  # S L S L S + the listener response
MIN_WORDS = 2  # shorter turns ("ok", "lol") say nothing to learn from
MAX_TURN_CHARS = 150  # about 10 s of speech; keeps three turns inside the audio budget
MAX_SPEAKER_CHARS = 330  # all speaker turns of a sample, about 25 s at ~13 chars/s
MAX_NON_ASCII_FRACTION = 0.05  # more than this (emoji, other scripts) drops the turn
MAX_SEED = 2**30  # per-sample seeds stay well inside onnxruntime's int range
HELDOUT_FRACTION = 0.1  # share of conversations reserved for held-out, by hashed id
_PUNCTUATION_END = tuple(".!?,;:")
_TYPOGRAPHY = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                             "\u2013": "-", "\u2014": "-", "\u2026": "..."})
_UNSPEAKABLE = re.compile(r"https?://|www\.|\S@\S|<[^>]*>")


class CorpusError(RuntimeError):
    """The corpus cannot be built as asked; the message says what to change."""


@dataclass(frozen=True)
class Conversation:
    conversation_id: str
    messages: tuple[tuple[str, ...], ...]  # raw chat lines of each message, in order

    def turns(self) -> tuple[str | None, ...]:
        """Cleaned text per message; None where it failed the filter (see clean_utterance)."""
        return tuple(clean_utterance(list(lines)) for lines in self.messages)


@dataclass(frozen=True)
class Candidate:
    """One conversation picked for a split, with its window (everything but audio); it
    becomes one row per plan."""

    split: str
    conversation_id: str
    turns: tuple[str | None, ...]  # cleaned, as Conversation.turns()
    start: int  # index of the first speaker message
    seed: int

    def speaker_indices(self) -> list[int]:
        return list(range(self.start, self.start + WINDOW_TURNS - 1, 2))

    def listener_indices(self) -> list[int]:
        return list(range(self.start + 1, self.start + WINDOW_TURNS - 1, 2))


def find_source() -> Path:
    """The JSON file of the installed chitchat-dataset package, found without importing it."""
    spec = importlib.util.find_spec(SOURCE_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / SOURCE_FILE
        if path.is_file():
            return path
    raise CorpusError(f"expected the {SOURCE_PACKAGE} package with {SOURCE_FILE}; not installed: {INSTALL_HINT}")


def clean_utterance(pieces: list[str]) -> str | None:
    """One message (one or more chat lines) -> one speakable ASCII turn, or None if it is
    empty, too short or long, mostly non-ASCII, or holds links / addresses / markup."""
    sentences = []
    for piece in pieces:
        piece = " ".join(piece.translate(_TYPOGRAPHY).split())
        if piece:
            sentences.append(piece if piece.endswith(_PUNCTUATION_END) else piece + ".")
    text = " ".join(sentences)
    if not text or _UNSPEAKABLE.search(text):
        return None
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    if len(text) - len(ascii_text) > MAX_NON_ASCII_FRACTION * len(text):
        return None
    ascii_text = " ".join(ascii_text.split())
    words = [w for w in ascii_text.split() if any(c.isalpha() for c in w)]
    if len(words) < MIN_WORDS or len(ascii_text) > MAX_TURN_CHARS:
        return None
    return ascii_text


def load_conversations(path: Path | None = None) -> list[Conversation]:
    """Conversations of the source long enough for one window, ordered by id. Text is
    cleaned later, only for the conversations a build looks at."""
    path = path or find_source()
    with open(path, encoding="utf-8") as handle:
        raw = json.load(handle)
    conversations = []
    for conversation_id in sorted(raw):
        messages = raw[conversation_id].get("messages", [])
        if len(messages) >= WINDOW_TURNS:
            lines = tuple(tuple(line.get("text", "") for line in message) for message in messages)
            conversations.append(Conversation(conversation_id, lines))
    return conversations


def _hash_fraction(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()
    return int(digest[:12], 16) / float(16**12)


def split_order(conversations: list[Conversation], seed: int) -> dict[str, list[Conversation]]:
    """Conversations of each split in seeded order. A conversation's split depends only on
    (seed, id), so asking for more samples never moves one across the split."""
    order = sorted(conversations, key=lambda c: _hash_fraction(seed, "order:" + c.conversation_id))
    heldout = [c for c in order if _hash_fraction(seed, "split:" + c.conversation_id) < HELDOUT_FRACTION]
    train = [c for c in order if _hash_fraction(seed, "split:" + c.conversation_id) >= HELDOUT_FRACTION]
    return {"train": train, "heldout": heldout}


def window_starts(turns: tuple[str | None, ...]) -> list[int]:
    """Starts of S L S L S R windows whose cleaned turns all passed the filter and whose
    speaker text fits the audio budget."""
    starts = []
    for start in range(len(turns) - WINDOW_TURNS + 1):
        window = turns[start:start + WINDOW_TURNS]
        if any(t is None for t in window):
            continue
        if sum(len(window[i]) for i in range(0, WINDOW_TURNS - 1, 2)) <= MAX_SPEAKER_CHARS:
            starts.append(start)
    return starts


def candidates(conversations: list[Conversation], split: str, seed: int) -> Iterator[Candidate]:
    """Candidates of one split in seeded order (each is rendered in every plan)."""
    for conversation in conversations:
        turns = conversation.turns()
        starts = window_starts(turns)
        if not starts:
            continue
        rng = _rng(seed, conversation.conversation_id)
        yield Candidate(split, conversation.conversation_id, turns, int(starts[rng.integers(len(starts))]),
                        int(rng.integers(MAX_SEED)))


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)])
