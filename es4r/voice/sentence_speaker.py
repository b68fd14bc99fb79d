"""Speak a reply while the LLM is still writing it: each sentence is synthesised as soon as
it can no longer change, on a thread of its own, and handed on to be played. The first one
is rendered even sooner, as soon as it is complete (`likely_first_unit`), and played once it
is settled; in the rare case the next sentence joins it, that rendering is thrown away.

A sentence of the reply is spoken in the same units, through the same seeded `Utterance`, as
`TTSEngine.synthesize` would speak the finished text, so the file made this way is the file a
non-streamed turn makes (`finish` checks it and re-renders in the rare case it is not)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

import numpy as np

from es4r.reply_text import sentence_ends
from es4r.voice.base import SynthesisResult, TTSError, Utterance, sentences
from es4r.voice.text_normalize import MIN_SENTENCE_WORDS, normalize_for_tts, settled_first_clause

logger = logging.getLogger(__name__)

AudioFn = Callable[[int, np.ndarray], None]  # (sample rate, float32 samples of one sentence)
_DONE = object()


def _complete_sentence_ends(text: str) -> list[int]:
    """Sentence ends that more text follows."""
    return [i for i in sentence_ends(text) if i + 1 < len(text)]


def ready_sentences(reply_so_far: str) -> list[str]:
    """The speaking units of a reply that is still being written which no later text can
    change: the first sentence's first clause once it is settled (`settled_first_clause`),
    then units of its complete sentences (a sentence end followed by more text), except the
    last one while it could still be joined to the next sentence — `split_sentences` joins a
    sentence to its neighbour when either has fewer than MIN_SENTENCE_WORDS words, so the last
    unit waits until it and the sentence after it have that many."""
    ends = _complete_sentence_ends(reply_so_far)
    if not ends:  # the first sentence is still being written: its first clause may be settled
        clause = settled_first_clause(normalize_for_tts(reply_so_far))
        return [clause] if clause else []
    complete, tail = reply_so_far[: ends[-1] + 1], reply_so_far[ends[-1] + 1:]
    try:
        units = sentences(complete)
    except TTSError:  # nothing speakable yet
        return []
    if units and (len(units[-1].split()) < MIN_SENTENCE_WORDS
                  or len(normalize_for_tts(tail).split()) < MIN_SENTENCE_WORDS):
        units = units[:-1]
    return units


def likely_first_unit(reply_so_far: str) -> str | None:
    """The first speaking unit once its sentence is complete but before it is settled (the
    next sentence could still be short and join it): a whole first sentence of at least
    MIN_SENTENCE_WORDS words. It is rendered ahead and played once settled."""
    ends = _complete_sentence_ends(reply_so_far)
    if not ends:
        return None
    try:
        units = sentences(reply_so_far[: ends[0] + 1])
    except TTSError:
        return None
    return units[0] if len(units) == 1 and len(units[0].split()) >= MIN_SENTENCE_WORDS else None


class _Guess(str):
    """A unit to render ahead, not to play yet (`likely_first_unit`)."""


class SentenceSpeaker:
    """Feeds an utterance sentence by sentence from the growing reply (`offer`, called on the
    LLM's thread, returns at once), renders on its own thread, and passes each sentence's
    audio to `on_audio`. `finish` speaks what is left of the final text and returns the file."""

    def __init__(self, start: Callable[[], Utterance], on_audio: AudioFn):
        self._utterance: Utterance | None = None
        self._on_audio, self._start = on_audio, start
        self._queued: list[str] = []
        self._guess: str | None = None  # the first unit rendered ahead (likely_first_unit) ...
        self._guessed: np.ndarray | None = None  # ... and its audio, until it is played or thrown away
        self._todo: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self.render_seconds = 0.0  # synthesis time in all (the voice session's start included), overlapping the LLM's or not
        self.restarted = False
        # The utterance (a seeded voice session: Piper's is built ahead, after the reply before,
        # or ~0.1 s now) is started on the speaker's own thread, not on the way to the LLM.
        self._thread = threading.Thread(target=self._work, name="es4r-speaker", daemon=True)
        self._thread.start()

    def offer(self, reply_so_far: str) -> None:
        """The reply as written so far; its newly settled sentences are queued for speaking."""
        units = ready_sentences(reply_so_far)
        if not units and not self._queued and self._guess is None and (guess := likely_first_unit(reply_so_far)):
            self._guess = guess
            self._todo.put(_Guess(guess))
        self._queue(units)

    def offer_final(self, reply_text: str) -> None:
        """The final text, as soon as it is known: what is left of it (the last sentence, which
        `offer` holds back while more text could follow) is queued now, to be spoken while the
        caller finishes its own work; `finish` then only waits for it."""
        try:
            units = sentences(reply_text)
        except TTSError:  # nothing speakable: finish() says so
            return
        self._queue(units)

    def _queue(self, units: list[str]) -> None:
        """Queue for speaking the units past those already queued; nothing when `units` does not
        start with them (the text changed under a queued sentence: finish() sees the difference
        and re-renders)."""
        if units[: len(self._queued)] != self._queued:
            return
        for unit in units[len(self._queued):]:
            self._queued.append(unit)
            self._todo.put(unit)

    def finish(self, reply_text: str) -> SynthesisResult:
        """Speak the rest of `reply_text` (the final text) and return the whole reply as one
        file, identical to `synthesize(reply_text)` with the same voice, style and seed."""
        self._todo.put(_DONE)
        self._thread.join()
        if self._error is not None:
            raise self._error
        units = sentences(reply_text)
        if units[: len(self._queued)] != self._queued:
            logger.warning("spoken sentences %r are not the start of the final reply %r; rendering it again",
                           self._queued, units)
            self.restarted = True
            self._utterance, self._guess = self._start(), None
            for unit in units[: len(self._queued)]:
                self._render(unit, play=False)  # heard already, in its earlier wording
        for unit in units[len(self._queued):]:
            self._render(unit, play=True)
        return self._utterance.result()

    def _work(self) -> None:
        began = time.perf_counter()
        try:
            self._utterance = self._start()
        except BaseException as error:  # raised again by finish, on the caller's thread
            self._error = error
        self.render_seconds += time.perf_counter() - began
        while (unit := self._todo.get()) is not _DONE:
            if self._error is None:
                try:
                    if isinstance(unit, _Guess):
                        self._guessed = self._add(unit)
                    else:
                        self._render(unit, play=True)
                except BaseException as error:  # raised again by finish, on the caller's thread
                    self._error = error

    def _add(self, unit: str) -> np.ndarray:
        started = time.perf_counter()
        audio = self._utterance.add(unit)
        self.render_seconds += time.perf_counter() - started
        return audio

    def _render(self, unit: str, play: bool) -> None:
        audio = self._guessed_audio(unit)
        if audio is None:
            audio = self._add(unit)
        if play:
            self._on_audio(self._utterance.sample_rate, audio)

    def _guessed_audio(self, unit: str) -> np.ndarray | None:
        """The audio rendered ahead for the first unit when `unit` is that unit. A wrong guess
        advanced the voice's seeded state, so the voice starts afresh (nothing was played)."""
        if self._guess is None:
            return None
        guess, audio, self._guess, self._guessed = self._guess, self._guessed, None, None
        if guess == unit and audio is not None:
            return audio
        self._utterance = self._start()
        return None
