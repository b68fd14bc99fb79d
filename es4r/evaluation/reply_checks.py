"""What a listener rejects at once in a reply, as rules a machine can apply.

The paper judges replies on Topic, Emotion, Specificity, Actionability and Empathy (Sec. 4,
App. F). Before any of that, some replies are simply wrong, and people notice at once. Each
rule here is written from one such failure kind, not from the replies a system happens to give:

- `apology_to_good_news`: "sorry", condolences, "oh no" … anywhere in a reply to good news;
- `condolence_without_loss`: words of mourning ("sorry for your loss", "condolences",
  "passed away", "grief") when nothing in the conversation says someone died or something was lost;
- `assistant_speak`: offering to assist or help as a service ("How can I help?", "I'm here to
  help", "let me know if…"), or a reply that is nothing but "I'm here for you";
- `personal_experience`: the listener claiming a past or a life of its own ("I've been there
  myself", "when I lost my dog", "my mom …");
- `meta_commentary`: talk about "the user" or about the reply itself ("I'll respond with
  empathy", "as an AI");
- `prompt_echo`: four words in a row of the system prompt (es4r.data.teacher.echoes_prompt), or
  three of a note the speech path gives the LLM on how the person sounds
  (any wording es4r.modeling.affect_reader.affect_note can give: "That's a calm and steady voice.");
- `ignores_situation`: the reply's similarity to what the person said (all-MiniLM-L6-v2, the
  packaged sentence encoder) is below `RELEVANCE_THRESHOLD` (how it was chosen: there);
- `empty`: nothing speakable.

Whether a death or loss was said is read from the person's turns by `mentions_loss` (a word
list, stated below) where a set does not say it; the situations set says it per item.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

FLAGS = ("apology_to_good_news", "condolence_without_loss", "assistant_speak", "personal_experience",
         "meta_commentary", "prompt_echo", "ignores_situation", "empty")
OPENING_WORDS = 3  # a reply's opening: its first three words

# The similarity of a reply to what the person said (cosine of all-MiniLM-L6-v2 sentence vectors,
# the larger of: to their last turn, to all their turns joined) below which the reply is taken to
# ignore the situation. Chosen on the hand-written empathy corpus (assets/empathy_corpus), never on
# a system's replies: see `calibrate_relevance` and assets/empathy_corpus/CARD.md for the figures.
RELEVANCE_THRESHOLD = 0.15


def _clean(text: str) -> str:
    return " ".join(text.lower().replace("’", "'").split())


APOLOGY = re.compile(r"\b(sorry|apologi[sz]e|condolences|that'?s (too bad|a shame|awful|terrible)|how (awful|terrible|sad)"
                     r"|oh no)\b")
CONDOLENCE = re.compile(r"\b(sorry (for|about) your loss|condolences|(your|such a|this|the|a) (terrible |great |huge |sad )?loss"
                        r"|passed away|passing away|rest in peace|griev\w*|grief|mourn\w*|(his|her|their) passing)\b")
ASSISTANT = re.compile(r"\b(assist\w*|how (can|may|could) i help|what can i do for you|(i'm|i am) (here|happy|glad) to help"
                       r"|(happy|glad|willing) to help|let me know (if (there's|there is|you need) anything|how i can)|feel free to (ask|reach out)"
                       r"|is there anything (else )?i can|help you with|any (other )?questions"
                       r"|here to (help|assist))\b")
# A reply whose whole content is a stock line of presence: it says nothing about anything.
STOCK_ONLY = re.compile(r"^(i'm|i am) (here|always here|right here) (for you|to (listen|support you|help))"
                        r"( (and|if) [a-z' ]+)?[.!]?$")
PERSONAL = re.compile(r"\b((i've|i have) (been there|been through|gone through|lost|had (a|my|the same))"
                      r"|when i (was|lost|had|went|got|moved|started)"
                      r"|(happened to|same (thing )?(happened )?(to|with)) me|\bme too\b|i know exactly how"
                      r"|my (own )?(mom|mother|dad|father|parents?|grand\w+|wife|husband|partner|sister|brother|son"
                      r"|daughter|kids?|children|dog|cat|pet|boss|job|friends?|family|experience|life)\b"
                      r"|i (remember|recall) (when|my|how i)|i (also|too) (lost|had|went|felt|was)|in my experience)\b")
META = re.compile(r"\b(the user|user's|the speaker|(i'll|i will|i would|i'd|let me) (respond|reply|answer)|(my|this) (response|reply)"
                  r"|as an? (ai|assistant|language model|chatbot)|language model|empathetic (response|listener|reply)"
                  r"|in an? (supportive|empathetic|caring) (manner|way|tone))\b")

def mentions_loss(user_turns: Sequence[str]) -> bool:
    """True when the person's turns say that someone died or that they lost a person, a pet, a
    job, a home or a relationship (the word lists of es4r.modeling.condolences, which also
    decides when a reply may use words of mourning)."""
    from es4r.modeling.condolences import heard_loss

    return heard_loss(user_turns)


def opening(reply: str, words: int = OPENING_WORDS) -> str:
    """The reply's first `words` words, lowercased, punctuation dropped."""
    return " ".join(re.findall(r"[a-z']+", _clean(reply))[:words])


@dataclass(frozen=True)
class ReplyContext:
    """What a reply answers: the person's turns so far (oldest first), whether their news is good,
    and whether a death or loss was said."""

    user_turns: tuple[str, ...]
    good_news: bool
    loss: bool


@dataclass
class CheckedReply:
    reply: str
    flags: list[str] = field(default_factory=list)
    relevance: float | None = None


NOTE_ECHO_WORDS = 3


def echoes_note(text: str) -> bool:
    """True when the reply holds three words in a row of an affect note (what the prompt says of
    how the person sounds), which the person never said."""
    from es4r.modeling.affect_reader import all_affect_notes

    def grams(words: list[str]) -> set[tuple[str, ...]]:
        return {tuple(words[i:i + NOTE_ECHO_WORDS]) for i in range(len(words) - NOTE_ECHO_WORDS + 1)}

    notes = set().union(*(grams(re.findall(r"[a-z']+", note.lower())) for note in all_affect_notes()))
    return bool(grams(re.findall(r"[a-z']+", text)) & notes)


def rule_flags(reply: str, context: ReplyContext, system_prompt: str) -> list[str]:
    """The failure kinds of `reply` that words alone show (all but `ignores_situation`)."""
    from es4r.data.teacher import echoes_prompt

    text = _clean(reply)
    if not any(ch.isalpha() for ch in text):
        return ["empty"]
    flags = []
    if context.good_news and APOLOGY.search(text):
        flags.append("apology_to_good_news")
    if not context.loss and CONDOLENCE.search(text):
        flags.append("condolence_without_loss")
    if ASSISTANT.search(text) or STOCK_ONLY.match(text):
        flags.append("assistant_speak")
    if PERSONAL.search(text):
        flags.append("personal_experience")
    if META.search(text):
        flags.append("meta_commentary")
    if (system_prompt and echoes_prompt(reply, system_prompt)) or echoes_note(text):
        flags.append("prompt_echo")
    return flags


def relevance(replies: Sequence[str], contexts: Sequence[ReplyContext], encoder) -> list[float]:
    """For each reply: the larger cosine similarity of its sentence vector to the person's last
    turn and to all their turns joined (`encoder` maps texts to L2-normalised vectors)."""
    if not replies:
        return []
    lasts = [c.user_turns[-1] for c in contexts]
    joined = [" ".join(c.user_turns) for c in contexts]
    vectors = encoder(list(replies) + lasts + joined)
    n = len(replies)
    r, last, whole = vectors[:n], vectors[n:2 * n], vectors[2 * n:]
    return [max(float(r[i] @ last[i]), float(r[i] @ whole[i])) for i in range(n)]


def check_replies(replies: Sequence[str], contexts: Sequence[ReplyContext], system_prompt: str,
                  encoder=None, threshold: float = RELEVANCE_THRESHOLD) -> list[CheckedReply]:
    """Every rule on every reply; `ignores_situation` only when an encoder is given."""
    checked = [CheckedReply(reply, rule_flags(reply, context, system_prompt)) for reply, context in zip(replies, contexts)]
    if encoder is not None:
        scores = relevance(replies, contexts, encoder)
        for item, score in zip(checked, scores):
            item.relevance = score
            if score < threshold and "empty" not in item.flags:
                item.flags.append("ignores_situation")
    return checked


def repeated_openings(replies: Sequence[str]) -> int:
    """Replies of one conversation whose opening an earlier reply of it already used."""
    seen, repeats = set(), 0
    for reply in replies:
        head = opening(reply)
        if head and head in seen:
            repeats += 1
        seen.add(head)
    return repeats


def top_opening(replies: Sequence[str]) -> tuple[str, float]:
    """The most common opening and the share of all replies that start with it."""
    counts = Counter(opening(r) for r in replies if r.strip())
    if not counts:
        return "", 0.0
    text, count = counts.most_common(1)[0]
    return text, count / len(replies)


def calibrate_relevance(replies: Sequence[str], contexts: Sequence[ReplyContext], encoder) -> dict:
    """Relevance of well-written replies to their own conversations against the same replies
    placed under other conversations (each reply moved `len/2` places along): the threshold
    should keep nearly all of the first and flag much of the second."""
    import numpy as np

    own = np.array(relevance(replies, contexts, encoder))
    shift = max(len(contexts) // 2, 1)
    moved = np.array(relevance(replies, list(contexts[shift:]) + list(contexts[:shift]), encoder))
    quantiles = {f"own_p{q}": round(float(np.percentile(own, q)), 3) for q in (1, 2, 5, 10, 50)}
    quantiles |= {f"moved_p{q}": round(float(np.percentile(moved, q)), 3) for q in (50, 75, 90)}
    return {"replies": len(own), **quantiles,
            "own_below": {t: round(float((own < t).mean()), 3) for t in (0.1, 0.15, 0.2, 0.25)},
            "moved_below": {t: round(float((moved < t).mean()), 3) for t in (0.1, 0.15, 0.2, 0.25)}}
