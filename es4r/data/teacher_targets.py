"""A spoken-corpus manifest with the affect-aware teacher's replies as its targets
(`python -m es4r teacher-targets`; the teacher: es4r/data/teacher.py). Each row keeps the
human line in `human_response`; a teacher reply that is unusable (nothing speakable, or the
system prompt recited) leaves the human line the target and is recorded as rejected.

Resumable: rows already in the output (same conversation, turn and variant) are kept, so a
stopped run continues where it was. Audio paths are rewritten relative to the output file.
The teacher is loaded only when there is a reply to write (`load_teacher`, given by the
caller: the data layer loads no model of its own)."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from es4r.config import GenerationConfig
from es4r.data.corpus import affect_hint
from es4r.data.manifest import Sample, load_manifest, sample_key
from es4r.data.teacher import echoes_prompt, hinted_replies

logger = logging.getLogger(__name__)
CHUNK_BATCHES = 4  # batches written and flushed together: a stopped run loses at most these


def row_key(row: dict) -> str:
    return sample_key(row["conversation_id"], row.get("turn_id", 0), row.get("variant"))


def _read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def capped_generation(generation: GenerationConfig, max_sentences: int | None) -> GenerationConfig:
    """The app's decoding settings, with the targets cut after `max_sentences` when given
    (greedy decoding writes the same first sentence either way)."""
    if max_sentences is None:
        return generation
    if max_sentences < 1:
        raise ValueError(f"--max-sentences must be at least 1, not {max_sentences}")
    return replace(generation, max_sentences=max_sentences)


def teacher_card(model, batch_size: int, banned: bool = False, generation: GenerationConfig | None = None) -> dict:
    """How the targets were made; `batch_size` matters: left padding changes greedy replies."""
    generation = generation or model.config.generation
    card = {"system": "ES4R text path + affect hint after the history", "llm": model.config.backbones.llm
            and Path(model.config.backbones.llm).name, "generation": "greedy, as the app",
            "max_sentences": generation.max_sentences, "batch_size": batch_size}
    if model.config.backbones.reply_adapter:  # the reply-tuned LLM (assets/REPLY_TUNING.md) writes other replies
        card["reply_adapter"] = Path(model.config.backbones.reply_adapter).name
    return dict(card, generation=card["generation"] + ", system prompt's wording banned") if banned else card


def with_target(row: dict, reply: str, teacher: dict, system_prompt: str) -> dict:
    """The row with the teacher's reply as its target, or, when the reply is unusable (nothing
    speakable, or the instructions recited), the human line kept and the rejection recorded."""
    human = row.get("human_response", row["response"]["utterance"])
    if not any(ch.isalpha() for ch in reply) or echoes_prompt(reply, system_prompt):
        logger.warning("%s: unusable teacher reply (%r); the human reply stays the target", row_key(row), reply)
        return dict(row, human_response=human, response={"utterance": human}, teacher=dict(teacher, failed=True, rejected=reply))
    return dict(row, human_response=human, response={"utterance": reply}, teacher=teacher)


def recheck(out: Path) -> tuple[int, int]:
    """Targets written before a check existed: rows whose reply recites the system prompt go
    back to the human line (teacher.failed), in place. Returns (rejected, rows)."""
    prompt, rejected, rows = GenerationConfig().system_prompt, 0, []
    for row in _read_rows(out):
        reply = row["response"]["utterance"]
        if not row.get("teacher", {}).get("failed") and echoes_prompt(reply, prompt):
            row = with_target(row, reply, row.get("teacher", {}), prompt)
            rejected += 1
        rows.append(json.dumps(row))
    Path(out).write_text("\n".join(rows) + "\n")
    logger.info("%s: %d of %d rows rejected (the teacher recited its prompt)", out, rejected, len(rows))
    return rejected, len(rows)


def hinted_samples(manifest: Path, limit: int | None = None) -> tuple[list[dict], list[Sample]]:
    """The manifest's rows (the first `limit`) with the current affect hint of their variant
    written in (training's teacher reads it from the output), and their samples."""
    rows = _read_rows(manifest)[:limit]
    rows = [dict(row, affect_hint=affect_hint(row["variant"])) if row.get("variant") else row for row in rows]
    samples = [replace(sample, affect_hint=row.get("affect_hint"))
               for sample, row in zip(load_manifest(manifest)[:limit], rows)]
    return rows, samples


def write_targets(manifest: Path, out: Path, load_teacher: Callable, batch_size: int = 8,
                  max_sentences: int | None = None, limit: int | None = None) -> int:
    """Append the teacher's target of every row of `manifest` not yet in `out`; returns how
    many rows were written."""
    rows, samples = hinted_samples(manifest, limit)
    done = {row_key(row) for row in _read_rows(out)} if Path(out).exists() else set()
    todo = [(row, sample) for row, sample in zip(rows, samples) if row_key(row) not in done]
    logger.info("%d rows, %d already done, %d to go", len(rows), len(done), len(todo))
    if not todo:
        return 0
    model = load_teacher()
    system_prompt = model.config.generation.system_prompt
    generation = capped_generation(model.config.generation, max_sentences)
    teacher = teacher_card(model, batch_size, generation=generation)
    rebase = os.path.relpath(Path(manifest).parent.resolve(), Path(out).parent.resolve())
    started = time.monotonic()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with Path(out).open("a", encoding="utf-8") as handle:
        for start in range(0, len(todo), batch_size * CHUNK_BATCHES):
            chunk = todo[start : start + batch_size * CHUNK_BATCHES]
            replies = hinted_replies(model, [s for _, s in chunk], batch_size, generation=generation)
            for (row, _), reply in zip(chunk, replies):
                row = with_target(row, reply, teacher, system_prompt)
                for turn in row["dialogue_history"]:
                    if turn.get("audio_path") and rebase != ".":
                        turn["audio_path"] = os.path.normpath(os.path.join(rebase, turn["audio_path"]))
                handle.write(json.dumps(row) + "\n")
            handle.flush()
            logger.info("%d / %d rows in %.0f s", start + len(chunk), len(todo), time.monotonic() - started)
    return len(todo)


def redo_echoes(manifest: Path, out: Path, load_teacher: Callable, batch_size: int = 8,
                max_sentences: int | None = None, limit: int | None = None) -> tuple[int, int]:
    """Regenerate, in place, the rows of `out` whose reply recites the system prompt (or was
    rejected), with the prompt's wording banned (es4r.data.teacher.prompt_ban). Returns
    (regenerated, still unusable)."""
    rows, samples = hinted_samples(manifest, limit)
    by_key = dict(zip(map(row_key, rows), samples))
    out_rows = _read_rows(out)
    model = load_teacher()
    system_prompt = model.config.generation.system_prompt
    redo = [i for i, row in enumerate(out_rows) if row.get("teacher", {}).get("failed")
            or echoes_prompt(row["response"]["utterance"], system_prompt)]
    missing = [row_key(out_rows[i]) for i in redo if row_key(out_rows[i]) not in by_key]
    if missing:
        raise ValueError(f"{len(missing)} rows of {out} are not in {manifest} (first: {missing[0]})")
    logger.info("%s: %d of %d rows recite the system prompt; regenerating them with it banned",
                out, len(redo), len(out_rows))
    generation = capped_generation(model.config.generation, max_sentences)
    replies = hinted_replies(model, [by_key[row_key(out_rows[i])] for i in redo], batch_size, ban_prompt=True,
                             generation=generation)
    teacher = teacher_card(model, batch_size, banned=True, generation=generation)
    for i, reply in zip(redo, replies):
        out_rows[i] = with_target(out_rows[i], reply, teacher, system_prompt)
    still = sum(bool(out_rows[i].get("teacher", {}).get("failed")) for i in redo)
    Path(out).write_text("".join(json.dumps(row) + "\n" for row in out_rows))
    logger.info("%s: %d regenerated, %d still unusable (human line kept)", out, len(redo) - still, still)
    return len(redo) - still, still
