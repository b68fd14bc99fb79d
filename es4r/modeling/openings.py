"""Replies that do not open against what the person said: an apology to good news or
congratulations to bad news is what a listener hears first and remembers.

The small LLMs ES4R runs on a CPU open most replies with "I'm so sorry to hear that", good
news included. `ValenceReader` reads whether the newest user turn sounds like good or bad
news (its transcript, through the packaged all-MiniLM-L6-v2 sentence encoder, against the
prototype sentences of es4r/modeling/news_prototypes.py); `OpeningBan` then keeps the words
of the opposite stance out of the reply's first sentence — both stances when the reading is
unsure, so an unsure reply opens by reflecting rather than guessing ("I'm here for you") —
with the intensifiers that lead into them. Later sentences are free.

Chosen by measurement on the valence set (assets/valence_set, embedded text path): a prompt
hint ("The user is sharing good news.") raised contradictions from 5/20 to 7/20 and made
the LLM echo its system prompt; bans on confident readings only: 2/20; bans with unsure
readings banning both stances: 1/20 (docs/QUALITY.md).

A turn is compared with the `NEAREST` closest prototypes of each side, not with all of them:
a mean over every prototype let one concrete event ("I got the job") be outvoted by the many
it has nothing to do with. Small talk nearer to everyday turns than to either side's news
reads as unsure. `NEAREST` and the margin were chosen on our own sentences
(tests/data/valence_dev.json) before the test sets were read."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

from es4r.modeling.news_prototypes import BAD_EVENTS, EVERYDAY, GOOD_EVENTS

logger = logging.getLogger(__name__)

GOOD, BAD, UNSURE = "good", "bad", "unsure"
EVERYDAY_TALK = "everyday talk"
NEAREST = 7  # prototypes per side a turn is compared with (the mean of their similarities)
APOLOGY_WORDS = ("sorry", "apologize", "apologise", "condolences")
CELEBRATION_WORDS = ("glad", "happy", "congratulations", "congrats", "wonderful", "fantastic", "amazing",
                     "awesome", "exciting", "excited", "great", "thrilled", "delighted")
# "I'm so" is nearly always followed by a stance word: with only the word kept out, the LLM
# finished "I'm so there." (measured); without the intensifier it says "I'm here for you".
INTENSIFIERS = ("so", "really", "truly")
SENTENCE_END = ".!?"


@dataclass(frozen=True)
class Reading:
    valence: str  # GOOD | BAD | UNSURE
    score: float  # mean similarity to the nearest good-news prototypes minus the nearest bad-news ones
    like: str | None = None  # kind of event of the nearest prototype on the side read, or EVERYDAY_TALK

    @property
    def avoided(self) -> tuple[str, ...]:
        """The words the reply's first sentence must not use."""
        if self.valence == GOOD:
            return APOLOGY_WORDS + INTENSIFIERS
        if self.valence == BAD:
            return CELEBRATION_WORDS + INTENSIFIERS
        return APOLOGY_WORDS + CELEBRATION_WORDS + INTENSIFIERS

    def note(self) -> str:
        heard = {GOOD: "good news", BAD: "bad news", UNSURE: "neither clearly good nor bad news"}[self.valence]
        if self.like == EVERYDAY_TALK:
            heard = "everyday talk, neither good nor bad news"
        elif self.like:
            heard += f" (like {self.like})"
        avoided = {GOOD: "an apology", BAD: "congratulations", UNSURE: "an apology or congratulations"}[self.valence]
        return f"the last turn reads as {heard} (score {self.score:+.3f}); the reply does not open with {avoided}"


class ValenceReader:
    """Good / bad / unsure news from a transcript, by sentence-embedding similarity to the
    nearest prototypes of each side (es4r/modeling/news_prototypes.py)."""

    def __init__(self, encoder, margin: float, nearest: int = NEAREST):
        self.margin, self.encoder, self.nearest = margin, encoder, nearest
        self.banks: dict[str, tuple[list[str], torch.Tensor]] = {}  # side -> (kind per prototype, (prototypes, hidden))
        for side, events in ((GOOD, GOOD_EVENTS), (BAD, BAD_EVENTS), (EVERYDAY_TALK, EVERYDAY)):
            kinds = [kind for kind, sentences in events.items() for _ in sentences]
            self.banks[side] = kinds, encoder([sentence for sentences in events.values() for sentence in sentences])

    @classmethod
    @functools.cache
    def packaged(cls, margin: float) -> "ValenceReader | None":
        """The reader on the offline all-MiniLM-L6-v2 package, loaded once per process (every
        pipeline and variant shares it); None (logged) when the package is missing."""
        from es4r.sentence_encoder import EncoderMissing, SentenceEncoder

        try:
            return cls(SentenceEncoder(), margin)
        except EncoderMissing as error:
            logger.warning("reply openings are not checked against the news: %s", error)
            return None

    def read(self, text: str) -> Reading:
        """Good when the turn's nearest good-news prototypes are closer, by more than the
        margin, than its nearest bad-news ones (bad the other way round) and that side is
        closer than everyday talk; unsure otherwise."""
        vector = self.encoder([text])[0]  # (hidden,), unit length
        near, nearest_kind = {}, {}
        for side, (kinds, bank) in self.banks.items():
            top = (bank @ vector).topk(min(self.nearest, len(kinds)))  # over (prototypes,)
            near[side], nearest_kind[side] = float(top.values.mean()), kinds[int(top.indices[0])]
        score = near[GOOD] - near[BAD]
        if max(near[GOOD], near[BAD]) <= near[EVERYDAY_TALK]:
            return Reading(UNSURE, score, EVERYDAY_TALK)
        if score > self.margin:
            return Reading(GOOD, score, nearest_kind[GOOD])
        if score < -self.margin:
            return Reading(BAD, score, nearest_kind[BAD])
        return Reading(UNSURE, score)


class OpeningBan(LogitsProcessor):
    """Bans the tokens of `words` (any case, with or without a leading space; a word that
    splits into several tokens by its first) until the reply holds a sentence end. Works on
    the generated tokens only, as generation from inputs_embeds passes them; a sentence end
    is any token whose text holds one of SENTENCE_END (found once in the vocabulary, so no
    step decodes the reply). `encode`: text -> token ids (the model's `TokenIds`, which
    tokenises each form once per process); by default the tokenizer's own."""

    def __init__(self, tokenizer, words: tuple[str, ...], encode: Callable[[str], list[int]] | None = None):
        encode = encode or (lambda text: tokenizer(text, add_special_tokens=False).input_ids)
        ids = set()
        for word in words:
            for form in (word, word.capitalize(), f" {word}", f" {word.capitalize()}"):
                pieces = encode(form)
                if pieces:
                    ids.add(pieces[0])
        self.banned = sorted(ids)
        self.enders = _sentence_enders(tokenizer)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row, ids in enumerate(input_ids.tolist()):
            if self.enders.isdisjoint(ids):
                scores[row, self.banned] = -float("inf")
        return scores


@functools.cache
def _sentence_enders(tokenizer) -> frozenset[int]:
    """Ids of the tokens whose text holds a sentence end (byte-level vocabularies keep ASCII
    punctuation as it is), found once per tokenizer."""
    return frozenset(i for token, i in tokenizer.get_vocab().items() if any(m in token for m in SENTENCE_END))
