"""Is there speech in a turn at all? Silero VAD (the `silero-vad` package ships its model, so
nothing downloads) finds the speech segments; a turn with less than
`AudioConfig.min_speech_seconds` of them — noise, mains hum, a tone, a square wave — is
refused before the recogniser can hallucinate words into it."""

from __future__ import annotations

import threading

import numpy as np
import torch

VAD_RATE = 16_000  # Silero's native rate and Whisper's; inputs arrive resampled to it
_MODEL = None
_LOCK = threading.Lock()  # the ONNX session keeps state per call: one turn at a time


def _silero():
    """The silero_vad module. Importing it runs `torch.set_num_threads(1)` (silero_vad/model.py,
    at import): every later torch op of the process — the LLM's decode included — would run on
    one thread, so torch's thread count is put back as it was."""
    threads = torch.get_num_threads()
    try:
        import silero_vad
    finally:
        torch.set_num_threads(threads)
    return silero_vad


def _model():
    global _MODEL
    if _MODEL is None:
        _MODEL = _silero().load_silero_vad(onnx=True)
    return _MODEL


def speech_seconds(samples: np.ndarray, sample_rate: int = VAD_RATE) -> float:
    """Seconds of detected speech in mono float samples at 16 kHz."""
    get_speech_timestamps = _silero().get_speech_timestamps

    if sample_rate != VAD_RATE:
        raise ValueError(f"the voice-activity check takes {VAD_RATE} Hz audio, got {sample_rate} Hz")
    with _LOCK:
        segments = get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)),
                                         _model(), sampling_rate=VAD_RATE)
    return sum(s["end"] - s["start"] for s in segments) / VAD_RATE
