"""Whether a reply was heard: the stretches of the clip that actually played, joined, must
cover all of it but a sliver, wherever the annotator seeked or paused.

The page reports every stretch its player played as ``(from_s, to_s)`` in the clip's own
seconds (closed when the player pauses, ends or jumps); the store keeps them and asks this
module. Time since the first play used to be the measure, and seeking near the end passed it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

# What may stay unheard: the smaller of the two. 0.3 s is shorter than a spoken word (about
# 0.4 s at a conversational 150 words a minute) and longer than the player's position reports
# (Chromium's ~0.25 s timeupdate), which bound where a stretch ends when the player jumps
# mid-play; the fraction keeps a short clip from being mostly skipped all the same.
MAX_UNHEARD_SECONDS = 0.3
MAX_UNHEARD_FRACTION = 0.1
# A stretch cannot be longer than the wall time since the player started, give or take the
# time a report takes to reach a busy server: this catches a report the player never made.
DELIVERY_SLACK_SECONDS = 1.0

Span = tuple[float, float]


@dataclass(frozen=True)
class Hearing:
    """How much of one clip has played, for the lock and for telling the annotator what is left."""

    clip_seconds: float
    heard: tuple[Span, ...]  # played stretches, joined and sorted
    unheard: tuple[Span, ...]  # the gaps still to hear
    wall_seconds: float | None = None  # server time from the first play to the last report

    @property
    def heard_seconds(self) -> float:
        return sum(end - start for start, end in self.heard)

    @property
    def unheard_seconds(self) -> float:
        return max(0.0, self.clip_seconds - self.heard_seconds)

    @property
    def allowance(self) -> float:
        return min(MAX_UNHEARD_SECONDS, MAX_UNHEARD_FRACTION * self.clip_seconds)

    @property
    def complete(self) -> bool:
        covered = self.unheard_seconds <= self.allowance + 1e-9  # float sums of the stretches
        in_time = self.wall_seconds is None or \
            self.wall_seconds + DELIVERY_SLACK_SECONDS >= self.heard_seconds
        return covered and in_time


def join(spans: Iterable[Span], clip_seconds: float) -> tuple[Span, ...]:
    """The union of `spans`, clipped to the clip, as sorted non-overlapping stretches."""
    clipped = sorted((max(0.0, min(a, b)), min(clip_seconds, max(a, b))) for a, b in spans)
    joined: list[Span] = []
    for start, end in clipped:
        if end <= start:
            continue
        if joined and start <= joined[-1][1]:
            joined[-1] = (joined[-1][0], max(joined[-1][1], end))
        else:
            joined.append((start, end))
    return tuple(joined)


def hearing(spans: Iterable[Span], clip_seconds: float, wall_seconds: float | None = None) -> Hearing:
    """What of a `clip_seconds` clip the played `spans` cover, and the gaps left."""
    heard = join(spans, clip_seconds)
    gaps, at = [], 0.0
    for start, end in heard:
        if start > at:
            gaps.append((at, start))
        at = end
    if at < clip_seconds:
        gaps.append((at, clip_seconds))
    return Hearing(clip_seconds, heard, tuple(gaps), wall_seconds)


def describe(side: str, state: Hearing) -> str:
    """One line for the page: what of reply `side` is still unheard, and why it matters."""
    if state.complete:
        return f"Reply {side}: heard in full."
    if not state.heard:
        return f"Reply {side}: not played yet."
    if state.unheard_seconds <= state.allowance:  # covered, but faster than it can have played
        return f"Reply {side}: its play reports came faster than it can play; play it again."
    gaps = ", ".join(f"{start:.1f}–{end:.1f} s" for start, end in state.unheard if end - start >= 0.05)
    return (f"Reply {side}: {state.unheard_seconds:.1f} s of {state.clip_seconds:.1f} s not heard yet "
            f"({gaps}); skipped parts do not count, so play them.")
