"""Replace the response of every row of a spoken-corpus manifest with the affect-aware
teacher's reply (es4r/data/teacher.py); the human line stays in `human_response`.

    python scripts/make_teacher_targets.py corpus/train.jsonl corpus/train_teacher.jsonl
    python scripts/make_teacher_targets.py corpus/heldout.jsonl corpus/heldout_teacher.jsonl
    python scripts/make_teacher_targets.py corpus/train.jsonl corpus/train_teacher.jsonl --redo-echoes

`--max-sentences 1` cuts every target after its first sentence (greedy decoding writes the same
first sentence either way), where the affect shows most (assets/TRAINING_CPU.md). `--redo-echoes` regenerates, in place, the rows whose reply recites the system prompt (or was
rejected for it), with the prompt's wording banned (es4r.data.teacher.prompt_ban). Resumable: rows already in the output (same conversation, turn and variant) are kept, so a
stopped run continues where it was. Audio paths are rewritten relative to the output file."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from es4r.config import PRESETS  # noqa: E402

from es4r.data.manifest import load_manifest, sample_key  # noqa: E402

logger = logging.getLogger("make_teacher_targets")


def _key(row: dict) -> str:
    return sample_key(row["conversation_id"], row.get("turn_id", 0), row.get("variant"))


def _recheck(out: Path) -> int:
    """Targets written before a check existed: rows whose reply recites the system prompt go
    back to the human line (teacher.failed), in place."""
    from es4r.config import GenerationConfig
    from es4r.data.teacher import echoes_prompt

    prompt, rejected, rows = GenerationConfig().system_prompt, 0, []
    for line in out.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        reply = row["response"]["utterance"]
        if not row.get("teacher", {}).get("failed") and echoes_prompt(reply, prompt):
            row = _with_target(row, reply, row.get("teacher", {}), prompt)
            rejected += 1
        rows.append(json.dumps(row))
    out.write_text("\n".join(rows) + "\n")
    logger.info("%s: %d of %d rows rejected (the teacher recited its prompt)", out, rejected, len(rows))
    return 0


def _generation(model, max_sentences: int | None):
    """The app's decoding settings, with the targets cut after `max_sentences` when given."""
    from dataclasses import replace

    generation = model.config.generation
    if max_sentences is None:
        return generation
    if max_sentences < 1:
        raise SystemExit(f"--max-sentences must be at least 1, not {max_sentences}")
    return replace(generation, max_sentences=max_sentences)


def _teacher_card(model, batch_size: int, banned: bool = False, generation=None) -> dict:
    """How the targets were made; `batch_size` matters: left padding changes greedy replies."""
    generation = generation or model.config.generation
    card = {"system": "ES4R text path + affect hint after the history", "llm": model.config.backbones.llm
            and Path(model.config.backbones.llm).name, "generation": "greedy, as the app",
            "max_sentences": generation.max_sentences, "batch_size": batch_size}
    if model.config.backbones.reply_adapter:  # the reply-tuned LLM (assets/REPLY_TUNING.md) writes other replies
        card["reply_adapter"] = Path(model.config.backbones.reply_adapter).name
    return dict(card, generation=card["generation"] + ", system prompt's wording banned") if banned else card


def _with_target(row: dict, reply: str, teacher: dict, system_prompt: str) -> dict:
    """The row with the teacher's reply as its target, or, when the reply is unusable (nothing
    speakable, or the instructions recited), the human line kept and the rejection recorded."""
    from es4r.data.teacher import echoes_prompt

    human = row.get("human_response", row["response"]["utterance"])
    if not any(ch.isalpha() for ch in reply) or echoes_prompt(reply, system_prompt):
        logger.warning("%s: unusable teacher reply (%r); the human reply stays the target", _key(row), reply)
        return dict(row, human_response=human, response={"utterance": human}, teacher=dict(teacher, failed=True, rejected=reply))
    return dict(row, human_response=human, response={"utterance": reply}, teacher=teacher)


def _redo_echoes(args: argparse.Namespace, samples: dict) -> int:
    """Regenerate, in place, the rows of `args.out` whose reply recites the system prompt."""
    from es4r.data.teacher import echoes_prompt, hinted_replies
    from es4r.presets import load_model, resolve_config

    out_rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    model = load_model(resolve_config(args.preset))
    system_prompt = model.config.generation.system_prompt
    redo = [i for i, row in enumerate(out_rows) if row.get("teacher", {}).get("failed")
            or echoes_prompt(row["response"]["utterance"], system_prompt)]
    missing = [_key(out_rows[i]) for i in redo if _key(out_rows[i]) not in samples]
    if missing:
        raise SystemExit(f"{len(missing)} rows of {args.out} are not in {args.manifest} (first: {missing[0]})")
    logger.info("%s: %d of %d rows recite the system prompt; regenerating them with it banned",
                args.out, len(redo), len(out_rows))
    generation = _generation(model, args.max_sentences)
    replies = hinted_replies(model, [samples[_key(out_rows[i])] for i in redo], args.batch_size, ban_prompt=True,
                             generation=generation)
    teacher = _teacher_card(model, args.batch_size, banned=True, generation=generation)
    for i, reply in zip(redo, replies):
        out_rows[i] = _with_target(out_rows[i], reply, teacher, system_prompt)
    still = sum(bool(out_rows[i].get("teacher", {}).get("failed")) for i in redo)
    args.out.write_text("".join(json.dumps(row) + "\n" for row in out_rows))
    logger.info("%s: %d regenerated, %d still unusable (human line kept)", args.out, len(redo) - still, still)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", type=Path, help="input manifest (rows with affect_hint)")
    parser.add_argument("out", type=Path, help="output manifest (appended to; resumable)")
    parser.add_argument("--preset", default="embedded", choices=PRESETS)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-sentences", type=int,
                        help="cut each target after this many sentences (default: the app's, GenerationConfig.max_sentences)")
    parser.add_argument("--limit", type=int, help="only the first N rows")
    parser.add_argument("--recheck", action="store_true",
                        help="only re-apply the reply checks to the rows already in OUT (no model is loaded)")
    parser.add_argument("--redo-echoes", action="store_true",
                        help="regenerate the rows of OUT whose reply recites the system prompt, with it banned")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ["ES4R_CHECKPOINT"] = "none"  # the teacher is the text path: no ES4R parts involved

    from dataclasses import replace

    from es4r.data.corpus import affect_hint
    from es4r.data.teacher import hinted_replies
    from es4r.presets import load_model, resolve_config

    if args.recheck:
        return _recheck(args.out)
    rows = [json.loads(line) for line in args.manifest.read_text().splitlines() if line.strip()][: args.limit]
    # The hint of the current AFFECT_HINTS, written into the output: training's teacher reads it from there.
    rows = [dict(row, affect_hint=affect_hint(row["variant"])) if row.get("variant") else row for row in rows]
    samples = [replace(sample, affect_hint=row.get("affect_hint"))
               for sample, row in zip(load_manifest(args.manifest)[: args.limit], rows)]
    done = set()
    if args.out.exists():
        done = {_key(json.loads(line)) for line in args.out.read_text().splitlines() if line.strip()}
    if args.redo_echoes:
        return _redo_echoes(args, dict(zip(map(_key, rows), samples)))
    todo = [(row, sample) for row, sample in zip(rows, samples) if _key(row) not in done]
    logger.info("%d rows, %d already done, %d to go", len(rows), len(done), len(todo))
    if not todo:
        return 0
    model = load_model(resolve_config(args.preset))
    system_prompt = model.config.generation.system_prompt
    generation = _generation(model, args.max_sentences)
    teacher = _teacher_card(model, args.batch_size, generation=generation)
    rebase = os.path.relpath(args.manifest.parent.resolve(), args.out.parent.resolve())
    started = time.monotonic()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a", encoding="utf-8") as handle:
        for start in range(0, len(todo), args.batch_size * 4):
            chunk = todo[start : start + args.batch_size * 4]
            replies = hinted_replies(model, [s for _, s in chunk], args.batch_size, generation=generation)
            for (row, _), reply in zip(chunk, replies):
                row = _with_target(row, reply, teacher, system_prompt)
                for turn in row["dialogue_history"]:
                    if turn.get("audio_path") and rebase != ".":
                        turn["audio_path"] = os.path.normpath(os.path.join(rebase, turn["audio_path"]))
                handle.write(json.dumps(row) + "\n")
            handle.flush()
            logger.info("%d / %d rows in %.0f s", start + len(chunk), len(todo), time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
