"""Choose the voice: StyleTTS2 when a checkpoint is configured (the paper's voice), else the
best offline voice installed (Piper en_US-joe-medium, then espeak-ng), saying so in words."""

from __future__ import annotations

import logging

from es4r.config import FALLBACK
from es4r.voice.base import TTSEngine

logger = logging.getLogger(__name__)

VOICE_KINDS = ("auto", "styletts2", "piper", "espeak")
NO_STYLE = "it cannot take a style vector: replies keep one timbre and the strategy changes only pace, loudness and prosody"


def _styletts2(path: str) -> TTSEngine:
    from es4r.voice.styletts2 import StyleTTS2Engine

    return StyleTTS2Engine.from_pretrained(path)


def _piper() -> TTSEngine:
    from es4r.voice.piper_engine import PiperEngine

    return PiperEngine.from_pretrained(status=FALLBACK)


def _espeak() -> TTSEngine:
    from es4r.voice.espeak_engine import EspeakEngine

    return EspeakEngine.from_system(status=FALLBACK)


def _offline(reason: str) -> TTSEngine:
    """Piper if its voice is installed, else espeak-ng; each choice is a logged fallback."""
    from es4r.voice.piper_engine import INSTALL_HINT, VOICE_NAME, piper_available

    if piper_available():
        logger.warning("%s; using the offline Piper voice %s instead (%s)", reason, VOICE_NAME, NO_STYLE)
        return _piper()
    logger.warning(
        "%s, and the Piper voice %s is not installed (%s); using the robotic espeak-ng voice instead (%s)",
        reason, VOICE_NAME, INSTALL_HINT, NO_STYLE,
    )
    return _espeak()


def load_voice(kind: str = "auto", styletts2_path: str | None = None) -> TTSEngine:
    """The voice the pipeline speaks with.

    kind: "styletts2" (needs `styletts2_path`: a local checkpoint folder or hub id), "piper",
    "espeak", or "auto": StyleTTS2 when a path is given (falling back, with a warning, if it
    fails to load), else Piper if installed, else espeak-ng. Offline voices report
    status FALLBACK and accepts_style False.
    """
    if kind not in VOICE_KINDS:
        raise ValueError(f"unknown voice kind {kind!r}; choose one of {', '.join(VOICE_KINDS)}")
    if kind == "styletts2":
        if styletts2_path is None:
            raise ValueError(
                "voice kind 'styletts2' needs a checkpoint: pass styletts2_path (a local folder or hub id), "
                "or choose voice 'auto' to use an offline voice"
            )
        return _styletts2(styletts2_path)
    if kind == "piper":
        return _piper()
    if kind == "espeak":
        return _espeak()
    if styletts2_path is None:
        return _offline("no StyleTTS2 checkpoint is configured")
    try:
        return _styletts2(styletts2_path)
    except (ImportError, OSError, ValueError, RuntimeError) as error:  # TTSError is a RuntimeError
        return _offline(f"the StyleTTS2 checkpoint {styletts2_path!r} could not be loaded ({error})")

