"""No reply repeats an earlier one: a logits processor over the conversation's earlier replies.

transformers' `no_repeat_ngram_size` only sees the tokens of the reply being written when
generation starts from `inputs_embeds` (both ES4R paths do), so a small LLM happily answers
turn 3 with turn 1's reply. `EarlierRepliesBan` forbids any `n`-token run of an earlier
assistant reply: once the last n-1 tokens written match a run in an earlier reply, the token
that followed there is banned. Openings stay free until n-1 tokens are written."""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import LogitsProcessor

from es4r.conversation import ASSISTANT  # the app's replies; a corpus's listener turns map to it too


class EarlierRepliesBan(LogitsProcessor):
    def __init__(self, earlier: list[list[int]], n: int) -> None:
        if n < 2:
            raise ValueError(f"n must be at least 2 (found {n})")
        self.n = n
        self.follows: dict[tuple[int, ...], set[int]] = {}
        for ids in earlier:
            for i in range(len(ids) - n + 1):
                self.follows.setdefault(tuple(ids[i : i + n - 1]), set()).add(ids[i + n - 1])

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] < self.n - 1 or not self.follows:
            return scores
        for row, ids in enumerate(input_ids[:, -(self.n - 1):].tolist()):
            banned = self.follows.get(tuple(ids))
            if banned:
                scores[row, list(banned)] = -float("inf")
        return scores


def earlier_replies_ban(history: list[tuple[str, str]], encode: Callable[[str], list[int]],
                        n: int) -> EarlierRepliesBan | None:
    """The ban for a history of (role, text) turns, or None when there is nothing to ban.
    `encode`: text -> token ids (the model's `TokenIds`)."""
    earlier = [encode(text.strip())
               for role, text in history if role == ASSISTANT and text.strip()]
    return EarlierRepliesBan(earlier, n) if n and earlier else None


OPENING_WORDS = 3  # an opening: a reply's first three words


class EarlierOpeningsBan(LogitsProcessor):
    """No reply opens with the first `OPENING_WORDS` words of an earlier reply of the
    conversation: when the reply so far is such an opening less its last token, that token is
    banned (n-gram bans leave openings free; a 135M LLM opened turn after turn "I'm here to…")."""

    def __init__(self, openings: list[list[int]]) -> None:
        self.follows: dict[tuple[int, ...], set[int]] = {}
        for ids in openings:
            if ids:
                self.follows.setdefault(tuple(ids[:-1]), set()).add(ids[-1])

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row, ids in enumerate(input_ids.tolist()):
            banned = self.follows.get(tuple(ids))
            if banned:
                scores[row, list(banned)] = -float("inf")
        return scores


def earlier_openings_ban(history: list[tuple[str, str]],
                         encode: Callable[[str], list[int]]) -> EarlierOpeningsBan | None:
    """The ban of the openings of the history's assistant replies, or None when there are none.
    `encode`: text -> token ids (the model's `TokenIds`)."""
    openings = [encode(" ".join(text.split()[:OPENING_WORDS]))
                for role, text in history if role == ASSISTANT and text.strip()]
    return EarlierOpeningsBan(openings) if openings else None
