"""`python -m es4r bench`: what each stage costs, ES4R against the cascade of the same
backbones in the same run, and how cost grows with history length. Every figure is the
median of several runs after a warm-up, each run another dialogue of the bundled LibriVox clips
(real speech, in rotated order)."""

from __future__ import annotations

import json
import logging
import resource
import statistics
import time
from dataclasses import dataclass, replace
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Callable

from es4r.audio import load_audio
from es4r.conversation import ASSISTANT, ENCODER_PARTS, STAGE_ORDER, Conversation, Turn

logger = logging.getLogger(__name__)

CLIP_DIR = Path(__file__).resolve().parent.parent / "tests" / "data"
# The app's stages in the pipeline's order, the ES4R encoder split into its parts (the bench
# runs on transcribed turns, so ASR is timed apart).
STAGES = tuple(part for stage in STAGE_ORDER if stage != "asr"
               for part in (ENCODER_PARTS if stage == "es4r_encoder" else (stage,)))


@dataclass(frozen=True)
class BenchRow:
    turns: int
    asr_s: float  # transcribing the newest turn
    es4r_s: float  # respond(): stages 1-3
    cascade_s: float  # LLM + TTS of the cascade (ASR shared)
    ratio: float  # (asr + es4r) / (asr + cascade)
    to_text_s: float  # end of recording -> reply text (ASR + everything before TTS)
    to_audio_s: float  # end of recording -> reply audio
    stages: dict[str, float]
    llm_tokens_per_s: float
    tts_rtf: float
    peak_rss_mb: float
    speech_path_s: float  # respond() through the speech path (S' from the speech)
    text_path_s: float  # respond() through the text path (transcripts), same conversation
    speech_tokens: int  # reply tokens of each path: LLM time follows reply length
    text_tokens: int
    speech_first_words_s: float = 0.0  # respond() start -> the first reply words, speech path
    text_first_words_s: float = 0.0  # the same on the text path (add the ASR time for the user's wait)
    speech_first_audio_s: float = 0.0  # respond() start -> the first reply sentence spoken, speech path
    text_first_audio_s: float = 0.0  # the same on the text path
    # The user's cascade (es4r/user_cascade.py) on the same conversations, from the end of the
    # recording (its own ASR included); None when its packages are not installed.
    cascade_first_text_s: float | None = None
    cascade_first_audio_s: float | None = None
    cascade_total_s: float | None = None
    cascade_tokens_per_s: float | None = None
    cascade_tokens: int | None = None
    # What each wrote in its repeat of median length (the token counts above are medians):
    # the whole-reply times follow the replies' lengths.
    speech_reply: str = ""
    text_reply: str = ""
    cascade_reply: str | None = None

    def waits(self, speech: bool) -> tuple[float, float, float]:
        """(first words, first audio, whole reply) from the end of the recording, on a path."""
        if speech:
            return (self.asr_s + self.speech_first_words_s, self.asr_s + self.speech_first_audio_s,
                    self.asr_s + self.speech_path_s)
        return self.asr_s + self.text_first_words_s, self.asr_s + self.text_first_audio_s, self.asr_s + self.text_path_s

    @property
    def path_ratio(self) -> float:
        """Speech path / text path time per turn."""
        return self.speech_path_s / max(self.text_path_s, 1e-9)

    @property
    def path_ratio_per_token(self) -> float:
        """The same per reply token: the two paths often answer at different lengths."""
        return (self.speech_path_s / max(self.speech_tokens, 1)) / max(self.text_path_s / max(self.text_tokens, 1), 1e-9)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


BENCH_REPLY = "I hear you. Tell me more."


def _conversation(pipeline, clips, turns: int, reply_audio=None) -> tuple[Conversation, float]:
    """A history of `turns` user turns with a spoken assistant reply between them (as in the
    app, where the assistant's replies are heard too); returns it and the ASR seconds of its
    newest turn."""
    conversation = Conversation()
    asr = 0.0
    for index in range(turns):
        start = time.perf_counter()
        conversation = pipeline.add_user_turn(conversation, clips[index % len(clips)])
        asr = time.perf_counter() - start
        if index < turns - 1:
            audio, rate = reply_audio if reply_audio else (None, None)
            conversation = conversation.with_turn(Turn(ASSISTANT, BENCH_REPLY, audio, rate))
    return conversation, asr


def _as_after_previous_turn(pipeline, conversation: Conversation) -> None:
    """Leave the text path's cache (es4r.modeling.prefix_cache) as a conversation leaves it:
    holding the prompt of the previous turn. (In the app it also holds the reply written
    then, which the next prompt does not share: the reply comes back as a history line.)
    Without this, every repeat of the same conversation would find its whole prompt cached."""
    generation = replace(pipeline.config.generation, max_new_tokens=1)
    pipeline.model.prefix_cache.clear()
    pipeline.model.generate(conversation.history()[:-2], None, generation)


def _respond_on(pipeline, conversation: Conversation, speech: bool) -> tuple[float, int, float, float, str]:
    """respond() on the given path (a pipeline over the same model, the given one untouched),
    speaking each sentence as it is written, as the app does; returns (seconds, reply tokens,
    seconds to the first reply words, seconds to the first reply audio, the reply)."""
    path = pipeline.variant(speech_path=speech)
    first_words: list[float] = []
    first_audio: list[float] = []
    start = time.perf_counter()
    result = path.respond(conversation,
                          on_text=lambda text: first_words or first_words.append(time.perf_counter() - start),
                          on_audio=lambda rate, audio: first_audio or first_audio.append(time.perf_counter() - start))
    seconds = time.perf_counter() - start
    tokens = round(result.timings["llm"] * result.timings["llm_tokens_per_s"])
    return seconds, tokens, (first_words or [seconds])[0], (first_audio or [seconds])[0], result.reply_text


def run_bench(pipeline, history_lengths=(1, 3, 5, 8), repeats: int = 3, clips: list[Path] | None = None,
              user_cascade=None) -> list[BenchRow]:
    """The figures per history length. `user_cascade` (es4r.user_cascade.UserCascade), when
    given, answers the same conversations in the same run: the yardstick."""
    from es4r.systems import cascade_respond

    clips = [load_audio(p) for p in (clips or sorted(CLIP_DIR.glob("*.wav")))]
    spoken = pipeline.voice.synthesize(BENCH_REPLY, None, pipeline.config.strategy.table["neutral"], seed=0)
    reply_audio = (spoken.waveform, spoken.sample_rate)
    warm, _ = _conversation(pipeline, clips, 1)
    pipeline.respond(warm)
    cascade_respond(pipeline, warm)
    if user_cascade is not None:
        user_cascade.respond([], clips[0].samples)
    rows = []
    for turns in history_lengths:
        asr_runs, es4r_runs, cascade_runs, stage_runs, tps, rtf = [], [], [], [], [], []
        paths: dict[bool, list[tuple[float, int, float, float, str]]] = {True: [], False: []}
        yardstick = []
        for repeat in range(repeats):
            # Each repeat is another dialogue (the clips rotated): what a reply costs follows its
            # length, which one dialogue alone decides by chance.
            order = clips[repeat % len(clips):] + clips[:repeat % len(clips)]
            conversation, asr = _conversation(pipeline, order, turns, reply_audio)
            if user_cascade is not None:  # the same history; the newest recording transcribed by its own ASR
                user_cascade.as_after(conversation.history()[:-2])
                yardstick.append(user_cascade.respond(conversation.history()[:-1], order[(turns - 1) % len(order)].samples))
            for speech in (True, False):
                _as_after_previous_turn(pipeline, conversation)
                paths[speech].append(_respond_on(pipeline, conversation, speech))
            _as_after_previous_turn(pipeline, conversation)
            start = time.perf_counter()
            result = pipeline.respond(conversation)
            es4r_runs.append(time.perf_counter() - start)
            start = time.perf_counter()
            cascade_respond(pipeline, conversation)
            cascade_runs.append(time.perf_counter() - start)
            asr_runs.append(asr)
            stage_runs.append(result.timings)
            tps.append(result.timings.get("llm_tokens_per_s", 0.0))
            rtf.append(result.timings.get("tts_rtf", 0.0))
        asr, es4r, cascade = (statistics.median(v) for v in (asr_runs, es4r_runs, cascade_runs))
        stages = {s: statistics.median(t.get(s, 0.0) for t in stage_runs) for s in STAGES}
        to_text = statistics.median(a + e - t.get("tts", 0.0) for a, e, t in zip(asr_runs, es4r_runs, stage_runs))
        rows.append(BenchRow(turns, asr, es4r, cascade, (asr + es4r) / max(asr + cascade, 1e-9), to_text, asr + es4r,
                             stages,
                             statistics.median(tps), statistics.median(rtf), _peak_rss_mb(),
                             *(statistics.median(run[0] for run in paths[speech]) for speech in (True, False)),
                             *(int(statistics.median(run[1] for run in paths[speech])) for speech in (True, False)),
                             *(statistics.median(run[2] for run in paths[speech]) for speech in (True, False)),
                             *(statistics.median(run[3] for run in paths[speech]) for speech in (True, False)),
                             **_yardstick(yardstick), speech_reply=_median_length(paths[True], itemgetter(1))[4],
                             text_reply=_median_length(paths[False], itemgetter(1))[4]))
        logger.info("bench: %d turns done", turns)
    return rows


def _yardstick(turns: list) -> dict:
    if not turns:
        return {}
    return {"cascade_first_text_s": statistics.median(t.first_text_s for t in turns),
            "cascade_first_audio_s": statistics.median(t.first_audio_s for t in turns),
            "cascade_total_s": statistics.median(t.total_s for t in turns),
            "cascade_tokens_per_s": statistics.median(t.decode_tokens_per_s for t in turns),
            "cascade_tokens": int(statistics.median(t.tokens for t in turns)),
            "cascade_reply": _median_length(turns, attrgetter("tokens")).reply_text}


def _median_length(runs: list, tokens: Callable):
    """The run whose reply length (`tokens(run)`) is the median's (the lower middle of an even count)."""
    return sorted(runs, key=tokens)[(len(runs) - 1) // 2]


def replies_list(rows: list[BenchRow], speech: bool) -> str:
    """What ES4R (on the path it answers with) and the cascade wrote, per history length."""
    lines = []
    for r in rows:
        lines.append(f"- {r.turns} turn(s), ES4R: {r.speech_reply if speech else r.text_reply!r}")
        if r.cascade_reply is not None:
            lines.append(f"  cascade: {r.cascade_reply!r}")
    return "\n".join(lines)


def yardstick_table(rows: list[BenchRow], speech: bool) -> str:
    """ES4R (the path it answers with) beside the user's cascade, each from the end of the
    recording: first words, first audio, whole reply, and ES4R / cascade ratios. The two write
    replies of their own lengths from the same limits, so the whole reply is also given per
    reply token."""
    head = ["turns", "first words s (ES4R / cascade)", "first audio s (ES4R / cascade)", "whole reply s (ES4R / cascade)",
            "ratio first audio", "ratio whole reply", "decode tok/s (ES4R / cascade)", "reply tokens (ES4R / cascade)",
            "whole reply per token s (ES4R / cascade)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.cascade_total_s is None:
            continue
        words, audio, whole = r.waits(speech)
        tokens = r.speech_tokens if speech else r.text_tokens
        lines.append(f"| {r.turns} | {words:.2f} / {r.cascade_first_text_s:.2f} | {audio:.2f} / {r.cascade_first_audio_s:.2f} | "
                     f"{whole:.2f} / {r.cascade_total_s:.2f} | {audio / r.cascade_first_audio_s:.2f} | "
                     f"{whole / r.cascade_total_s:.2f} | {r.llm_tokens_per_s:.1f} / {r.cascade_tokens_per_s:.1f} | "
                     f"{tokens} / {r.cascade_tokens} | "
                     f"{whole / max(tokens, 1):.3f} / {r.cascade_total_s / max(r.cascade_tokens, 1):.3f} |")
    return "\n".join(lines)


def format_table(rows: list[BenchRow]) -> str:
    head = ["turns", "ASR s", "ES4R s", "cascade s", "ratio", "to text s", "to audio s", *STAGES, "tok/s",
            "TTS RTF", "peak MB", "speech path s (tokens)", "text path s (tokens)", "speech/text", "per token",
            "first words s (speech / text)", "first audio s (speech / text)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        values = [str(r.turns), f"{r.asr_s:.2f}", f"{r.es4r_s:.2f}", f"{r.cascade_s:.2f}", f"{r.ratio:.2f}",
                  f"{r.to_text_s:.2f}", f"{r.to_audio_s:.2f}",
                  *(f"{r.stages[s]:.3f}" for s in STAGES), f"{r.llm_tokens_per_s:.1f}", f"{r.tts_rtf:.2f}",
                  f"{r.peak_rss_mb:.0f}", f"{r.speech_path_s:.2f} ({r.speech_tokens})",
                  f"{r.text_path_s:.2f} ({r.text_tokens})", f"{r.path_ratio:.2f}", f"{r.path_ratio_per_token:.2f}",
                  f"{r.speech_first_words_s:.2f} / {r.text_first_words_s:.2f}",
                  f"{r.speech_first_audio_s:.2f} / {r.text_first_audio_s:.2f}"]
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines)


def growth_check(rows: list[BenchRow]) -> str:
    """Is cost from the fewest to the most turns at most linear in the number of turns?"""
    first, last = rows[0], rows[-1]
    factor = (last.asr_s + last.es4r_s) / max(first.asr_s + first.es4r_s, 1e-9)
    linear = last.turns / max(first.turns, 1)
    verdict = "within" if factor <= linear else "ABOVE"
    return f"{first.turns}->{last.turns} turns: time x{factor:.2f} (linear would be x{linear:.0f}): {verdict} linear"


def write_json(rows: list[BenchRow], path: str | Path, meta: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"meta": meta, "rows": [{**r.__dict__, "path_ratio": r.path_ratio, "path_ratio_per_token": r.path_ratio_per_token}
                                                       for r in rows]},
                                     indent=2))
