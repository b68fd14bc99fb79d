"""How the user sounds across their turns, heard by the speech path and told to the LLM as a note
(our addition to the paper's Sec. 3.2; the trend is the one stage 3 reads, Sec. 3.3).

Why: ES4R's premise is that the reply depends on how the person sounds. On this CPU the speech
path, trained end to end, learnt the affect only at the cost of its content (assets/TRAINING_CPU.md,
"The affect reader"): a 135M LLM does not take a soft, learnt signal as readily as words. The training
teacher is the text path told in words how the user sounds (`AFFECT_NOTES`, after the history).
So the speech path hears the same thing from the audio — the trend of the user's loudness and
speaking rate over their turns, measured from the log-mel features stage 1 reads — with a small
classifier fitted on the spoken corpus (es4r/training/reader_fit.py), and gives the LLM the
matching note in the teacher's words. The words are never given: the note is what was heard.
When the measured directions of loudness or pace differ from the class's usual wording (a
rising reading from a voice that got louder but slower), the note names the measured ones
(`affect_note`); when they agree it is the teacher's note word for word.

An unfitted reader, or fewer than `MIN_TURNS` heard user turns, gives no note, and the reading
says why."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from es4r.conversation import USER
from es4r.modeling.prosody import turn_level

AFFECTS = ("falling", "rising", "flat")
# In the training teacher's words (es4r/data/teacher.py); worded as a listener would say it, with
# the feeling named first: measured on 12 held-out conversations, SmolLM2's replies to the falling
# and rising renderings then differed in 12 / 12 (a longer wording in the system prompt: 20 / 32).
AFFECT_NOTES = {
    "falling": "The user sounds tired and sad: their voice got quieter and slower with every turn.",
    "rising": "The user sounds excited and energetic: their voice got louder and faster with every turn.",
    "flat": "The user sounds calm and steady.",
}
# The directions each class's note claims (loudness, pace); "flat" claims none.
NOTE_DIRECTIONS = {"falling": ("quieter", "slower"), "rising": ("louder", "faster")}
FEELINGS = {"falling": "The user sounds tired and sad", "rising": "The user sounds excited and energetic"}
MIN_TURNS = 2  # a trend needs two heard turns


def directions(trend: tuple[float, float]) -> tuple[str, str]:
    """The words for a (loudness, rate) trend: louder or quieter, faster or slower (a change of
    exactly 0 reads as the second word of each, as the reading's reason says it)."""
    level, rate = trend
    return "louder" if level > 0 else "quieter", "faster" if rate > 0 else "slower"


def affect_note(affect: str, trend: tuple[float, float] | None) -> str:
    """The note for `affect` worded from what was measured. The class's own note
    (`AFFECT_NOTES`, the training teacher's words) when both measured directions are the ones
    it claims, or when there is no trend or the class claims none (flat); otherwise the
    measured directions, joined by "but" where one goes against the other, after the class's
    feeling when at least one direction supports it, and with no feeling when none does."""
    if affect not in NOTE_DIRECTIONS or trend is None:
        return AFFECT_NOTES[affect]
    loudness, pace = directions(trend)
    if (loudness, pace) == NOTE_DIRECTIONS[affect]:
        return AFFECT_NOTES[affect]
    joined = "and" if (loudness == "louder") == (pace == "faster") else "but"
    change = f"their voice got {loudness} {joined} {pace} over their turns."
    if {loudness, pace} & set(NOTE_DIRECTIONS[affect]):
        return f"{FEELINGS[affect]}: {change}"
    return f"The user's voice got {loudness} {joined} {pace} over their turns."


def all_affect_notes() -> tuple[str, ...]:
    """Every note `affect_note` can give (what a reply must not echo, es4r/evaluation/reply_checks.py)."""
    trends = [(level, rate) for level in (1.0, -1.0) for rate in (1.0, -1.0)]
    return tuple(dict.fromkeys(affect_note(affect, trend) for affect in AFFECTS for trend in [None, *trends]))


@dataclass(frozen=True)
class AffectReading:
    """What the reader heard. `affect` is None when it gave no note; `reason` says why, in words."""

    affect: str | None
    reason: str
    probabilities: dict[str, float] = field(default_factory=dict)
    trend: tuple[float, float] | None = None  # loudness and rate change per turn, in scale units
    turns: int = 0  # heard user turns

    @property
    def note(self) -> str | None:
        """What the LLM is told: the class's note, worded from the measured trend (`affect_note`)."""
        return affect_note(self.affect, self.trend) if self.affect else None


def heard_user_turns(history: list[tuple[str, str]],
                     turn_features: list[torch.Tensor | None]) -> list[tuple[torch.Tensor, str]]:
    """The user's turns that have audio, oldest first, as (log-mel features, transcript): what the
    reader hears (per history turn, `turn_features` holds None for a turn without audio)."""
    return [(features, text) for (role, text), features in zip(history, turn_features)
            if role == USER and features is not None]


def slope(values: list[float]) -> float:
    """Least-squares change per turn of `values` (oldest first)."""
    n = len(values)
    centre = (n - 1) / 2
    xs = [i - centre for i in range(n)]
    mean = sum(values) / n
    return sum(x * (v - mean) for x, v in zip(xs, values)) / max(sum(x * x for x in xs), 1e-12)


class AffectReader(nn.Module):
    """A linear classifier over two numbers: the per-turn change of the user's loudness (mean
    log-mel of the louder frames) and of their log speaking rate (characters per frame), each
    divided by its scale. Fitted on the corpus's falling / rising / flat renderings."""

    def __init__(self, level_scale: float, rate_scale: float):
        super().__init__()
        self.level_scale, self.rate_scale = level_scale, rate_scale
        self.classify = nn.Linear(2, len(AFFECTS))
        nn.init.zeros_(self.classify.weight)
        nn.init.zeros_(self.classify.bias)
        self.register_buffer("fitted", torch.zeros(()))  # 1 once es4r/training/reader_fit.py has fitted it
        for param in self.parameters():
            param.requires_grad_(False)  # fitted on its own, never by the reply losses

    def trend(self, turns: list[tuple[torch.Tensor, str]]) -> torch.Tensor | None:
        """(2,) from the user's heard turns, oldest first: (log-mel features, transcript) each."""
        if len(turns) < MIN_TURNS:
            return None
        levels = [turn_level(features) for features, _ in turns]
        rates = [math.log(max(len(text.strip()), 1) / max(features.shape[-1], 1)) for features, text in turns]
        return torch.tensor([slope(levels) / self.level_scale, slope(rates) / self.rate_scale])

    def forward(self, trends: torch.Tensor) -> torch.Tensor:
        """(N, 2) trends -> (N, 3) logits over AFFECTS."""
        return self.classify(trends.to(self.classify.weight.dtype))

    @torch.no_grad()
    def read(self, turns: list[tuple[torch.Tensor, str]]) -> AffectReading:
        if not bool(self.fitted):
            return AffectReading(None, "the affect reader is not trained: no note")
        trend = self.trend(turns)
        if trend is None:
            return AffectReading(None, f"{len(turns)} heard turn(s): a trend needs {MIN_TURNS}, no note", turns=len(turns))
        probabilities = torch.softmax(self(trend[None]).float()[0], dim=-1)
        affect = AFFECTS[int(probabilities.argmax())]
        level, rate = (float(v) for v in trend)
        loudness, pace = directions((level, rate))
        reason = (f"over {len(turns)} turns the voice got {loudness} ({level:+.2f}) and {pace} ({rate:+.2f}) "
                  f"per turn → {affect} ({float(probabilities.max()):.0%})")
        return AffectReading(affect, reason, dict(zip(AFFECTS, probabilities.tolist())), (level, rate), len(turns))
