"""The card of a built spoken corpus (OUT/card.json, summarised in assets/DATA_CARD.md): what
was built, and whether the rendered rows follow their planned loudness and pace."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from es4r.data.corpus_source import INSTALL_HINT, SOURCE_LICENCE, SOURCE_NAME, SOURCE_URL
from es4r.voice.strategy import select_strategy


@dataclass(frozen=True)
class CorpusCard:
    """What was built: written to OUT/card.json and summarised in assets/DATA_CARD.md."""

    out_dir: str
    seed: int
    counts: dict  # split -> rows (three per conversation)
    conversations: dict  # split -> conversations
    seconds: dict  # split -> speaker audio over all rows {total, turn_*, sample_*}, listener audio
    # over conversations {listener_total, listener_turn_*}, and history_mean / history_max per row
    voices: dict  # speaker voice name -> conversations
    listener_voices: dict  # listener voice name -> conversations
    plans: dict  # split -> {plan: rows}
    strategies: dict  # split -> {strategy chosen on measured energies: rows}
    plan_followed: float  # share of falling/rising rows whose energies move as planned
    pace_followed: float  # share of falling/rising rows whose seconds per character, relative to
    # the flat row's same turn, move as planned
    pace_followed_raw: float  # the same on plain seconds per character (different texts per turn)
    rejected: dict  # reason -> conversations skipped
    build_seconds: float
    source: dict
    settings: dict  # the limits and voice ranges the build used


def _moves_as_planned(values: list[float], plan: str, sign: float = 1.0) -> bool:
    """Whether `values` move strictly in the plan's direction (times `sign`); flat: always."""
    steps = sign * np.diff(values)
    return bool({"falling": np.all(steps < 0), "rising": np.all(steps > 0)}.get(plan, True))


def plan_followed(row: dict) -> bool:
    """Whether measured energies move as planned (strictly, turn to turn)."""
    return _moves_as_planned(row["energies"], row["energy_plan"])


def pace_followed(row: dict, raw: bool = False) -> bool:
    """Whether measured pace moves as planned: falling turns take strictly more time per
    character each turn, rising less. By default per character of the flat row's same turn
    (`pace_vs_flat`, the same text, so only the plan's factor is left); `raw` uses plain
    seconds per character, where different texts per turn add their own noise."""
    return _moves_as_planned(row["seconds_per_char" if raw else "pace_vs_flat"], row["energy_plan"], sign=-1.0)


def _stats(values: list[float], prefix: str) -> dict:
    values = values or [0.0]
    return {f"{prefix}mean": round(float(np.mean(values)), 2), f"{prefix}min": round(min(values), 2),
            f"{prefix}max": round(max(values), 2)}


def describe_corpus(out_dir: Path, seed: int, rows: dict[str, list[dict]], rejected: Counter, elapsed: float,
                    settings: dict) -> CorpusCard:
    """The card of a finished build: counts, seconds, voices, plans and how well they were followed."""
    seconds, plans, strategies, conversations = {}, {}, {}, {}
    voices: Counter = Counter()
    listener_voices: Counter = Counter()
    for split, split_rows in rows.items():
        firsts = list({row["conversation_id"]: row for row in split_rows}.values())  # one row per conversation
        conversations[split] = len(firsts)
        turn_seconds = [s for row in split_rows for s in row["seconds"]]
        sample_seconds = [sum(row["seconds"]) for row in split_rows]
        listener_seconds = [s for row in firsts for s in row["listener_seconds"]]
        history_seconds = [sum(row["seconds"]) + sum(row["listener_seconds"]) for row in split_rows] or [0.0]
        seconds[split] = {"total": round(sum(turn_seconds), 1), **_stats(turn_seconds, "turn_"),
                          "sample_mean": round(float(np.mean(sample_seconds or [0.0])), 2),
                          "sample_max": round(max(sample_seconds or [0.0]), 2),
                          "listener_total": round(sum(listener_seconds), 1), **_stats(listener_seconds, "listener_turn_"),
                          "history_mean": round(float(np.mean(history_seconds)), 2),
                          "history_max": round(max(history_seconds), 2)}
        plans[split] = dict(Counter(row["energy_plan"] for row in split_rows))
        strategies[split] = dict(Counter(select_strategy(row["energies"]).name for row in split_rows))
        voices.update(row["voice"] for row in firsts)
        listener_voices.update(row["listener_voice"] for row in firsts)
    directed = [row for split_rows in rows.values() for row in split_rows if row["energy_plan"] != "flat"]

    def share(followed) -> float:
        return float(np.mean([followed(row) for row in directed])) if directed else 1.0

    return CorpusCard(
        out_dir=str(out_dir), seed=seed, counts={split: len(r) for split, r in rows.items()},
        conversations=conversations, seconds=seconds, voices=dict(voices), listener_voices=dict(listener_voices),
        plans=plans, strategies=strategies, plan_followed=share(plan_followed), pace_followed=share(pace_followed),
        pace_followed_raw=share(lambda row: pace_followed(row, raw=True)), rejected=dict(rejected),
        build_seconds=round(elapsed, 1),
        source={"name": SOURCE_NAME, "licence": SOURCE_LICENCE, "url": SOURCE_URL, "install": INSTALL_HINT},
        settings=settings,
    )
