"""A live microphone stream, as a browser sends it, turned into whole spoken turns.

The browser streams chunks at its own rate (44.1 or 48 kHz), often as two channels. Each chunk
is brought to Whisper's 16 kHz mono the way a recorded file is (`es4r.audio.prepare_waveform`:
channels averaged, then soxr's high-quality resampler, which librosa uses too) — but with one
resampler kept across the stream, so the stream resampled chunk by chunk is sample for sample
the stream resampled at once. `TurnDetector` then finds where each turn starts and ends."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import numpy as np

from es4r.audio import _to_float
from es4r.config import TurnTakingConfig
from es4r.turn_detector import TurnDetector, TurnEvent
from es4r.vad import VAD_RATE

logger = logging.getLogger(__name__)

MAX_CHANNELS = 8  # a chunk's second axis up to this is its channels (Gradio streams (samples, channels))


class MicrophoneStream:
    """`feed(rate, samples)` per chunk as Gradio's streaming audio gives it ((n,) or (n,
    channels), int or float PCM); returns the turn events the chunk completes. `close()` when
    the stream stops. A change of rate or channels mid-stream restarts the resampler."""

    def __init__(self, config: TurnTakingConfig = TurnTakingConfig(), detector: TurnDetector | None = None):
        self.detector = detector or TurnDetector(config)
        self.announced: tuple[np.ndarray, str] | None = None  # the last pause's turn and its file (EarlyTranscripts)
        self._resampler = None
        self._rate = None

    def feed(self, sample_rate: int, samples: np.ndarray) -> list[TurnEvent]:
        audio = _to_float(np.asarray(samples))
        if audio.ndim == 2:
            audio = audio.mean(axis=1 if audio.shape[1] <= MAX_CHANNELS else 0)
        return self.detector.feed(self._resample(int(sample_rate), audio.reshape(-1)))

    def close(self) -> list[TurnEvent]:
        """The stream stopped: what the resampler still holds, then the open turn, if any."""
        events = self.detector.feed(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)) \
            if self._resampler is not None else []
        self._resampler, self._rate = None, None
        return events + self.detector.flush()

    def _resample(self, rate: int, audio: np.ndarray) -> np.ndarray:
        if rate <= 0:
            raise ValueError(f"invalid sample rate {rate}")
        if rate == VAD_RATE:
            return audio
        if rate != self._rate:
            import soxr  # librosa's resampler (res_type "soxr_hq")

            self._resampler, self._rate = soxr.ResampleStream(rate, VAD_RATE, 1, dtype="float32", quality="HQ"), rate
        return self._resampler.resample_chunk(audio.astype(np.float32), last=False)


class EarlyTranscripts:
    """Transcripts begun in a turn's pause, by the turn's file. The detector announces the turn
    `early_work_s` into a pause (SpeechPaused) with the samples it will have if the pause ends
    it; the file is written then and `begin` transcribes it in one worker thread while the pause
    runs on. When the turn ends with those samples, the same file is answered and `take` gives its
    transcript (waiting for the rest, if any) — the transcript the turn would get without it, made
    earlier. A pause the person speaks through leaves an unused entry; the oldest are forgotten."""

    def __init__(self, transcribe: Callable[[str], str], keep: int = 8):
        self._transcribe = transcribe
        self._keep = keep
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="es4r-early-asr")
        self._begun: OrderedDict[str, Future] = OrderedDict()
        self._lock = threading.Lock()

    def begin(self, path: str) -> None:
        with self._lock:
            for stale in list(self._begun.values()):
                stale.cancel()  # an earlier pause not yet started is void: the person spoke on
            self._begun[path] = self._worker.submit(self._transcribe, path)
            while len(self._begun) > self._keep:
                self._begun.popitem(last=False)

    def take(self, path: str) -> str | None:
        """The transcript begun for `path`, once; None when none was begun, it was cancelled,
        or it failed (the turn is then transcribed as a sent one is, and reports its own error)."""
        with self._lock:
            future = self._begun.pop(path, None)
        if future is None or future.cancelled():
            return None
        try:
            return future.result()
        except Exception:
            logger.warning("the early transcript of %s failed; transcribing the turn again", path, exc_info=True)
            return None

    def settle(self) -> None:
        """Cancel the transcripts not yet started, wait for the one running, forget them all: nothing
        runs in the worker after this (a pipeline swapped out — a test's — is not called afterwards)."""
        with self._lock:
            begun, self._begun = list(self._begun.values()), OrderedDict()
        running = [future for future in begun if not future.cancel()]  # all cancelled before any wait
        for future in running:
            future.exception()  # waits; a failure was the turn's to report, and it is gone
