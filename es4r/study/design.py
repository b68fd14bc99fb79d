"""The study's design: what is asked, which annotator sees which item, in what order, on
which side.

Blinding and balance, as in the paper's A/B test: every annotator gets their own seed
(derived from the study seed and their arrival slot, and logged), which shuffles their item
order. The side a system appears on is counterbalanced: each item gets a study-level coin
(exactly half the items heads), and the k-th annotator given an item sees it flipped when
k is odd, so across annotators an item alternates sides and within one annotator about
half the items show each system as "A".
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np

WIN, TIE, LOSE = "win", "tie", "lose"  # reply A over reply B (or first system over second)
CHOICES = (WIN, TIE, LOSE)
FLIP_CHOICE = {WIN: LOSE, TIE: TIE, LOSE: WIN}  # the same answer seen from the other side
SEED_WORDS = 1  # 32-bit words drawn from the seed sequence per annotator


@dataclass(frozen=True)
class Criterion:
    name: str  # as in the paper's tables
    kind: str  # "text" (judged on the transcript) or "speech" (judged by listening)
    question: str  # what the annotator is asked


TEXT_CRITERIA = (
    Criterion("Topic", "text", "Which reply stays on the topic of the conversation?"),
    Criterion("Emotion", "text", "Which reply better recognises how the speaker feels?"),
    Criterion("Specific", "text", "Which reply is more specific to what was said, less generic?"),
    Criterion("Action", "text", "Which reply offers more helpful suggestions or next steps?"),
    Criterion("Empathy", "text", "Overall, which reply is more empathetic?"),
)
SPEECH_CRITERIA = (
    Criterion("DMOS-Q", "speech", "Speech quality: which reply sounds clearer and more natural?"),
    Criterion("DMOS-C", "speech",
              "Context consistency: which voice and tone fit the conversation better?"),
    Criterion("DMOS-E", "speech",
              "Emotional expressiveness: which reply sounds more emotionally expressive?"),
)
DEFAULT_CRITERIA = TEXT_CRITERIA + SPEECH_CRITERIA
KNOWN_CRITERIA = {criterion.name: criterion for criterion in DEFAULT_CRITERIA}


def criteria_by_name(names: Sequence[str]) -> tuple[Criterion, ...]:
    """Look criteria up by the paper's names; unknown names are an error listing the known ones."""
    unknown = [name for name in names if name not in KNOWN_CRITERIA]
    if unknown:
        raise ValueError(f"unknown criteria {unknown}; choose from {list(KNOWN_CRITERIA)}")
    if len(set(names)) != len(names):
        raise ValueError(f"criteria listed twice in {list(names)}")
    return tuple(KNOWN_CRITERIA[name] for name in names)


def annotator_seed(study_seed: int, slot: int) -> int:
    """The seed that orders one annotator's items: reproducible from the study seed and the
    annotator's arrival slot, and independent between slots."""
    return int(np.random.SeedSequence([study_seed, slot]).generate_state(SEED_WORDS)[0])


def balanced_coins(count: int, seed: int) -> list[bool]:
    """`count` side coins, exactly half (rounded down) True, in a seeded random order."""
    coins = [index < count // 2 for index in range(count)]
    random.Random(seed).shuffle(coins)
    return coins


def pick_samples(sample_ids: Sequence[str], count: int, seed: int) -> list[str]:
    """A seeded random subset of `count` samples, kept in input order."""
    if count < 1:
        raise ValueError(f"asked for {count} samples; --samples must be at least 1")
    if count > len(sample_ids):
        raise ValueError(f"asked for {count} samples but the pairs file holds {len(sample_ids)}; "
                         f"lower --samples or add samples")
    chosen = set(random.Random(seed).sample(list(sample_ids), count))
    return [sample_id for sample_id in sample_ids if sample_id in chosen]


@dataclass(frozen=True)
class ItemLoad:
    item_id: int
    coin: bool  # the study-level side coin of this item
    assigned: int  # annotators already given this item
    is_gold: bool


@dataclass(frozen=True)
class Assignment:
    position: int  # 0-based place in this annotator's sequence
    item_id: int
    system_a: str  # shown as "A" (the blinding key: never leaves the server)
    system_b: str


def plan_annotator(items: Sequence[ItemLoad], systems: tuple[str, str], per_item: int,
                   per_annotator: int, seed: int) -> list[Assignment]:
    """One newcomer's items: the least-covered regular items that still need annotators
    (at most `per_annotator`), plus every gold item, shuffled by the annotator's seed.

    Returns an empty list when every regular item already has `per_annotator` annotators."""
    rng = random.Random(seed)
    open_items = [item for item in items if not item.is_gold and item.assigned < per_item]
    tiebreak = {item.item_id: rng.random() for item in open_items}
    open_items.sort(key=lambda item: (item.assigned, tiebreak[item.item_id]))
    chosen = open_items[:per_annotator]
    if not chosen:
        return []
    chosen += [item for item in items if item.is_gold]
    rng.shuffle(chosen)
    plan = []
    for position, item in enumerate(chosen):
        flipped = item.coin != bool(item.assigned % 2)
        first, second = (systems[1], systems[0]) if flipped else systems
        plan.append(Assignment(position, item.item_id, first, second))
    return plan


def to_systems(choice: str, system_a: str, systems: tuple[str, str]) -> str:
    """Turn an answer about reply A over reply B into one about systems[0] over systems[1]."""
    return choice if system_a == systems[0] else FLIP_CHOICE[choice]
