"""A tiny pairs folder in the evaluate command's format (see stimuli.py), spoken by espeak-ng,
for trying the study app and for its tests. The second system speaks more quietly on
purpose, so loudness normalisation has something to undo."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

ESPEAK = "espeak-ng"
WORDS_PER_MINUTE = 230  # fast, so clips stay short
LOUD, QUIET = 150, 40  # espeak-ng amplitudes (0-200) of the two systems
TONE_RATE = 16_000  # Hz, for the espeak-free tone pairs
TONE_SECONDS = 0.5
TONE_LEVELS = (0.5, 0.05)  # peak amplitude of the two systems' tones (20 dB apart)
TONE_BASE_HZ = 220.0
CONTEXTS = (
    "I failed my driving test this morning.",
    "My sister is moving abroad next week.",
    "I finally finished my thesis!",
    "Our dog has been sick all weekend.",
    "I got a new job offer today.",
    "I could not sleep at all last night.",
)
REPLIES = (  # (empathetic, generic)
    ("Oh no, that must sting. You will pass next time.", "Okay. Tests happen."),
    ("You will miss her a lot, I am sure.", "Many people move."),
    ("Congratulations, that is a huge achievement!", "Fine. What next?"),
    ("I am so sorry, I hope he feels better soon.", "Dogs get sick."),
    ("That is wonderful news, well done!", "Jobs are common."),
    ("That sounds exhausting. Be kind to yourself today.", "Try sleeping."),
)


def espeak_available() -> bool:
    return shutil.which(ESPEAK) is not None


def speak(text: str, path: Path, amplitude: int, words_per_minute: int = WORDS_PER_MINUTE) -> Path:
    """Write `text` as speech to `path` (16-bit WAV at espeak-ng's 22.05 kHz)."""
    if not espeak_available():
        raise RuntimeError(f"{ESPEAK} not found; install the Debian package espeak-ng")
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([ESPEAK, "-s", str(words_per_minute), "-a", str(amplitude), "-w", str(path),
                    text], check=True, capture_output=True)
    return path


def write_demo_pairs(folder: str | Path, samples: int = 3, systems: tuple[str, str] = ("es4r", "baseline"),
                     gold_samples: int = 0, words_per_minute: int = WORDS_PER_MINUTE) -> Path:
    """Write `samples` regular samples plus `gold_samples` gold ones (where the first system's
    empathetic reply should win on Empathy) to `folder/samples.jsonl`; returns that file."""
    folder = Path(folder)
    total = samples + gold_samples
    if total > len(CONTEXTS):
        raise ValueError(f"the demo has {len(CONTEXTS)} conversations, asked for {total}")
    lines = []
    for index in range(total):
        context_audio = speak(CONTEXTS[index], folder / "context" / f"{index}.wav", LOUD,
                              words_per_minute)
        row = {"sample_id": f"demo{index}",
               "context": [{"role": "speaker", "utterance": CONTEXTS[index],
                            "audio_path": str(context_audio.relative_to(folder))}],
               "systems": {}}
        for system, text, amplitude in zip(systems, REPLIES[index], (LOUD, QUIET)):
            audio = speak(text, folder / system / f"{index}.wav", amplitude, words_per_minute)
            row["systems"][system] = {"text": text, "audio_path": str(audio.relative_to(folder))}
        if index >= samples:
            row["gold"] = {"Empathy": "win"}
        lines.append(json.dumps(row))
    out = folder / "samples.jsonl"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def write_tone_pairs(folder: str | Path, samples: int, systems: tuple[str, str] = ("es4r", "baseline"),
                     gold_samples: int = 0, seed: int = 0) -> Path:
    """Like `write_demo_pairs` but with short noisy tones instead of speech (no espeak-ng,
    any number of samples). Reply texts ("reply 3.0") never name the system."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    time = np.arange(int(TONE_RATE * TONE_SECONDS)) / TONE_RATE

    def tone(path: Path, hz: float, level: float) -> str:
        import soundfile

        path.parent.mkdir(parents=True, exist_ok=True)
        wave = np.sin(2 * np.pi * hz * time) + 0.1 * rng.standard_normal(len(time))
        soundfile.write(str(path), level * wave / np.max(np.abs(wave)), TONE_RATE, subtype="PCM_16")
        return str(path.relative_to(folder))

    lines = []
    for index in range(samples + gold_samples):
        row = {"sample_id": f"tone{index}",
               "context": [{"role": "speaker", "utterance": f"context {index}",
                            "audio_path": tone(folder / "context" / f"{index}.wav",
                                               TONE_BASE_HZ * (1 + index % 4), TONE_LEVELS[0])},
                           {"role": "listener", "utterance": f"listener turn {index}"}],
               "systems": {name: {"text": f"reply {index}.{rank}",
                                  "audio_path": tone(folder / name / f"{index}.wav",
                                                     TONE_BASE_HZ * (2 + rank), level)}
                           for rank, (name, level) in enumerate(zip(systems, TONE_LEVELS))}}
        if index >= samples:
            row["gold"] = {"Empathy": "win"}
        lines.append(json.dumps(row))
    out = folder / "samples.jsonl"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
