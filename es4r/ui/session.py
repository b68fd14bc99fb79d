"""One visitor's conversation as the app keeps it in `gr.State`: the immutable history plus
the TurnResult of every answered turn (for the per-turn views and the export)."""

from __future__ import annotations

from dataclasses import dataclass

from es4r.conversation import USER, Conversation, TurnResult


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

    def answering(self, shown: int) -> Conversation:
        """The conversation answered turn `shown` (0-based) answered: every turn up to and with
        the person's turn it replied to (what `ES4RPipeline.attention_maps` reads)."""
        users = [i for i, turn in enumerate(self.conversation.turns) if turn.role == USER]
        return Conversation(self.conversation.turns[: users[shown] + 1])
