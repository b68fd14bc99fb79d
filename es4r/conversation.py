"""The conversation a pipeline answers, and the typed result of one turn.

A Conversation is immutable: adding a turn returns a new one, so a failed turn can never
leave a half-updated history behind."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np

from es4r.config import Strategy

USER, ASSISTANT = "user", "assistant"
REPLY_CUT_NOTE = "cut off here: you spoke over it"
WALL = "wall"  # TurnResult.timings key: the turn's measured seconds, stages and the work between them
# The top-level stages of one turn, in the order the pipeline runs them (the latency table's
# column order): their seconds plus the time between them add up to WALL.
STAGE_ORDER = ("asr", "features", "es4r_encoder", "valence", "llm", "strategy_fusion", "tts")
ENCODER_PARTS = ("dual_attention", "whisper_encoder", "adapter")  # inside es4r_encoder, shown apart
RATES = ("llm_tokens_per_s", "tts_rtf")  # not seconds of the turn
# Moments, in seconds from the start of the turn (ES4RPipeline.turn_events): the first words
# of the reply, and the whole reply text (before it is spoken). Not stages: never summed.
MILESTONES = ("first_words", "first_audio", "reply_text")


class ReplyPath(str, Enum):
    """Which path writes a reply (paper Sec. 3.2): the LLM reads the speech context S' or the
    transcribed text. The value is what JSON, exports and logs hold."""

    SPEECH = "speech"
    TEXT = "text"

    __str__ = str.__str__  # "speech", as before it was an enum
    __format__ = str.__format__


@dataclass(frozen=True)
class Turn:
    role: str  # USER or ASSISTANT
    text: str  # transcript (user) or reply text (assistant)
    audio: np.ndarray | None = None  # user: 16 kHz float32 mono; assistant: reply audio
    sample_rate: int | None = None
    energy: float | None = None  # user turns: mean mel-frame norm (paper Sec. 3.3)
    notes: tuple[str, ...] = ()  # user turns: what the person should act on, e.g. "12% of samples are clipped"
    conversions: tuple[str, ...] = ()  # user turns: routine input conversions, e.g. "resampled 48000 Hz to 16000 Hz"


@dataclass(frozen=True)
class Conversation:
    turns: tuple[Turn, ...] = ()

    def with_turn(self, turn: Turn) -> "Conversation":
        return replace(self, turns=self.turns + (turn,))

    def with_reply_cut(self, text: str, seconds: float) -> "Conversation":
        """The person spoke over the last reply: it keeps as said only `text` and the first
        `seconds` of its audio, which is what the next turn reads and hears of it."""
        if not self.turns or self.turns[-1].role != ASSISTANT:
            raise ValueError("the last turn is not a reply")
        reply = self.turns[-1]
        audio = reply.audio[: max(0, int(round(seconds * (reply.sample_rate or 1))))] if reply.audio is not None else None
        cut = replace(reply, text=text, audio=audio, notes=reply.notes + (REPLY_CUT_NOTE,))
        return replace(self, turns=self.turns[:-1] + (cut,))

    @property
    def user_turns(self) -> list[Turn]:
        return [t for t in self.turns if t.role == USER]

    def history(self) -> list[tuple[str, str]]:
        """(role, text) per turn: what `ES4RModel.prompt_parts` lays out."""
        return [(t.role, t.text) for t in self.turns]

    def history_text(self) -> str:
        """The transcribed history as the LLM reads it (text path; cross-modal keys)."""
        return format_history(self.history())


def history_lines(turns: list[tuple[str, str]]) -> list[str]:
    """The history layout, one string per turn (each but the last ends in its newline), so
    the tokens of every turn are known: cross-modal attention lets a turn's speech read only
    its own turn's tokens. A lone turn is its text; longer histories are "User: ..." /
    "You: ..." lines (the LLM is the listener, "You")."""
    if len(turns) == 1:
        return [turns[0][1]]
    names = {USER: "User", ASSISTANT: "You"}
    return [f"{names[role]}: {text}" + ("\n" if i < len(turns) - 1 else "") for i, (role, text) in enumerate(turns)]


def format_history(turns: list[tuple[str, str]]) -> str:
    """One layout for app, training and evaluation (see history_lines)."""
    return "".join(history_lines(turns))


@dataclass(frozen=True)
class ComponentStatus:
    status: str  # es4r.config.TRAINED | FALLBACK | RANDOM | UNTRAINED
    description: str  # what it is, in words ("Whisper tiny.en (converted from CTranslate2)")


def turn_labels(turns: Sequence[Turn]) -> list[str]:
    """One name per turn in the page's single numbering: the person's k-th turn is "You k" and
    the reply to it "Reply k", so turn k of the views, the chat and the export is one exchange."""
    heard, labels = 0, []
    for turn in turns:
        heard += turn.role == USER
        labels.append(f"You {heard}" if turn.role == USER else f"Reply {heard}")
    return labels


@dataclass(frozen=True)
class AttentionMaps:
    intra: list[np.ndarray]  # per user turn in the window: (heads, L_i, L_i)
    inter: np.ndarray | None  # (heads, L, L) over the concatenated history
    turn_boundaries: list[int]  # frame index where each turn starts in `inter`
    cross: np.ndarray | None  # (speech segments, history tokens)
    history_tokens: list[str]  # tick labels of `cross`
    meaningful: bool  # False when the ES4R modules are untrained or random
    # per history turn: ((first, end) token columns of `cross`, (first, end) speech rows or None if unheard)
    cross_blocks: list[tuple[tuple[int, int], tuple[int, int] | None]] = field(default_factory=list)
    # names of the heard turns in the window ("You 2", "Reply 2": reply k answers the person's turn k)
    # and of the turns in `cross_blocks`, in the one numbering the page uses (`turn_labels`)
    window_labels: list[str] = field(default_factory=list)
    cross_labels: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TurnResult:
    transcripts: list[str]  # every user turn, oldest first
    reply_text: str
    reply_audio: np.ndarray  # (samples,) float32
    sample_rate: int
    energies: list[float]  # per user turn
    strategy: Strategy
    strategy_reason: str
    strategy_params: dict
    fusion_weights: list[float]  # per user turn, sums to 1 (empty when fusion is off)
    timings: dict[str, float]  # stage -> seconds
    components: dict[str, ComponentStatus]
    path: ReplyPath
    voice: str  # which engine spoke
    seed: int
    dropped_turns: int = 0  # oldest user turns outside the speech encoder window
    notes: tuple[str, ...] = field(default_factory=tuple)

    def summary(self) -> dict:
        """Everything but arrays, for JSON output and logs."""
        return {
            "transcripts": self.transcripts, "reply_text": self.reply_text,
            "reply_seconds": round(len(self.reply_audio) / self.sample_rate, 3),
            "sample_rate": self.sample_rate, "energies": [round(e, 5) for e in self.energies],
            "strategy": self.strategy, "strategy_reason": self.strategy_reason,
            "strategy_params": self.strategy_params,
            "fusion_weights": [round(w, 5) for w in self.fusion_weights],
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "components": {k: {"status": v.status, "description": v.description} for k, v in self.components.items()},
            "path": self.path, "voice": self.voice, "seed": self.seed,
            "dropped_turns": self.dropped_turns, "attention_meaningful": self.path == ReplyPath.SPEECH,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class ContextUsage:
    """How much of the speech encoder's window and of the LLM context the conversation uses,
    as the pipeline counts it (ES4RPipeline.context_usage): every spoken turn, the user's and
    the assistant's, is heard, and the window keeps what `ES4RModel.fit_window` keeps."""

    turn_seconds: list[float]  # every spoken turn, oldest first
    turns_in_window: int  # the most recent turns that fit the encoder window
    window_seconds: float  # speech the encoder window holds (after input downsampling)
    history_tokens: int
    max_tokens: int  # LLM context budget for history + reply
    reply_tokens: int  # reserved for the reply
    dropped_turns: int  # oldest spoken turns outside the speech window

    @property
    def window_used(self) -> float:
        return sum(self.turn_seconds[len(self.turn_seconds) - self.turns_in_window:])

    def more_turns_that_fit(self) -> tuple[int, int]:
        """(speech window, LLM context): further turns of the average length so far that fit."""
        if not self.turn_seconds:
            return 0, 0
        average_seconds = sum(self.turn_seconds) / len(self.turn_seconds)
        average_tokens = max(1, self.history_tokens // len(self.turn_seconds))
        speech = int((self.window_seconds - self.window_used) // max(average_seconds, 1e-6))
        text = int((self.max_tokens - self.reply_tokens - self.history_tokens) // average_tokens)
        return max(speech, 0), max(text, 0)

