"""Does a speed-up change any reply? For each conversation of a manifest the embedded model
answers twice, greedily, and the two replies are compared token for token:

- `prefix-cache` (es4r/modeling/prefix_cache.py): from nothing, and as in a conversation —
  after the prompt of the turn before, whose key/value cache it reuses where the prompts agree;
- `onnx-decode` (es4r/modeling/onnx_decode.py): with the decode steps in torch (transformers'
  generate) and in ONNX Runtime as the app runs them (`GenerationConfig.decode_weights`; the
  embedded LLM's weights read as the 4-bit blocks they lie on), from nothing; tokens/s with the
  prompt and of the decode steps alone (both text path);
- `speech-prefix`: the speech path (the shipped checkpoint, every turn's audio heard) from
  nothing, and after the turn before, reusing only the cached text before S' (the system
  prompt, and the oldest turns while they are read as text);
- `speech-window` (es4r/modeling/whisper_window.py): the speech path with Whisper's encoder
  over its whole 30 s window, and over the turns plus `--tail` frames of padding; the encoder's
  seconds each way and how close the adapter's speech vectors stay (cosine per position).
- `speech-onnx` (es4r/modeling/onnx_decode.py, whisper_onnx.py): the speech path (PLoRA acting
  at S') all in torch (Whisper's encoder, transformers' generate) and all in ONNX Runtime as the
  app runs it — the encoder, the prompt read by the same graph as the decode steps — from
  nothing; the encoder's seconds and the seconds to the first token each way;
- `asr-onnx` (es4r/modeling/whisper_onnx.py): every heard turn's transcript with Whisper in torch
  and in ONNX Runtime (its encoder and decode steps); seconds per transcript;
- `speech-fused`: the speech path with the dual-level attention's weights kept (the heatmaps)
  and without them (each turn unpadded, the fused attention kernel: what a turn does before
  its first word).

Except in `speech-window` a difference can only come from float rounding; `speech-window` changes
what the encoder computes, and measures by how much. Prints how many replies are the same, the
figures of the comparison (prompt tokens reused; tokens/s) and every reply that changed.

    python -m scripts.check_same_replies prefix-cache --manifest CORPUS/heldout40.jsonl [--out runs/prefix_cache.json]
    python -m scripts.check_same_replies onnx-decode --manifest CORPUS/heldout40.jsonl
    python -m scripts.check_same_replies speech-prefix --manifest CORPUS/heldout.jsonl
    python -m scripts.check_same_replies speech-window --tail 600 --manifest CORPUS/heldout.jsonl
    python -m scripts.check_same_replies speech-fused --manifest CORPUS/heldout.jsonl
    python -m scripts.check_same_replies speech-onnx --manifest CORPUS/heldout.jsonl
    python -m scripts.check_same_replies asr-onnx --manifest CORPUS/heldout40.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

from es4r.data.manifest import load_manifest, prepare_sample
from es4r.pipeline import ES4RPipeline

logger = logging.getLogger("check_same_replies")


def prefix_cache(model, generation, history, figures: dict) -> tuple:
    """(from nothing, reusing the turn before's cache)."""
    return _cold_and_warm(model, generation, history, None, figures)


def _cold_and_warm(model, generation, history, features, figures: dict) -> tuple:
    """A reply from nothing, then the same reply after the turn before left its cache (the
    text path reuses where the prompts agree; the speech path only its text before S')."""
    model.prefix_cache.clear()
    cold = model.generate(history, features, replace(generation, reuse_prefix=False))[0]
    model.generate(history[:-2], None, replace(generation, max_new_tokens=1))  # the turn before
    warm = model.generate(history, features, generation)[0]
    figures.setdefault("prompt_tokens", []).append(warm.prompt_tokens)
    figures.setdefault("reused_tokens", []).append(warm.reused_tokens)
    return cold, warm


class _TokenClock:
    """A streamer that notes when each generated token arrives (generate's protocol: the
    prompt first, empty when the reply starts from embeddings, then a token per step)."""

    def __init__(self):
        self.started = time.perf_counter()
        self.times: list[float] = []

    def put(self, ids) -> None:
        if ids.numel():
            self.times.append(time.perf_counter())

    def end(self) -> None:
        pass

    def decode_rate(self) -> float | None:
        """Tokens/s of the decode steps alone: from the first token (the prompt's) to the last."""
        return (len(self.times) - 1) / (self.times[-1] - self.times[0]) if len(self.times) > 2 else None


def onnx_decode(model, generation, history, figures: dict) -> tuple:
    """(decode steps in torch, in ONNX Runtime), both from nothing; tokens/s with the prompt
    read by torch included, and of the decode steps alone."""
    decoder, generation = model.decoder, replace(generation, reuse_prefix=False)
    replies = []
    for name, used in (("torch", None), ("onnxruntime", decoder)):
        model.decoder, clock = used, _TokenClock()
        started = time.perf_counter()
        replies.append(model.generate(history, None, generation, streamer=clock)[0])
        figures.setdefault(f"{name} tokens/s", []).append(len(replies[-1].token_ids) / (time.perf_counter() - started))
        if (rate := clock.decode_rate()) is not None:
            figures.setdefault(f"{name} decode-step tokens/s", []).append(rate)
    model.decoder = decoder
    return tuple(replies)


def speech_prefix(model, generation, sample, figures: dict) -> tuple:
    """(speech path from nothing, after the turn before with the system prompt cached)."""
    features = prepare_sample(sample, model.whisper.n_mels).features
    return _cold_and_warm(model, generation, sample.history_turns(), features, figures)


def _speech_replies(views, sample, generation, figures: dict, timing: str) -> list:
    """Each (label, model view, need_weights) encodes the sample's heard turns and answers on
    the speech path from nothing; `timing` (a stage of encode_speech) is noted per label.
    Returns [(reply, speech vectors)]."""
    import torch

    features = prepare_sample(sample, views[0][1].whisper.n_mels).features
    generation, out = replace(generation, reuse_prefix=False), []
    for label, view, need_weights in views:
        timings: dict[str, float] = {}
        with torch.no_grad():
            encoding = view.encode_speech([features], timings, need_weights)
        figures.setdefault(f"{label} {timing} s", []).append(timings[timing])
        reply = view.generate(sample.history_turns(), features, generation, encoding=encoding)[0]
        out.append((reply, encoding.embeddings[0, : int(encoding.lengths[0])]))
    return out


def speech_window(model, generation, sample, figures: dict, tail: int) -> tuple:
    """(speech path over the whole encoder window, over the turns plus `tail` frames), from nothing."""
    import torch

    from es4r.config import WindowConfig

    whole_window, tailed = (model.with_config(model.config.replace(window=WindowConfig(speech_tail_frames=frames)))
                            for frames in (None, tail))  # the preset's own window may be either
    (whole, speech), (short, tailed_speech) = _speech_replies(
        [("whole window", whole_window, True), (f"tail {tail}", tailed, True)], sample, generation, figures,
        "whisper_encoder")
    cosine = torch.nn.functional.cosine_similarity(speech, tailed_speech, dim=-1)
    figures.setdefault("speech vector cosine (mean)", []).append(float(cosine.mean()))
    figures.setdefault("speech vector cosine (lowest)", []).append(float(cosine.min()))
    return whole, short


def speech_fused(model, generation, sample, figures: dict) -> tuple:
    """(speech path encoded with the dual-level attention's weights, without them: the fused
    kernel the app uses on the way to the first word), from nothing."""
    replies = _speech_replies([("with weights", model, True), ("without weights", model, False)], sample, generation,
                              figures, "dual_attention")
    return tuple(reply for reply, _ in replies)


def speech_onnx(model, generation, sample, figures: dict) -> tuple:
    """(speech path all in torch, all in ONNX Runtime: Whisper's encoder, the prompt, the
    decode steps), from nothing; seconds to the speech encoding and to the first token."""
    import torch

    features = prepare_sample(sample, model.whisper.n_mels).features
    decoder, runtime = model.decoder, model.whisper.runtime
    generation, replies = replace(generation, reuse_prefix=False), []
    try:
        for name, llm_steps, whisper_graphs in (("torch", None, None), ("onnxruntime", decoder, runtime)):
            model.decoder, model.whisper.runtime, clock = llm_steps, whisper_graphs, _TokenClock()
            timings: dict[str, float] = {}
            with torch.no_grad():
                encoding = model.encode_speech([features], timings)
            figures.setdefault(f"{name} whisper encoder s", []).append(timings["whisper_encoder"])
            clock.started = time.perf_counter()
            replies.append(model.generate(sample.history_turns(), features, generation, encoding=encoding,
                                          streamer=clock)[0])
            figures.setdefault(f"{name} first token s", []).append(clock.times[0] - clock.started)
    finally:
        model.decoder, model.whisper.runtime = decoder, runtime
    return tuple(replies)


class _Transcript:
    """One transcript as the comparison rows read it."""

    def __init__(self, tokens: list[int], text: str):
        self.token_ids, self.text = tokens, text


def asr_onnx(model, generation, sample, figures: dict) -> tuple:
    """(each heard turn's transcript with Whisper in torch, in ONNX Runtime), joined by " | "."""
    from es4r.audio import load_audio
    from es4r.modeling.asr import MAX_TOKENS, greedy_tokens

    whisper, out = model.whisper, []
    for runtime in (None, whisper.runtime):
        tokens, texts = [], []
        for turn in sample.speaker_turns:
            samples = load_audio(turn.audio_path).samples
            features = whisper.processor.feature_extractor(samples, sampling_rate=16000,
                                                           return_tensors="pt").input_features
            started = time.perf_counter()
            turn_tokens = greedy_tokens(whisper.model, features, MAX_TOKENS, runtime)
            figures.setdefault(f"{'onnxruntime' if runtime else 'torch'} ASR s", []).append(time.perf_counter() - started)
            tokens += turn_tokens + [-1]
            texts.append(whisper.processor.tokenizer.decode(turn_tokens, skip_special_tokens=True).strip())
        out.append(_Transcript(tokens, " | ".join(texts)))
    return tuple(out)


COMPARISONS = {"prefix-cache": prefix_cache, "onnx-decode": onnx_decode, "speech-prefix": speech_prefix,
               "speech-window": speech_window, "speech-fused": speech_fused, "speech-onnx": speech_onnx,
               "asr-onnx": asr_onnx}
SPEECH = {"speech-prefix", "speech-window", "speech-fused", "speech-onnx", "asr-onnx"}  # comparisons on the speech path: they take the whole sample


def _summary(figures: dict) -> str:
    if "reused_tokens" in figures:
        return f"{sum(figures['reused_tokens']) / max(sum(figures['prompt_tokens']), 1):.0%} of prompt tokens from the cache"
    return ", ".join(f"{name} {statistics.median(values):.4g} (median)" for name, values in figures.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=sorted(COMPARISONS))
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--tail", type=int, default=600, help="speech-window: frames of padding after the turns")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    pipeline = ES4RPipeline.from_preset("embedded")
    if args.what in SPEECH - {"asr-onnx"} and not pipeline.speech_path:
        raise SystemExit("the embedded preset answers through the text path here (no trained checkpoint?)")
    if args.what in ("onnx-decode", "speech-onnx") and pipeline.model.decoder is None:
        raise SystemExit("the embedded model's decode steps are not in ONNX Runtime (see the log)")
    if args.what in ("speech-onnx", "asr-onnx") and pipeline.model.whisper.runtime is None:
        raise SystemExit("the embedded model's decode steps are not in ONNX Runtime (see the log)")
    compare, rows, figures = COMPARISONS[args.what], [], {}
    if args.what == "speech-window":
        compare = partial(speech_window, tail=args.tail)
    for sample in load_manifest(args.manifest, check_audio=args.what in SPEECH):
        first, second = compare(pipeline.model, pipeline.config.generation,
                                sample if args.what in SPEECH else sample.history_turns(), figures)
        rows.append({"conversation": sample.conversation_id, "same": first.token_ids == second.token_ids,
                     "first": first.text, "second": second.text})
        logger.info("%s: %s", sample.conversation_id[:8], "same" if rows[-1]["same"] else "CHANGED")
    same = sum(r["same"] for r in rows)
    print(f"{args.what}: {same} of {len(rows)} replies unchanged; {_summary(figures)}")
    for r in rows:
        if not r["same"]:
            print(f"- {r['conversation']}: {r['first']!r} / {r['second']!r}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"what": args.what, "unchanged": same, "total": len(rows), "figures": figures,
                                        "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
