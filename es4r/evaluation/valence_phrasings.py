"""Fresh phrasings of good, bad and neutral news (assets/valence_phrasings.json), written for
testing the news-valence reader and never trained on: the fit keeps every training sentence
within 0.6 cosine of them out (scripts/fit_valence_head.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

PHRASINGS = Path(__file__).resolve().parents[2] / "assets" / "valence_phrasings.json"
LABELS = ("good", "bad", "neutral")


@dataclass(frozen=True)
class Phrasing:
    id: str
    text: str
    label: str  # good | bad | neutral


def load_phrasings(path: Path = PHRASINGS) -> list[Phrasing]:
    """The set's items; a ValueError naming a bad item."""
    items = json.loads(path.read_text())["items"]
    out = [Phrasing(str(i["id"]), str(i["text"]).strip(), i["label"]) for i in items]
    wrong = [p.id for p in out if p.label not in LABELS or not p.text]
    if wrong or len({p.id for p in out}) != len(out):
        raise ValueError(f"{path}: items {wrong} have no text or a label outside {LABELS}, or ids repeat")
    return out
