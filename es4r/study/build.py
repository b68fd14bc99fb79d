"""Creating a study: an evaluation's per-sample outputs (es4r.evaluation.run) become a study
database, with `samples` of them picked (plus every gold sample) and every clip
loudness-normalised (es4r.study.stimuli)."""

from __future__ import annotations

import logging
import math
import secrets
from pathlib import Path

from es4r.study.design import Criterion, balanced_coins, pick_samples
from es4r.study.stimuli import (TARGET_LUFS, common_target, load_pairs, measure_clip, normalise_clip,
                                reachable_lufs)
from es4r.study.store import ORGANISER_CODE_BYTES, NewItem, StudyError, StudySpec, StudyStore, stimuli_dir_for

logger = logging.getLogger(__name__)


LEVEL_FLOOR_LU = 8.0  # a study levelled this far under its target is refused: the clip holding it down is at fault


def _too_quiet(levels: dict, target_lufs: float, levelled: float) -> str:
    """Why a study would play too quietly: the clips whose peaks hold every clip more than
    LEVEL_FLOOR_LU under the target (a click, a clipped burst), and the two ways out."""
    worst = sorted(levels.items(), key=lambda item: reachable_lufs(item[1]))
    named = [f"{path} (peak {20 * math.log10(level.peak):.1f} dBFS at {level.lufs:.1f} LUFS)"
             for path, level in worst if reachable_lufs(level) < target_lufs - LEVEL_FLOOR_LU][:3]
    accept = math.floor(levelled)
    return (f"every clip would play at {levelled:.1f} LUFS, more than {LEVEL_FLOOR_LU:.0f} LU under the "
            f"{target_lufs:.1f} LUFS target, because of a peak far above its speech in: {'; '.join(named)}. "
            f"Fix or replace that clip, or accept the lower level for all clips with --target-lufs {accept}")


def build_study(pairs_dir: str | Path, db_path: str | Path, systems: tuple[str, str],
                criteria: tuple[Criterion, ...], samples: int, per_item: int,
                per_annotator: int | None = None, seed: int = 0,
                target_lufs: float = TARGET_LUFS, title: str = "Listening study") -> StudyStore:
    """Create a study from the evaluate command's per-sample outputs: pick `samples` of
    them (plus every gold sample), loudness-normalise every clip, and write the database."""
    if Path(db_path).exists():
        raise StudyError(f"{db_path} already exists; choose another --out or delete it")
    if not title.strip() or any(name.lower() in title.lower() for name in systems):
        raise StudyError(f"--title {title!r} must be non-empty and name neither system (participants see it)")
    if len(set(systems)) != 2:
        raise StudyError(f"--systems needs two different names, found {list(systems)}")
    pairs = load_pairs(pairs_dir)
    for pair in pairs:
        missing = [name for name in systems if name not in pair.replies]
        if missing:
            raise StudyError(f"{Path(pairs_dir) / 'samples.jsonl'}:{pair.line}: no reply from "
                             f"{missing}; this sample has {sorted(pair.replies)}")
        unknown = sorted(set(pair.gold or {}) - {c.name for c in criteria})
        if unknown:
            raise StudyError(f"{Path(pairs_dir) / 'samples.jsonl'}:{pair.line}: gold answers for "
                             f"{unknown}, which are not criteria of this study")
    regular = [pair.sample_id for pair in pairs if pair.gold is None]
    chosen = set(pick_samples(regular, samples, seed)) | {p.sample_id for p in pairs if p.gold}
    if per_item < 1:
        raise StudyError(f"--annotators-per-item must be at least 1, found {per_item}")
    if per_annotator is not None and per_annotator < 1:  # 0 used to mean "all" and -1 "all but one"
        raise StudyError(f"--items-per-annotator must be at least 1 (or left out for all items), found {per_annotator}")
    stimuli = stimuli_dir_for(db_path)
    kept = [pair for pair in pairs if pair.sample_id in chosen]
    coins = balanced_coins(len(kept), seed)
    sources = {turn.audio_path for pair in kept for turn in pair.context if turn.audio_path} | \
        {pair.replies[name].audio_path for pair in kept for name in systems}
    levels = {path: measure_clip(path) for path in sorted(sources)}
    levelled = common_target(list(levels.values()), target_lufs)
    if levelled < target_lufs - LEVEL_FLOOR_LU:
        raise StudyError(_too_quiet(levels, target_lufs, levelled))
    if levelled < target_lufs - 0.05:
        logger.warning("a clip would pass the -1 dBFS peak ceiling at %.1f LUFS; every clip is levelled "
                       "to %.1f LUFS instead, so all stay equally loud and none is limited", target_lufs, levelled)
    target_lufs = math.floor(levelled * 100) / 100  # never above what every clip can reach

    def normalised(path: Path | None) -> str | None:
        return None if path is None else normalise_clip(path, stimuli, target_lufs).path.name

    def reply(path: Path, text: str) -> dict:
        clip = normalise_clip(path, stimuli, target_lufs)
        return {"text": text, "audio": clip.path.name, "seconds": clip.seconds}

    items = [NewItem(pair.sample_id,
                     [{"role": t.role, "utterance": t.utterance, "audio": normalised(t.audio_path),
                      "recognised": t.recognised}
                      for t in pair.context],
                     {name: reply(pair.replies[name].audio_path, pair.replies[name].text)
                      for name in systems},
                     pair.gold, coin)
             for pair, coin in zip(kept, coins)]
    spec = StudySpec(tuple(systems), tuple(criteria), per_item, per_annotator or samples, seed,
                     target_lufs, secrets.token_urlsafe(ORGANISER_CODE_BYTES),
                     str(Path(pairs_dir).resolve()), title)
    logger.info("study %s: %d items (%d gold), %d stimuli normalised to %.1f LUFS", db_path,
                len(items), sum(p.gold is not None for p in kept), len(list(stimuli.glob("*.wav"))),
                target_lufs)
    return StudyStore.create(db_path, spec, items)
