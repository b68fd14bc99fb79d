"""The empathy corpus: short conversations written for this project, whose listener replies show
the LLM what a good reply is (assets/empathy_corpus, CC0; its card is CARD.md there).

Every target the speech path was trained toward before was the 135M LLM's own text-path reply,
so it copied and sharpened that model's favourite openings ("I'm here to help…"). These replies
were written by hand for 300 situations of twelve kinds, each told in two phrasings: they name
what the person feels about what they said, often end with a gentle question, and open in many
ways. `reply_examples` turns each listener turn into one (history, reply) example.

The corpus is kept apart from the situations test set (assets/situations): a situation whose
dialogue is close in meaning to any test situation (all-MiniLM-L6-v2 cosine >= `APART_SIMILARITY`
between the person's turns joined) is left out of training, both phrasings (`kept_apart`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from es4r.conversation import ASSISTANT, USER

logger = logging.getLogger(__name__)

EMPATHY_CORPUS = Path(__file__).resolve().parents[2] / "assets" / "empathy_corpus"
# Measured on the written corpus against the 72 test situations: pairs at >= 0.7 were the same
# event retold (a rabbit found dead by a child, a biopsy result awaited); 0.6 also leaves out the
# near neighbours: 50 of 300 situations (60 with the valence set's conversations).
APART_SIMILARITY = 0.6
ROLES = {"user": USER, "listener": ASSISTANT}


class CorpusError(ValueError):
    """A corpus line that cannot be used; the message names file and line."""


@dataclass(frozen=True)
class Dialogue:
    id: str
    situation: str
    kind: str
    turns: tuple[tuple[str, str], ...]  # (role, text), role USER or ASSISTANT, alternating from USER

    @property
    def user_text(self) -> str:
        return " ".join(text for role, text in self.turns if role == USER)


@dataclass(frozen=True)
class ReplyExample:
    dialogue: str
    history: tuple[tuple[str, str], ...]  # the turns before the reply, ending with the person's
    reply: str
    # how the person sounds that this reply was written for ("falling" / "rising", the affect
    # notes of es4r.modeling.affect_reader); None: written from the words alone (the part_* files)
    affect: str | None = None


AFFECTS = ("falling", "rising")


def _lines(file: Path):
    """(where, line) for each non-empty line of a JSONL file; `where` names file and line."""
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            yield f"{file.name} line {number}", line


def load_dialogues(folder: Path = EMPATHY_CORPUS) -> list[Dialogue]:
    """Every dialogue of every part_*.jsonl in `folder`, checked (roles alternate, user first,
    listener last; ids unique)."""
    dialogues, seen = [], set()
    files = sorted(Path(folder).glob("part_*.jsonl"))
    if not files:
        raise CorpusError(f"no part_*.jsonl files in {folder}")
    for file in files:
        for where, line in _lines(file):
            try:
                item = json.loads(line)
                turns = tuple((ROLES[t["role"]], t["text"].strip()) for t in item["turns"])
                dialogue = Dialogue(item["id"], item["situation"], item["kind"], turns)
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
                raise CorpusError(f"{where}: not a dialogue ({error!r})") from None
            roles = [role for role, _ in turns]
            if not roles or roles[0] != USER or roles[-1] != ASSISTANT or any(a == b for a, b in zip(roles, roles[1:])):
                raise CorpusError(f"{where}: turns must alternate user/listener, from the user to a listener reply")
            if dialogue.id in seen or not all(text for _, text in turns):
                raise CorpusError(f"{where}: duplicate id {dialogue.id!r} or an empty turn")
            seen.add(dialogue.id)
            dialogues.append(dialogue)
    return dialogues


def kept_apart(dialogues: list[Dialogue], test_texts: list[str], encoder,
               threshold: float = APART_SIMILARITY) -> tuple[list[Dialogue], list[str]]:
    """(dialogues to train on, situations left out): a situation is left out, all its phrasings,
    when any of its dialogues is within `threshold` cosine of any test text."""
    if not dialogues or not test_texts:
        return list(dialogues), []
    vectors = encoder([d.user_text for d in dialogues] + list(test_texts))
    ours, theirs = vectors[: len(dialogues)], vectors[len(dialogues):]
    nearest = torch.as_tensor(ours @ theirs.T).max(dim=1).values
    close = sorted({d.situation for d, s in zip(dialogues, nearest.tolist()) if s >= threshold})
    kept = [d for d in dialogues if d.situation not in set(close)]
    logger.info("empathy corpus: %d situations left out as close to the test set, %d dialogues kept",
                len(close), len(kept))
    return kept, close


def load_affect_replies(dialogues: list[Dialogue], folder: Path = EMPATHY_CORPUS) -> dict[tuple[str, int], dict[str, str]]:
    """The replies written for how the person sounds (affect_*.jsonl: `id`, `turn` = the index
    of a listener turn in that dialogue, one reply per affect in `AFFECTS`), keyed by
    (dialogue id, turn), checked against `dialogues`. Why: a reply written from the words alone
    fits every voice, so a model taught only those learns that how someone sounds changes nothing."""
    known = {d.id: d for d in dialogues}
    replies: dict[tuple[str, int], dict[str, str]] = {}
    for file in sorted(Path(folder).glob("affect_*.jsonl")):
        for where, line in _lines(file):
            try:
                item = json.loads(line)
                key, texts = (item["id"], int(item["turn"])), {a: item[a].strip() for a in AFFECTS}
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
                raise CorpusError(f"{where}: not an affect reply ({error!r})") from None
            dialogue = known.get(key[0])
            if dialogue is None:  # a dialogue left out of training (kept apart from the tests)
                continue
            if not 0 <= key[1] < len(dialogue.turns) or dialogue.turns[key[1]][0] != ASSISTANT:
                raise CorpusError(f"{where}: turn {key[1]} of {key[0]} is not a listener reply")
            if not all(texts.values()) or key in replies:
                raise CorpusError(f"{where}: an empty reply, or a second line for {key[0]} turn {key[1]}")
            replies[key] = texts
    return replies


def reply_examples(dialogues: list[Dialogue],
                   affect_replies: dict[tuple[str, int], dict[str, str]] | None = None) -> list[ReplyExample]:
    """One example per listener turn: the turns before it and the reply; where `affect_replies`
    has that turn, one more per affect, the same history with the reply written for it."""
    affect_replies = affect_replies or {}
    examples = []
    for d in dialogues:
        for i, (role, text) in enumerate(d.turns):
            if role == ASSISTANT:
                examples.append(ReplyExample(d.id, d.turns[:i], text))
                for affect, reply in affect_replies.get((d.id, i), {}).items():
                    examples.append(ReplyExample(d.id, d.turns[:i], reply, affect))
    return examples


def training_split(encoder, folder: Path = EMPATHY_CORPUS) -> tuple[list[Dialogue], list[str]]:
    """The corpus kept apart from the situations test set and the valence set."""
    from es4r.data.test_sets import load_situations, load_valence_set

    _, situations = load_situations()
    tests = [" ".join(s.turns) for s in situations]
    tests += [" ".join(t.text for t in turns) for turns in load_valence_set()]
    return kept_apart(load_dialogues(folder), tests, encoder)
