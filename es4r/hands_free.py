"""A live microphone stream, as a browser sends it, turned into whole spoken turns.

The browser streams chunks at its own rate (44.1 or 48 kHz), often as two channels. Each chunk
is brought to Whisper's 16 kHz mono the way a recorded file is (`es4r.audio.prepare_waveform`:
channels averaged, then soxr's high-quality resampler, which librosa uses too) — but with one
resampler kept across the stream, so the stream resampled chunk by chunk is sample for sample
the stream resampled at once. `TurnDetector` then finds where each turn starts and ends."""

from __future__ import annotations

import numpy as np

from es4r.audio import _to_float
from es4r.config import TurnTakingConfig
from es4r.turn_detector import TurnDetector, TurnEvent
from es4r.vad import VAD_RATE

MAX_CHANNELS = 8  # a chunk's second axis up to this is its channels (Gradio streams (samples, channels))


class MicrophoneStream:
    """`feed(rate, samples)` per chunk as Gradio's streaming audio gives it ((n,) or (n,
    channels), int or float PCM); returns the turn events the chunk completes. `close()` when
    the stream stops. A change of rate or channels mid-stream restarts the resampler."""

    def __init__(self, config: TurnTakingConfig = TurnTakingConfig(), detector: TurnDetector | None = None):
        self.detector = detector or TurnDetector(config)
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
