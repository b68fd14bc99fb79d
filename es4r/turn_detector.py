"""Where a spoken turn starts and ends in a live microphone stream (hands-free turns).

Silero VAD (the `silero-vad` package, its ONNX model shipped with it) gives every 32 ms window
of 16 kHz audio a speech probability. `TurnDetector` turns those into turns: speech starts a
candidate; once it holds `min_speech_s` of speech the person has started a turn (`SpeechStarted`:
a reply still playing can stop — barge-in); `end_pause_s` of non-speech after it ends the turn
(`TurnEnded`, with its audio). A pause shorter than that, such as a breath inside a sentence,
continues the turn; a burst with less speech than `min_speech_s` (a click, a cough, a door) is
dropped without a word. Settings: `TurnTakingConfig` (es4r/config.py).

Once a started turn has been quiet for `early_work_s` (at least its padding), `SpeechPaused`
carries the audio the turn would have if it ended now — sample for sample what `TurnEnded` will
carry unless the person speaks again — so the work on the turn (its transcript, its log-mel) can
start during the rest of the pause instead of after it."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from es4r.config import TurnTakingConfig
from es4r.vad import VAD_RATE, _silero

WINDOW = 512  # samples per Silero step at 16 kHz (32 ms)
WINDOW_S = WINDOW / VAD_RATE


@dataclass(frozen=True)
class SpeechStarted:
    """The person has spoken `min_speech_s`: a turn has begun. `at`: seconds into the stream
    where its speech began."""

    at: float


@dataclass(frozen=True)
class TurnEnded:
    """A whole turn: its 16 kHz samples (from `pad_s` before the first speech to `pad_s` after
    the last), where its speech began and ended in the stream, and when the end was decided
    (`end + end_pause_s`, to the window; `ended_at - end` is what the pause rule costs)."""

    samples: np.ndarray
    start: float
    end: float
    ended_at: float


@dataclass(frozen=True)
class SpeechPaused:
    """The open turn has been quiet for `early_work_s`: `samples` is the whole turn if it ends
    in this pause (`TurnEnded.samples` then equals it); more speech makes it void."""

    samples: np.ndarray
    start: float
    end: float
    at: float  # when the pause was announced (`end + early_work_s`, to the window)


TurnEvent = SpeechStarted | SpeechPaused | TurnEnded


class TurnDetector:
    """Feed it mono float32 samples at 16 kHz in chunks of any size (`feed`); it returns the
    turn events each chunk completes. One detector per stream: Silero keeps state between
    windows. `flush` ends a turn still open when the stream stops."""

    def __init__(self, config: TurnTakingConfig = TurnTakingConfig(), model=None):
        self.config = config
        self.model = model if model is not None else _silero().load_silero_vad(onnx=True)
        self.pad_windows = max(1, round(config.pad_s / WINDOW_S))
        self.early_windows = max(self.pad_windows, round(config.early_work_s / WINDOW_S))
        self.reset()

    def reset(self) -> None:
        """Forget the stream: a new one starts at 0 s."""
        self.model.reset_states()
        self._pending = np.zeros(0, np.float32)
        self._windows = 0  # windows read since the stream began
        self._before: deque[np.ndarray] = deque(maxlen=self.pad_windows)  # the audio before a turn
        self._turn: list[np.ndarray] = []  # the open turn's windows, from its padding on
        self._first = 0  # window index of its first speech window
        self._last = 0  # ... and of its last
        self._speech = 0  # its speech windows
        self._quiet = 0  # non-speech windows since its last speech window
        self._started = False

    @property
    def in_turn(self) -> bool:
        """Whether a turn has started and not yet ended."""
        return self._started

    def feed(self, samples: np.ndarray) -> list[TurnEvent]:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(samples)):
            samples = np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)
        self._pending = np.concatenate([self._pending, samples])
        events: list[TurnEvent] = []
        while len(self._pending) >= WINDOW:
            window, self._pending = self._pending[:WINDOW], self._pending[WINDOW:]
            with torch.no_grad():
                probability = float(self.model(torch.from_numpy(window.copy()), VAD_RATE))
            events.extend(self._step(window, probability))
        return events

    def flush(self) -> list[TurnEvent]:
        """The stream stopped: end the open turn, if one has started."""
        events = [self._end()] if self._started else []
        self._drop()
        return events

    # ------------------------------------------------------------------ the rules
    def _step(self, window: np.ndarray, probability: float) -> list[TurnEvent]:
        index, self._windows = self._windows, self._windows + 1
        config = self.config
        speech = probability >= config.threshold
        silence = probability < config.threshold - config.hysteresis
        if not self._turn:  # waiting for speech
            if not speech:
                self._before.append(window)
                return []
            self._turn, self._first = [*self._before, window], index
            self._before.clear()
            self._last, self._speech, self._quiet = index, 1, 0
            return self._maybe_started()
        self._turn.append(window)
        if speech or (not silence and self._quiet == 0):  # between the two thresholds: as it was
            self._last, self._speech, self._quiet = index, self._speech + 1, 0
            events = self._maybe_started()
        else:
            self._quiet += 1
            events = [SpeechPaused(*self._whole())] if self._started and self._quiet == self.early_windows else []
        if self._quiet * WINDOW_S >= config.end_pause_s:
            if self._started:
                events.append(self._end())
            self._drop()
        elif len(self._turn) * WINDOW_S >= config.max_turn_s and self._started:
            events.append(self._end())
            self._drop()
        return events

    def _maybe_started(self) -> list[TurnEvent]:
        if self._started or self._speech * WINDOW_S < self.config.min_speech_s:
            return []
        self._started = True
        return [SpeechStarted(self._first * WINDOW_S)]

    def _end(self) -> TurnEnded:
        return TurnEnded(*self._whole())

    def _whole(self) -> tuple[np.ndarray, float, float, float]:
        """The open turn as it would end now: its samples, speech start and end, and now."""
        kept = len(self._turn) - self._quiet + min(self._quiet, self.pad_windows)  # speech, then its padding
        return (np.concatenate(self._turn[:kept]), self._first * WINDOW_S, (self._last + 1) * WINDOW_S,
                self._windows * WINDOW_S)

    def _drop(self) -> None:
        """Close the open turn (ended or dropped); its last quiet windows are the next one's before."""
        for window in self._turn[len(self._turn) - min(self._quiet, self.pad_windows):] if self._quiet else []:
            self._before.append(window)
        self._turn, self._speech, self._quiet, self._started = [], 0, 0, False
