"""The cascade a user would assemble from the same packaged weights with the tools people
use for it: faster-whisper (CTranslate2) on the packaged Whisper tiny.en, llama.cpp
(llama-cpp-python) on the packaged SmolLM2 GGUF, and the same voice, speaking each sentence
as soon as it is written. It is the yardstick for ES4R's speed: `python -m es4r bench` runs
it beside ES4R on the same clips when its optional packages are installed
(`pip install -r requirements-cascade.txt`); the app and the tests never need it."""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from es4r.config import ES4RConfig
from es4r.conversation import ASSISTANT, USER
from es4r.pipeline import FALLBACK_REPLY
from es4r.reply_text import confirmed_sentences, growing_reply, trim_reply
from es4r.voice.sentence_speaker import SentenceSpeaker

logger = logging.getLogger(__name__)

PACKAGES = {"faster_whisper": "faster-whisper", "llama_cpp": "llama-cpp-python"}
INSTALL_HINT = "pip install -r requirements-cascade.txt"
WHISPER_COMPUTE_TYPE = "int8"  # what faster-whisper recommends on a CPU
CT2_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def missing_packages() -> list[str]:
    """The cascade's packages that are not installed (their PyPI names)."""
    return [name for module, name in PACKAGES.items() if importlib.util.find_spec(module) is None]


@dataclass(frozen=True)
class CascadeTurn:
    """One answered turn, timed from the end of the user's recording."""

    transcript: str
    reply_text: str
    tokens: int
    asr_s: float
    first_text_s: float  # the first reply words
    first_audio_s: float  # the first sentence spoken
    total_s: float  # the whole reply spoken
    decode_tokens_per_s: float


def _whisper_folder(work_dir: Path) -> Path:
    """A folder faster-whisper can load: the carrier's own, or its split model.bin joined."""
    from es4r.embedded.whisper_ct2 import find_whisper_source

    source = find_whisper_source("tiny.en")
    if len(source.model_parts) == 1:
        return source.model_parts[0].parent
    folder = work_dir / f"whisper-{source.name}-ct2"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "model.bin", "wb") as out:
        for part in source.model_parts:
            with open(part, "rb") as handle:
                shutil.copyfileobj(handle, out)
    for name in CT2_FILES:
        shutil.copy(source.folder / name, folder / name)
    return folder


class UserCascade:
    """faster-whisper -> llama.cpp -> the pipeline's voice, with the pipeline's system prompt,
    reply length and sentence cut, greedy like the pipeline. Run it through `CascadeProcess`
    beside ES4R: loaded into ES4R's process it slows ES4R down (see there)."""

    def __init__(self, config: ES4RConfig, voice, work_dir: Path):
        missing = missing_packages()
        if missing:
            raise ImportError(f"the user's cascade needs {', '.join(missing)}; {INSTALL_HINT}")
        from faster_whisper import WhisperModel
        from llama_cpp import Llama

        from es4r.embedded.llm_gguf import find_llm_source, gguf_path

        self.config, self.voice = config, voice
        threads = os.cpu_count() or 1
        self.whisper = WhisperModel(str(_whisper_folder(work_dir)), device="cpu", compute_type=WHISPER_COMPUTE_TYPE,
                                    cpu_threads=threads)
        gguf = gguf_path(find_llm_source("smollm2-135m-instruct"), work_dir)
        self.llm = Llama(model_path=str(gguf), n_ctx=config.generation.max_context_tokens,
                         n_threads=threads, verbose=False)
        self.name = f"faster-whisper tiny.en ({WHISPER_COMPUTE_TYPE}) -> llama.cpp {gguf.name} -> {voice.name}"
        logger.info("user's cascade: %s", self.name)

    def _messages(self, history: list[tuple[str, str]]) -> list[dict]:
        messages = [{"role": "system", "content": self.config.generation.system_prompt}]
        return messages + [{"role": "user" if role == USER else "assistant", "content": text}
                           for role, text in history if role in (USER, ASSISTANT)]

    def as_after(self, history: list[tuple[str, str]]) -> None:
        """Leave llama.cpp's cache as answering `history` leaves it (it reuses the longest
        prefix it already read, as a user's chat loop would): the benchmark's fair start."""
        self.llm.reset()
        self.llm.create_chat_completion(self._messages(history), max_tokens=1, temperature=0.0)

    def respond(self, history: list[tuple[str, str]], recording: np.ndarray) -> CascadeTurn:
        """Transcribe `recording` (16 kHz mono), answer it after `history` ((role, text)
        turns), and speak the reply sentence by sentence while it is written."""
        generation = self.config.generation
        start = time.perf_counter()
        segments, _ = self.whisper.transcribe(recording.astype(np.float32), language="en", beam_size=1)
        transcript = " ".join(segment.text.strip() for segment in segments).strip()
        asr_s = time.perf_counter() - start
        messages = self._messages(history) + [{"role": "user", "content": transcript}]
        moments: dict[str, float] = {}

        def heard(rate: int, audio: np.ndarray) -> None:
            moments.setdefault("first_audio", time.perf_counter() - start)

        neutral = self.config.strategy.table["neutral"]
        speaker = SentenceSpeaker(lambda: self.voice.start(None, neutral, seed=self.config.seed), heard)
        written, tokens, decode_start = "", 0, time.perf_counter()
        for chunk in self.llm.create_chat_completion(messages, max_tokens=generation.max_new_tokens, temperature=0.0,
                                                     repeat_penalty=generation.repetition_penalty, stream=True):
            piece = chunk["choices"][0]["delta"].get("content") or ""
            if not piece:
                continue
            tokens += 1
            written += piece
            moments.setdefault("first_text", time.perf_counter() - start)
            speaker.offer(growing_reply(written, generation.max_sentences))
            if confirmed_sentences(written) >= generation.max_sentences:
                break
        decode_s = time.perf_counter() - decode_start
        reply = trim_reply(written, generation.max_sentences)
        if not any(ch.isalpha() for ch in reply):
            reply = FALLBACK_REPLY
        speaker.finish(reply)
        total_s = time.perf_counter() - start
        self.voice.prepare(self.config.seed)  # as ES4R's pipeline does: the next reply's voice readied
        return CascadeTurn(transcript, reply, tokens, asr_s, moments.get("first_text", total_s),
                           moments.get("first_audio", total_s), total_s, tokens / max(decode_s, 1e-9))


def _serve(config: ES4RConfig, work_dir: str, connection) -> None:
    """The cascade's process: build it, then answer (method, args) requests until None."""
    from es4r.voice.voices import load_voice

    try:
        voice = load_voice(config.backbones.voice, styletts2_path=config.backbones.tts or None)
        cascade = UserCascade(config, voice, Path(work_dir))
    except Exception as error:  # reported to the parent, which raises it
        connection.send(("error", f"{type(error).__name__}: {error}"))
        return
    connection.send(("ok", cascade.name))
    while (request := connection.recv()) is not None:
        method, args = request
        try:
            connection.send(("ok", getattr(cascade, method)(*args)))
        except Exception as error:
            connection.send(("error", f"{type(error).__name__}: {error}"))


class CascadeProcess:
    """`UserCascade` in a process of its own, with the same `respond` and `as_after`. Measured
    on a 2-core CPU: once CTranslate2 (faster-whisper) has loaded in a process, torch's LLM
    decode there drops from ~30 to ~17 tokens/s and stays there, so in one process the
    yardstick slows what it measures. A user's cascade is a program of its own anyway."""

    def __init__(self, config: ES4RConfig, work_dir: Path):
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(config, str(work_dir), child), name="user-cascade",
                                        daemon=True)
        self._process.start()
        child.close()
        self.name = self._answer()

    def _answer(self):
        try:
            status, value = self._connection.recv()
        except EOFError:
            raise RuntimeError(f"the user's cascade process ended (exit code {self._process.exitcode})") from None
        if status == "error":
            raise RuntimeError(f"the user's cascade failed: {value}")
        return value

    def respond(self, history: list[tuple[str, str]], recording: np.ndarray) -> CascadeTurn:
        self._connection.send(("respond", (history, recording)))
        return self._answer()

    def as_after(self, history: list[tuple[str, str]]) -> None:
        self._connection.send(("as_after", (history,)))
        self._answer()

    def close(self) -> None:
        if self._process.is_alive():
            self._connection.send(None)
            self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
        self._connection.close()
