"""What `ES4RPipeline.turn_events` reports as one turn happens: one small frozen type per
kind, for a page (app.py) to draw with `match`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from es4r.conversation import Conversation, TurnResult


@dataclass(frozen=True)
class Progress:
    """A stage began."""

    fraction: float  # 0..1 of the turn
    message: str  # e.g. "transcribing"


@dataclass(frozen=True)
class Heard:
    """The user's turn was transcribed."""

    conversation: Conversation  # the given conversation with the new user turn


@dataclass(frozen=True)
class Writing:
    """The reply so far, as the LLM writes it."""

    text: str


@dataclass(frozen=True)
class Written:
    """The final reply text, before the rest of it is spoken."""

    text: str


@dataclass(frozen=True)
class Spoken:
    """One sentence of the reply, spoken as soon as it is settled (the first while the LLM
    still writes the next)."""

    sample_rate: int
    samples: np.ndarray  # (samples,) float32


@dataclass(frozen=True)
class Answered:
    """The whole turn: its audio is every `Spoken` piece joined."""

    conversation: Conversation  # with the user turn and the reply
    result: TurnResult


TurnEvent = Progress | Heard | Writing | Written | Spoken | Answered
