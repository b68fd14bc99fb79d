"""One visitor's conversation as the app keeps it in `gr.State`: the immutable history plus
the TurnResult of every answered turn (for the per-turn views and the export)."""

from __future__ import annotations

from dataclasses import dataclass

from es4r.conversation import Conversation, TurnResult


@dataclass(frozen=True)
class Session:
    conversation: Conversation = Conversation()
    results: tuple[TurnResult, ...] = ()  # one per answered user turn, oldest first

    def answered(self, conversation: Conversation, result: TurnResult) -> "Session":
        """The session after a successful turn; the old one stays valid (nothing mutates)."""
        return Session(conversation, self.results + (result,))

    @property
    def latest(self) -> TurnResult | None:
        return self.results[-1] if self.results else None
