"""The fixed spoken test sets, loaded and checked: the situations set (assets/situations/:
72 spoken situations of nine kinds, written for this project) and the valence set
(assets/valence_set/: ten three-turn conversations of good, bad and neutral news). They sit in
the data layer because evaluation plays them and the reply tuning keeps its training data
apart from them (es4r/data/empathy_corpus.py); es4r/evaluation/situations.py and valence.py
play and judge them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from es4r.modeling.condolences import heard_loss

VALENCE_SET = Path(__file__).resolve().parents[2] / "assets" / "valence_set"
SITUATIONS = Path(__file__).resolve().parents[2] / "assets" / "situations"
KINDS = ("good_news", "death", "pet_loss", "work_school_stress", "conflict", "loneliness", "health_worry",
         "mixed_feelings", "small_talk")
VALENCE_KIND = "valence_set"


@dataclass(frozen=True)
class Situation:
    id: str
    kind: str
    loss: bool  # a death or a loss is said in the turns
    turns: tuple[str, ...]  # what the person says, in order
    good: tuple[bool, ...]  # per turn: is it good news (an apology to it is wrong)
    voice: str = ""  # the voice that speaks it
    clips: tuple[Path, ...] = ()  # one audio file per turn, once rendered


class SituationError(ValueError):
    """A set file that cannot be used; the message names the item."""


def load_situations(folder: Path = SITUATIONS) -> tuple[int, list[Situation]]:
    """(version, situations) from `folder/set.json`, checked, with their voices and clips."""
    spec = json.loads((Path(folder) / "set.json").read_text())
    seen, situations = set(), []
    for item in spec["items"]:
        where = item.get("id", "?")
        if item.get("kind") not in KINDS:
            raise SituationError(f"{where}: kind {item.get('kind')!r} is not one of {', '.join(KINDS)}")
        turns = item.get("turns")
        if not isinstance(turns, list) or not 1 <= len(turns) <= 4 or not all(isinstance(t, str) and t.strip() for t in turns):
            raise SituationError(f"{where}: expected 1-4 non-empty turns")
        if where in seen or not isinstance(item.get("loss"), bool):
            raise SituationError(f"{where}: ids must be unique and 'loss' true or false")
        seen.add(where)
        clips = tuple(Path(folder) / clip for clip in item.get("audio", ()))
        if len(clips) != len(turns):
            raise SituationError(f"{where}: expected one clip per turn; run `python -m es4r situations-set`")
        situations.append(Situation(where, item["kind"], item["loss"], tuple(t.strip() for t in turns),
                                    (item["kind"] == "good_news",) * len(turns), item.get("voice", ""), clips))
    return int(spec["version"]), situations


def valence_situations() -> list[Situation]:
    """The valence set's ten conversations as situations (their clips are committed)."""
    out = []
    for turns in load_valence_set():
        texts = tuple(t.text for t in turns)
        out.append(Situation(f"valence_{turns[0].conversation}", VALENCE_KIND, heard_loss(texts), texts,
                             tuple(t.valence == "good" for t in turns), "as recorded", tuple(t.audio for t in turns)))
    return out



@dataclass(frozen=True)
class ValenceTurn:
    id: str
    conversation: str
    valence: str  # good | bad | neutral
    text: str
    audio: Path



def load_valence_set(folder: Path = VALENCE_SET) -> list[list[ValenceTurn]]:
    """The set's conversations, each a list of turns in order."""
    spec = json.loads((Path(folder) / "set.json").read_text())
    conversations: dict[str, list[ValenceTurn]] = {}
    for item in sorted(spec["items"], key=lambda i: (i["conversation"], i["turn"])):
        if item["valence"] not in ("good", "bad", "neutral"):
            raise ValueError(f"{item['id']}: valence {item['valence']!r} is not good, bad or neutral")
        conversations.setdefault(item["conversation"], []).append(
            ValenceTurn(item["id"], item["conversation"], item["valence"], item["text"], Path(folder) / item["audio"]))
    return list(conversations.values())
