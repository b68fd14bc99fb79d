"""`python -m es4r evaluate`: every requested system answers every manifest sample; the
paper's metrics (and optionally the LLM judge) are computed per system; per-sample text
and audio are written in the layout the A/B study reads (samples.jsonl, see
es4r/study/stimuli.py)."""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from es4r.audio import load_audio
from es4r.conversation import ASSISTANT, Conversation, Turn
from es4r.data.manifest import SPEAKER, Sample, load_manifest

logger = logging.getLogger(__name__)

METRIC_COLUMNS = ("bleu1", "bleu2", "bleu3", "bleu4", "rouge1", "rouge2", "rougeL", "bertscore", "dist1", "dist2")


@dataclass(frozen=True)
class EvaluationOutput:
    table: dict[str, dict]  # system -> metric -> value
    samples_file: Path
    markdown: Path
    csv: Path


def _conversation(pipeline, sample: Sample, use_manifest_transcripts: bool) -> Conversation:
    conversation = Conversation()
    for turn in sample.history:
        if turn.role == SPEAKER:
            transcript = turn.utterance if use_manifest_transcripts else None
            conversation = pipeline.add_user_turn(conversation, turn.audio_path, transcript)
        elif turn.audio_path is not None:  # a spoken listener turn is heard on the speech path too
            wave = load_audio(turn.audio_path, pipeline.config.audio)
            conversation = conversation.with_turn(Turn(ASSISTANT, turn.utterance, wave.samples,
                                                       pipeline.config.audio.sample_rate))
        else:
            conversation = conversation.with_turn(Turn(ASSISTANT, turn.utterance))
    return conversation


def evaluate(pipeline, manifest: str | Path, systems: list[str], out: str | Path, limit: int | None = None,
             use_manifest_transcripts: bool = False, bertscore_model: str | None = "auto",
             judge=None) -> EvaluationOutput:
    from es4r.evaluation.metrics import corpus_metrics
    from es4r.evaluation.valence import top_opening
    from es4r.systems import cascade_respond, check_systems, system_variant

    check_systems(systems, pipeline)
    out = Path(out)
    (out / "context").mkdir(parents=True, exist_ok=True)
    samples = load_manifest(manifest)[:limit]
    replies: dict[str, list[str]] = {name: [] for name in systems}
    rows = []
    for number, sample in enumerate(samples):
        sample_id = f"{sample.conversation_id}-{sample.turn_id}" + (f"-{sample.variant}" if sample.variant else "")
        conversation = _conversation(pipeline, sample, use_manifest_transcripts)
        context, user_index = [], 0
        for turn, said in zip(conversation.turns, sample.history):
            # The listening study shows what was said: the manifest's words; the recogniser's
            # only where the manifest has none, and then marked so the page can say it.
            words = (said.utterance or "").strip()
            entry = {"role": "speaker" if turn.role != ASSISTANT else "listener", "utterance": words or turn.text}
            if not words:
                entry["recognised"] = True
            if turn.audio is not None:
                path = out / "context" / f"{sample_id}_{user_index}.wav"
                sf.write(path, turn.audio, turn.sample_rate)
                entry["audio_path"] = str(path.relative_to(out))
                user_index += 1
            context.append(entry)
        row = {"sample_id": sample_id, "context": context, "reference": sample.response, "systems": {}}
        for name in systems:
            if name == "cascade":
                result = cascade_respond(pipeline, conversation)
                extra = {}
            else:
                result = system_variant(pipeline, name).respond(conversation)
                extra = {"strategy": result.strategy, "path": result.path}
            audio_path = out / name / f"{sample_id}.wav"
            audio_path.parent.mkdir(exist_ok=True)
            sf.write(audio_path, result.reply_audio, result.sample_rate)
            row["systems"][name] = {"text": result.reply_text, "audio_path": str(audio_path.relative_to(out)), **extra}
            replies[name].append(result.reply_text)
        rows.append(row)
        logger.info("evaluated %d/%d (%s)", number + 1, len(samples), sample_id)
    samples_file = out / "samples.jsonl"
    samples_file.write_text("".join(json.dumps(r) + "\n" for r in rows))

    references = [s.response for s in samples]
    table: dict[str, dict] = {}
    for name in systems:
        report = corpus_metrics(replies[name], references, bertscore_model=bertscore_model)
        table[name] = {k: report.as_dict().get(k) for k in METRIC_COLUMNS}
        table[name]["n"] = report.n
        table[name]["top_opening"], table[name]["top_opening_share"] = top_opening(replies[name])
        if judge is not None:
            from es4r.evaluation.judge import JudgeSample, judge_samples, summarise

            judged = [JudgeSample.from_history(r["sample_id"], r["context"], r["systems"][name]["text"]) for r in rows]
            records = judge_samples(judged, judge)
            (out / f"judge_{name}.jsonl").write_text(
                "".join(json.dumps(rec.__dict__, default=str) + "\n" for rec in records))
            summary = summarise(records)
            for criterion, values in summary.as_dict().items():
                table[name][f"judge_{criterion}"] = values.get("mean")
            table[name]["judge_failures"] = summary.n_failed
    columns = list(next(iter(table.values())).keys())
    csv_path, md_path = out / "results.csv", out / "results.md"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["system", *columns])
        for name, values in table.items():
            writer.writerow([name, *(values[c] for c in columns)])
    fmt = lambda v: "—" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| system | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(fmt(v[c]) for c in columns) + " |" for name, v in table.items()]
    md_path.write_text(f"Evaluation of {manifest} ({len(samples)} samples)\n\n" + "\n".join(lines) + "\n")
    return EvaluationOutput(table, samples_file, md_path, csv_path)
