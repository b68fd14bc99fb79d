"""The one interface every voice implements: extract a style, speak a reply sentence by
sentence (`start` → `Utterance`), or all at once (`synthesize`, which is the same sentences
through the same utterance, so a reply spoken while it is written is the same file as one
spoken after). The pipeline only talks to this."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from es4r.config import StrategyParams
from es4r.voice.errors import TTSError  # noqa: F401 (its home for callers of base)
from es4r.voice.text_normalize import CLAUSE_MARKS


@dataclass(frozen=True)
class SynthesisResult:
    waveform: np.ndarray  # (samples,) float32 mono in [-1, 1]
    sample_rate: int
    engine: str  # e.g. "styletts2", "piper:en_US-joe-medium", "espeak-ng"
    used_style: bool  # False when the voice cannot take a style vector
    seed: int
    params: dict = field(default_factory=dict)  # the engine's own knob values actually used
    notes: tuple[str, ...] = ()  # degraded modes in words (retries, noise guard, fallbacks)

    @property
    def seconds(self) -> float:
        return len(self.waveform) / float(self.sample_rate)


class Utterance(Protocol):
    """One reply being spoken: `add` renders the next sentence and returns its audio (with the
    pause before it); `result` is every sentence so far as one file. Seeded state (noise
    generators, the previous sentence's style) carries from one sentence to the next."""

    sample_rate: int

    def add(self, sentence: str) -> np.ndarray:
        """Speak one sentence of `sentences(text)`; float32 mono at `sample_rate`."""

    def result(self) -> SynthesisResult:
        """The whole reply so far (TTSError if nothing was spoken)."""


def sentences(text: str) -> list[str]:
    """The units a reply is spoken in: its TTS-normalised sentences (short ones joined)."""
    from es4r.voice.text_normalize import speakable, split_sentences

    return split_sentences(speakable(text))


def heard_text(text: str, units_heard: int) -> str:
    """What was said of a reply whose first `units_heard` spoken units (`sentences`: the files
    the page plays, one by one) were heard: those units, as the voice said them; the reply
    itself when every unit was heard."""
    units = sentences(text)
    return text if units_heard >= len(units) else " ".join(units[: max(units_heard, 0)])


def speak_whole(engine: "TTSEngine", text: str, style: np.ndarray | None, params: StrategyParams,
                seed: int = 0) -> SynthesisResult:
    """`text` through one utterance, sentence by sentence: every engine's `synthesize`."""
    utterance = engine.start(style, params, seed)
    for sentence in sentences(text):
        utterance.add(sentence)
    return utterance.result()


class SpokenSentences:
    """What every `Utterance` keeps: its sentences' audio, with a pause before each but the
    first (half of it after a clause: a voice already pauses a little at its comma), and the
    notes its voice made along the way."""

    def __init__(self, notes: list[str] | None = None):
        self.pieces: list[np.ndarray] = []
        self.notes: list[str] = notes if notes is not None else []
        self._after_clause = False

    def append(self, sentence: str, audio: np.ndarray, pause_samples: int) -> np.ndarray:
        """Keep one unit's audio (the pause put before it) and return what was kept."""
        if self.pieces:
            pause = pause_samples // 2 if self._after_clause else pause_samples
            audio = np.concatenate([np.zeros(pause, np.float32), audio])
        self.pieces.append(np.asarray(audio, dtype=np.float32))
        self._after_clause = sentence.rstrip()[-1:] in CLAUSE_MARKS  # a first clause (split_sentences)
        return self.pieces[-1]

    def result(self, sample_rate: int, engine: str, used_style: bool, seed: int, params: dict) -> SynthesisResult:
        """The sentences as one file; TTSError when nothing was spoken."""
        if not self.pieces:
            raise TTSError("nothing was spoken; expected at least one sentence")
        return SynthesisResult(waveform=np.concatenate(self.pieces), sample_rate=sample_rate, engine=engine,
                               used_style=used_style, seed=seed, params=params, notes=tuple(dict.fromkeys(self.notes)))


@runtime_checkable
class TTSEngine(Protocol):
    name: str  # shown in the UI ("which voice spoke")
    status: str  # es4r.config.TRAINED | FALLBACK | RANDOM
    accepts_style: bool  # True if `style` changes the voice
    style_dim: int | None

    def extract_style(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray | None:
        """Style vector of a reference utterance, (style_dim,) float32; None if unsupported."""

    def synthesize(
        self, text: str, style: np.ndarray | None, params: StrategyParams, seed: int = 0
    ) -> SynthesisResult:
        """Speak `text` with the strategy's parameters; seeded, so re-rendering is identical."""

    def start(self, style: np.ndarray | None, params: StrategyParams, seed: int = 0) -> Utterance:
        """Begin a reply that is spoken sentence by sentence as its text arrives."""

    def prepare(self, seed: int) -> None:
        """A reply with `seed` comes next (a conversation's next turn): a voice whose `start`
        is costly gets it ready now, in the background, while nothing waits; others do nothing."""
