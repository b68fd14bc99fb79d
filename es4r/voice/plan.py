"""How a reply will be spoken, chosen before it is written: stage 3's choices (paper Sec. 3.3)
depend only on the user's turns so far — the strategy from their energy trend (Eq. 10) and
the inverse-energy fused style (Eq. 11-12) — so the reply can be spoken sentence by sentence
while the LLM writes it."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from es4r.config import StrategyConfig
from es4r.conversation import Turn
from es4r.voice.base import TTSEngine
from es4r.voice.strategy import StrategyDecision, select_strategy
from es4r.voice.style_fusion import fuse_styles, fusion_weights


@dataclass(frozen=True)
class VoicePlan:
    energies: list[float]
    decision: StrategyDecision
    fusion_weights: np.ndarray | None
    style: np.ndarray | None  # the fused style vector (voices that take one)
    notes: list[str]
    seconds: float  # time it took (the "strategy_fusion" stage)


def plan_voice(user_turns: list[Turn] | tuple[Turn, ...], config: StrategyConfig, voice: TTSEngine) -> VoicePlan:
    started, notes = time.perf_counter(), []
    energies = [float(t.energy) for t in user_turns]
    decision = select_strategy(energies, config)
    weights = fusion_weights(energies, config.fusion_eps) if config.empathetic_tts else None
    style = None
    if weights is not None and voice.accepts_style:
        style = fuse_styles([voice.extract_style(t.audio, t.sample_rate) for t in user_turns], weights)
    elif weights is not None:
        notes.append(f"the voice ({voice.name}) cannot take a style vector: fusion weights are computed "
                     "and shown, strategy pace/expressiveness are applied")
    return VoicePlan(energies, decision, weights, style, notes, time.perf_counter() - started)
