"""Words of mourning only where a death or a loss was said.

The small LLMs ES4R runs on a CPU answer stress at work and a failed exam with "I'm sorry for
your loss" (the issue that brought this module: the bundled rough-week conversation, turn 3).
`heard_loss` reads the person's turns for a death or a loss (the word lists below: "died",
"passed away", "put him to sleep", "lost my job", "broke up" …; "dead tired" and "killing me" are
not deaths); when none is heard, `CondolenceBan` keeps the words of mourning out of the whole
reply ("loss", "condolences", "grief", "mourning"). Sympathy stays free: "I'm sorry you're going
through this" is not banned."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

_KIN = (r"mom|mother|mum|dad|father|parents?|grand\w+|nan|wife|husband|partner|sister|brother|son|daughter|baby"
        r"|child|friend|uncle|aunt|cousin|dog|cat|pet|puppy|kitten|rabbit|horse|bird|job|house|home|business"
        r"|apartment|flat")
DEATH = re.compile(r"\b(died|dies|dying (of|from)|passed away|passed on|passed last|funeral|memorial|buried|burial"
                   r"|put (him|her|it|them)? ?(down|to sleep)|had to put|miscarriage|cremat\w*|his death|her death"
                   r"|their death|was killed|got killed|killed in|no longer with us|(didn't|did not) make it( through)?"
                   rf"|lost (my|our|his|her|their) ([a-z']+ ){{0,2}}({_KIN}))\b")
LOSS = re.compile(r"\b(got fired|been fired|was fired|laid off|let go from|lost the (job|house|baby)|broke up|break ?up"
                  r"|divorc\w*|left me|dumped me|ran away and never|never came back|went missing|is gone for good)\b")
# Mourning, as the reply would say it (first token of each form is banned).
MOURNING_WORDS = ("loss", "losses", "condolences", "condolence", "grief", "grieving", "grieve", "mourning", "mourn")


def heard_loss(user_turns: Sequence[str]) -> bool:
    """True when the person's turns say that someone died or that they lost a person, a pet, a
    job, a home or a relationship."""
    text = " ".join(" ".join(user_turns).lower().replace("’", "'").split())
    return bool(DEATH.search(text) or LOSS.search(text))


class CondolenceBan(LogitsProcessor):
    """Bans each of `MOURNING_WORDS` (after a space, or capitalised as the reply's first word)
    at every step of the reply: a form that is one token, or the first token of a longer
    form when that token holds four letters or more (" cond" of " condolences"; a lone " M" of
    " Mourning" would ban every word it starts)."""

    def __init__(self, tokenizer, words: tuple[str, ...] = MOURNING_WORDS):
        ids = set()
        for word in words:
            # no space before: the reply's first word, capitalised (lower case there is a piece of other words)
            for form in (word.capitalize(), f" {word}", f" {word.capitalize()}"):
                pieces = tokenizer(form, add_special_tokens=False).input_ids
                first = tokenizer.decode(pieces[:1]).strip() if pieces else ""
                if len(pieces) == 1 or len(first) >= 4:
                    ids.add(pieces[0])
        self.banned = sorted(ids)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores[:, self.banned] = -float("inf")
        return scores
