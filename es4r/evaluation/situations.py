"""The situations set: short spoken situations of many kinds, played to a system turn by turn,
and its replies checked for what a listener rejects at once (es4r.evaluation.reply_checks).

`assets/situations/set.json` holds the written turns (72 situations, 9 kinds, 2-3 turns each;
written for this project, CC0), says per situation whether a death or loss is said, and names
its voice and clips: two natural voices alternate within each kind (Piper en_US-joe-medium and
Kokoro jf_gongitsune speaking English; `python -m es4r situations-set` speaks them). The valence set
(assets/valence_set) joins as a tenth kind.

    python -m es4r situations --systems text speech --out runs/situations
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

from es4r.data.test_sets import (KINDS, SITUATIONS, VALENCE_KIND, Situation, SituationError,  # noqa: F401
                                 load_situations, valence_situations)
from es4r.evaluation.reply_checks import (FLAGS, CheckedReply, ReplyContext, check_replies, opening,
                                          repeated_openings, top_opening)

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------- playing and judging
@dataclass
class SituationReply:
    situation: str
    kind: str
    turn: int  # 1-based
    said: str  # what the person said (the set's words)
    heard: str  # the transcript
    reply: str
    flags: list[str] = field(default_factory=list)
    relevance: float | None = None


@dataclass
class SituationsReport:
    system: str
    replies: list[SituationReply] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self, kinds: tuple[str, ...] | None = None) -> dict:
        """Per kind and overall: replies, flagged replies by failure, the most common opening and
        its share, openings repeated within a conversation, Dist-2, mean words."""
        from es4r.evaluation.metrics import distinct_n

        kinds = kinds or tuple(dict.fromkeys(r.kind for r in self.replies))
        rows = {}
        for kind in kinds + ("all",):
            chosen = [r for r in self.replies if kind == "all" or r.kind == kind]
            if not chosen:
                continue
            texts = [r.reply for r in chosen]
            head, share = top_opening(texts)
            by_conversation: dict[str, list[str]] = {}
            for r in chosen:
                by_conversation.setdefault(r.situation, []).append(r.reply)
            words = [len(t.split()) for t in texts]
            rows[kind] = {
                "replies": len(chosen), "flagged": sum(bool(r.flags) for r in chosen),
                "flagged_share": round(sum(bool(r.flags) for r in chosen) / len(chosen), 4),
                "by_failure": {f: sum(f in r.flags for r in chosen) for f in FLAGS if any(f in r.flags for r in chosen)},
                "top_opening": head, "top_opening_share": round(share, 4),
                "repeated_openings": sum(repeated_openings(v) for v in by_conversation.values()),
                "dist2": round(distinct_n(texts, 2), 4) if any(t.strip() for t in texts) else 0.0,
                "mean_words": round(sum(words) / len(words), 2),
            }
        return {"system": self.system, "errors": self.errors, "kinds": rows}

    def quotes(self, count: int, seed: int = 0) -> list[SituationReply]:
        """`count` replies drawn at random (seeded), for quoting honestly."""
        return random.Random(seed).sample(self.replies, min(count, len(self.replies)))


def play(pipeline, situations: list[Situation], system: str, encoder=None) -> SituationsReport:
    """Each situation through `pipeline.converse`, turn by turn as the app plays it (the reply
    spoken and kept in the history); a failed turn is recorded and the situation goes on."""
    from es4r.conversation import Conversation

    report = SituationsReport(system)
    prompt = pipeline.config.generation.system_prompt
    for situation in situations:
        conversation, replies, contexts = Conversation(), [], []
        for index, clip in enumerate(situation.clips):
            try:
                conversation, result = pipeline.converse(conversation, clip)
            except Exception as error:  # noqa: BLE001 - the report names every failed turn
                report.errors.append(f"{situation.id} turn {index + 1}: {error}")
                logger.warning("situations: %s turn %d failed: %s", situation.id, index + 1, error)
                continue
            replies.append(SituationReply(situation.id, situation.kind, index + 1, situation.turns[index],
                                          result.transcripts[-1], result.reply_text))
            contexts.append(ReplyContext(situation.turns[: index + 1], situation.good[index], situation.loss))
        for reply, checked in zip(replies, check_replies([r.reply for r in replies], contexts, prompt, encoder)):
            reply.flags, reply.relevance = checked.flags, checked.relevance
        report.replies.extend(replies)
        logger.info("situations [%s]: %s done: %s", system, situation.id, " | ".join(r.reply for r in replies))
    return report


def recheck(saved: dict, situations: list[Situation], system_prompt: str, encoder=None) -> list[SituationsReport]:
    """The replies of a saved run (`replies_json`) judged again by the checker as it is now."""
    by_id = {s.id: s for s in situations}
    reports = []
    for system, rows in saved["replies"].items():
        report = SituationsReport(system)
        for situation_id in dict.fromkeys(r["situation"] for r in rows):
            situation = by_id[situation_id]
            mine = [r for r in rows if r["situation"] == situation_id]
            replies = [SituationReply(r["situation"], r["kind"], r["turn"], r["said"], r["heard"], r["reply"]) for r in mine]
            contexts = [ReplyContext(situation.turns[: r.turn], situation.good[r.turn - 1], situation.loss) for r in replies]
            for reply, checked in zip(replies, check_replies([r.reply for r in replies], contexts, system_prompt, encoder)):
                reply.flags, reply.relevance = checked.flags, checked.relevance
            report.replies.extend(replies)
        reports.append(report)
    return reports


def report_markdown(reports: list[SituationsReport], quotes: int = 10, seed: int = 0) -> str:
    """One table per system (kinds as rows), then `quotes` replies of each drawn at random."""
    lines = []
    for report in reports:
        summary = report.summary()
        lines += [f"## {report.system}", "",
                  "| kind | replies | flagged | by failure | top opening (share) | repeated openings | Dist-2 | mean words |",
                  "|---|---|---|---|---|---|---|---|"]
        for kind, row in summary["kinds"].items():
            failures = ", ".join(f"{k} {v}" for k, v in row["by_failure"].items()) or "-"
            lines.append(f"| {kind} | {row['replies']} | {row['flagged']} ({row['flagged_share']:.0%}) | {failures} | "
                         f"\"{row['top_opening']}\" ({row['top_opening_share']:.0%}) | {row['repeated_openings']} | "
                         f"{row['dist2']:.3f} | {row['mean_words']:.1f} |")
        lines += [f"- error: {e}" for e in report.errors]
        lines += ["", f"Ten replies drawn at random (seed {seed}):", ""]
        for r in report.quotes(quotes, seed):
            flagged = f" — flagged: {', '.join(r.flags)}" if r.flags else ""
            lines.append(f"- {r.situation} turn {r.turn} ({r.kind}): \"{r.said}\" → \"{r.reply}\"{flagged}")
        lines.append("")
    return "\n".join(lines)


def replies_json(reports: list[SituationsReport]) -> dict:
    return {"summaries": [r.summary() for r in reports],
            "replies": {r.system: [{**x.__dict__, "relevance": None if x.relevance is None else round(x.relevance, 4),
                                    "opening": opening(x.reply)} for x in r.replies] for r in reports}}


__all__ = ["KINDS", "Situation", "SituationsReport", "CheckedReply", "load_situations", "valence_situations",
           "play", "report_markdown", "replies_json"]
