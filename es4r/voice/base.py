"""The one interface every voice implements: extract a style, synthesise with strategy
parameters. The pipeline only talks to this."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from es4r.config import StrategyParams


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


class TTSError(RuntimeError):
    """Synthesis failed in a way the caller should report to the user."""


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
