"""Replies that fit: a fixed set of spoken turns of known valence, and three checks on the replies.

`assets/valence_set/` holds ten three-turn conversations (good news, bad news, neutral turns;
spoken by the offline voices, `python -m es4r valence-set`). Each conversation is played to
the pipeline turn by turn, exactly as the app does (ASR, the reply spoken and kept in the
history), and the replies are checked for:

1. an opening that contradicts the turn's valence — an apology to good news, congratulations
   to bad news (`opening_stance` reads the first sentence; keyword lists, stated below);
2. repeats — a reply whose ROUGE-L F1 against any earlier reply of the same conversation is
   >= `REPEAT_ROUGE` (`repeats`);
3. one opening for everything — the share of replies that start with the most common four
   words (`top_opening`; also applied to the held-out corpus replies by the ship gates).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field

from es4r.conversation import ReplyPath
from es4r.data.test_sets import VALENCE_SET, ValenceTurn, load_valence_set  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)

REPEAT_ROUGE = 0.7  # ROUGE-L F1 at or above this between two replies of one conversation is a repeat
OPENING_WORDS = 4
# Openings of a reply's first sentence. An apology or sympathy meets bad news; congratulation
# or delight meets good news; each contradicts the other valence. Neutral turns take either.
# "Glad you told me" thanks the person for sharing; it does not celebrate the news.
APOLOGY = re.compile(r"\b(sorry|apologi[sz]e|condolences|that'?s (too bad|a shame|tough|hard|awful|terrible)"
                     r"|how (awful|terrible|sad)|oh no)\b")
CELEBRATION = re.compile(r"\b(congratulations|congrats|glad(?! you (told|shared|reached|opened|came))|happy for you|so happy|great news|wonderful|fantastic"
                         r"|amazing|awesome|exciting|how exciting|that'?s great|delighted|thrilled)\b")
CONTRADICTING = {"good": "apology", "bad": "celebration"}


@dataclass
class ValenceReply:
    turn: ValenceTurn
    transcript: str
    reply: str
    stance: str | None  # apology | celebration | None (see opening_stance)
    contradicts: bool
    repeat_of: str | None = None  # id of the earlier turn whose reply this one repeats
    repeat_rouge: float = 0.0


@dataclass
class ValenceReport:
    path: ReplyPath
    replies: list[ValenceReply] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def contradiction_share(self) -> float:
        judged = [r for r in self.replies if r.turn.valence in CONTRADICTING]
        return sum(r.contradicts for r in judged) / max(len(judged), 1)

    @property
    def repeat_count(self) -> int:
        return sum(r.repeat_of is not None for r in self.replies)

    def summary(self) -> dict:
        opening, share = top_opening([r.reply for r in self.replies])
        return {"path": self.path, "turns": len(self.replies), "errors": self.errors,
                "contradicting_openings": sum(r.contradicts for r in self.replies),
                "judged_turns": sum(r.turn.valence in CONTRADICTING for r in self.replies),
                "contradiction_share": round(self.contradiction_share, 4), "repeats": self.repeat_count,
                "top_opening": opening, "top_opening_share": round(share, 4)}


def first_sentence(reply: str) -> str:
    return re.split(r"(?<=[.!?])\s", reply.strip(), maxsplit=1)[0]


def opening_stance(reply: str) -> str | None:
    """"apology", "celebration" or None, from the reply's first sentence (the first match wins
    when both occur, as a listener hears it)."""
    sentence = first_sentence(reply).lower().replace("’", "'")
    found = [(m.start(), name) for name, pattern in (("apology", APOLOGY), ("celebration", CELEBRATION))
             for m in [pattern.search(sentence)] if m]
    return min(found)[1] if found else None


def contradicts(valence: str, stance: str | None) -> bool:
    """An apology to good news or congratulations to bad news; neutral turns take either,
    and a reply with no stance contradicts nothing."""
    return stance is not None and CONTRADICTING.get(valence) == stance


def repeats(replies: list[str]) -> list[tuple[int, float]]:
    """For each reply: (index of the most similar earlier reply, its ROUGE-L F1), or (-1, 0.0)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    found = []
    for i, reply in enumerate(replies):
        scores = [scorer.score(earlier, reply)["rougeL"].fmeasure for earlier in replies[:i]]
        best = max(range(len(scores)), key=scores.__getitem__) if scores else -1
        found.append((best, scores[best] if scores else 0.0))
    return found


def opening(reply: str, words: int = OPENING_WORDS) -> str:
    return " ".join(re.findall(r"[a-z']+", reply.lower().replace("’", "'"))[:words])


def top_opening(replies: list[str], words: int = OPENING_WORDS) -> tuple[str, float]:
    """The most common `words`-word opening and the share of replies that start with it."""
    counts = Counter(opening(r, words) for r in replies if r.strip())
    if not counts:
        return "", 0.0
    text, count = counts.most_common(1)[0]
    return text, count / len(replies)


def play_set(pipeline, conversations: list[list[ValenceTurn]]) -> ValenceReport:
    """Each conversation through `pipeline.converse`, turn by turn, as the app plays it; a
    turn that fails is recorded and the conversation goes on without it."""
    from es4r.conversation import Conversation

    report = ValenceReport(pipeline.path)
    for turns in conversations:
        conversation, replies = Conversation(), []
        for turn in turns:
            try:
                conversation, result = pipeline.converse(conversation, turn.audio)
            except Exception as error:  # noqa: BLE001 - the report names every failed turn
                report.errors.append(f"{turn.id}: {error}")
                logger.warning("valence set: %s failed: %s", turn.id, error)
                continue
            stance = opening_stance(result.reply_text)
            replies.append(ValenceReply(turn, result.transcripts[-1], result.reply_text, stance,
                                        contradicts(turn.valence, stance)))
        for reply, (earlier, score) in zip(replies, repeats([r.reply for r in replies])):
            if earlier >= 0 and score >= REPEAT_ROUGE:
                reply.repeat_of, reply.repeat_rouge = replies[earlier].turn.id, score
            elif earlier >= 0:
                reply.repeat_rouge = score
        report.replies.extend(replies)
        logger.info("valence set: %s done (%d replies)", turns[0].conversation, len(replies))
    return report


def report_markdown(reports: list[ValenceReport]) -> str:
    lines = ["| path | contradicting openings | repeats | top 4-word opening | its share |", "|---|---|---|---|---|"]
    for report in reports:
        s = report.summary()
        lines.append(f"| {s['path']} | {s['contradicting_openings']}/{s['judged_turns']} "
                     f"({s['contradiction_share']:.0%}) | {s['repeats']} | \"{s['top_opening']}\" | "
                     f"{s['top_opening_share']:.0%} |")
    for report in reports:
        lines += ["", f"## {report.path} path", "| turn | valence | heard | reply | stance | note |",
                  "|---|---|---|---|---|---|"]
        for r in report.replies:
            note = ("CONTRADICTS" if r.contradicts else "") + (f" repeats {r.repeat_of} ({r.repeat_rouge:.2f})"
                                                                 if r.repeat_of else "")
            lines.append(f"| {r.turn.id} | {r.turn.valence} | {r.transcript} | {r.reply} | {r.stance or ''} | {note} |")
        lines += [f"- error: {e}" for e in report.errors]
    return "\n".join(lines) + "\n"
