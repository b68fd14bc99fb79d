"""The systems compared in evaluation and the benchmark: ES4R, its text path, the paper's
three ablations — all configuration switches of the same pipeline — and a plain cascade
(Whisper ASR -> LLM -> TTS, no ES4R parts), the system a user would otherwise pick."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from es4r.config import ES4RConfig
from es4r.conversation import ASSISTANT, USER, Conversation
from es4r.system_names import SPEECH_SYSTEMS, SYSTEMS  # noqa: F401  (SYSTEMS re-exported)
from es4r.modeling.model import generation_kwargs
from es4r.pipeline import FALLBACK_REPLY, ES4RPipeline
from es4r.reply_text import trim_reply


def check_systems(names: list[str], pipeline: ES4RPipeline) -> None:
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        raise ValueError(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
    needs_speech = [n for n in names if n in SPEECH_SYSTEMS]
    if needs_speech and not pipeline.speech_path:
        raise ValueError(f"systems {needs_speech} need a trained ES4R checkpoint (--checkpoint); "
                         "without one only es4r_text and cascade can run")


def variant_config(config: ES4RConfig, name: str) -> ES4RConfig:
    """The config of one ES4R system (not the cascade): the paper's ablations switch a part off."""
    if name == "no_dual":
        return replace(config, dual=replace(config.dual, enabled=False))
    if name == "no_cross":
        return replace(config, cross=replace(config.cross, enabled=False))
    if name == "no_note":
        return replace(config, cross=replace(config.cross, affect_note=False))
    if name == "no_empathetic_tts":
        return replace(config, strategy=replace(config.strategy, empathetic_tts=False))
    if name in ("es4r", "es4r_text"):
        return config
    raise ValueError(f"{name!r} is not an ES4R variant; choose from {', '.join(SPEECH_SYSTEMS + ('es4r_text',))}")


def system_variant(pipeline: ES4RPipeline, name: str) -> ES4RPipeline:
    """The pipeline as one ES4R system: a new pipeline over the same weights (ES4RModel.with_config)
    with the variant's config; `pipeline` itself is not changed."""
    return pipeline.variant(variant_config(pipeline.config, name), pipeline.speech_path and name != "es4r_text")


@dataclass(frozen=True)
class CascadeResult:
    reply_text: str
    reply_audio: np.ndarray
    sample_rate: int
    timings: dict[str, float]
    tokens: int


@torch.no_grad()
def cascade_reply(model, generation, history: list[tuple[str, str]]) -> tuple[str, int]:
    """The cascade's LLM step: (role, text) turns -> a plain multi-turn chat prompt on the
    same LLM with its base weights. Returns the trimmed reply and its token count."""
    tokenizer = model.tokenizer
    messages = [{"role": "system", "content": generation.system_prompt}]
    messages += [{"role": "user" if role == USER else "assistant", "content": text} for role, text in history
                 if role in (USER, ASSISTANT)]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt").to(model.device)
    output = model.llm.generate(**inputs, **generation_kwargs(generation, tokenizer, inputs["input_ids"].shape[1]))
    new_tokens = output[0, inputs["input_ids"].shape[1]:]
    text = trim_reply(tokenizer.decode(new_tokens, skip_special_tokens=True), generation.max_sentences)
    return text or FALLBACK_REPLY, int(new_tokens.numel())


def cascade_respond(pipeline: ES4RPipeline, conversation: Conversation) -> CascadeResult:
    """ASR transcripts (already in the conversation) -> the same LLM with a plain multi-turn
    chat prompt and the base weights -> the same voice with neutral parameters."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    text, tokens = cascade_reply(pipeline.model, pipeline.config.generation, conversation.history())
    timings["llm"] = time.perf_counter() - start
    start = time.perf_counter()
    neutral = pipeline.config.strategy.table["neutral"]
    synthesis = pipeline.voice.synthesize(text, None, neutral, seed=pipeline.config.seed)
    timings["tts"] = time.perf_counter() - start
    return CascadeResult(text, synthesis.waveform, synthesis.sample_rate, timings, tokens)
