"""The committed clip sets, spoken by the offline voices: the valence set (assets/valence_set),
the situations set (assets/situations) and the example turns a visitor tries first
(assets/examples). The clips are committed so every run hears the same audio; speak them again
only after editing a set's words (and bump its version): `python -m es4r valence-set`,
`situations-set`, `examples`.

Each set is spoken its own way, for a reason: the valence set at neutral pace and prosody by
the spoken corpus's voices (the words carry the valence); the situations set by two natural
voices alternating within each kind (every kind is heard in both); the examples with the
pace and loudness of their story (energy falls in the rough week: comfort; rises with the
good news: encourage)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from es4r.audio import SAMPLE_RATE, prepare_waveform
from es4r.data.test_sets import SITUATIONS, VALENCE_SET

logger = logging.getLogger(__name__)

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"
SITUATION_VOICES = ("piper:en_US-joe-medium", "kokoro:jf_gongitsune")  # alternating within each kind
TARGET_RMS_DB, PEAK_DB = -20.0, -1.0  # situations and examples: levelled, peaks kept below
# The examples, in the app's order. name: (voice, text, speed, gain in dB). Text written for this project (CC0).
EXAMPLE_TURNS = {
    "rough_week_1": ("piper", "I had a really rough week at work and I'm not sure what to do.", 1.0, 0.0),
    "rough_week_2": ("piper", "My manager criticised my project in front of the whole team.", 0.88, -5.0),
    "rough_week_3": ("piper", "And I just feel tired, and I don't want to go back on Monday.", 0.78, -10.0),
    "good_news_1": ("kokoro", "I finally heard back from the job interview.", 0.95, -8.0),
    "good_news_2": ("kokoro", "Guess what? I got the job! I can hardly believe it.", 1.25, 2.0),
}


class SetFolderError(ValueError):
    """A set folder that cannot be spoken into; the message names it."""


def levelled(samples: np.ndarray) -> np.ndarray:
    """`samples` at TARGET_RMS_DB RMS, turned down further if a peak would pass PEAK_DB."""
    rms = float(np.sqrt(np.mean(samples ** 2))) or 1.0
    out = samples * (10 ** (TARGET_RMS_DB / 20) / rms)
    peak, limit = float(np.abs(out).max()), 10 ** (PEAK_DB / 20)
    return (out * (limit / peak) if peak > limit else out).astype(np.float32)


def set_file(folder: Path) -> Path:
    """`folder/set.json`, or a SetFolderError saying what is there instead."""
    path = Path(folder) / "set.json"
    if not path.is_file():
        raise SetFolderError(f"{folder} holds no set.json; give the set's folder")
    return path


def speak_valence_set(folder: Path = VALENCE_SET, force: bool = False) -> list[Path]:
    """Each turn of `folder/set.json` by its conversation's voice at neutral pace and prosody,
    16 kHz 16-bit FLAC beside set.json; clips that exist are kept unless `force`. Returns the
    clips written."""
    import soundfile

    from es4r.data.corpus import DEFAULT_VOICES, NEUTRAL_PARAMS, Renderer

    items = json.loads(set_file(folder).read_text())["items"]
    voices = {voice.name: voice for voice in DEFAULT_VOICES}
    unknown = sorted({item["voice"] for item in items} - set(voices))
    if unknown:
        raise SetFolderError(f"{folder}/set.json names voices {unknown}; the offline voices are {sorted(voices)}")
    renderer, written = Renderer(Path(folder), tuple(voices.values())), []
    for number, item in enumerate(items):
        target = Path(folder) / item["audio"]
        if target.exists() and not force:
            continue
        result = renderer.engine(voices[item["voice"]]).synthesize(item["text"], None, NEUTRAL_PARAMS, seed=number)
        samples = prepare_waveform(result.waveform, result.sample_rate).samples
        soundfile.write(target, samples, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
        logger.info("%s: %.1f s (%s)", target.name, len(samples) / SAMPLE_RATE, item["voice"])
        written.append(target)
    return written


def assign_situation_voices(spec: dict) -> dict:
    """`spec` with each item's voice (alternating within its kind: the first of a kind
    SITUATION_VOICES[0], the second [1], …) and its clip names, one Ogg file per turn."""
    per_kind: dict[str, int] = {}
    items = []
    for item in spec["items"]:
        index = per_kind[item["kind"]] = per_kind.get(item["kind"], -1) + 1
        items.append(dict(item, voice=SITUATION_VOICES[index % len(SITUATION_VOICES)],
                          audio=[f"audio/{item['id']}_t{n + 1}.ogg" for n in range(len(item["turns"]))]))
    return dict(spec, items=items)


def speak_situations(folder: Path = SITUATIONS, force: bool = False) -> list[Path]:
    """Write each item's voice and clips into `folder/set.json`, then speak the missing clips
    (all with `force`): 16 kHz mono, levelled, Ogg Vorbis (about a twelfth of FLAC's size;
    Whisper transcribes them the same) in `folder/audio/`. Returns the clips written."""
    import soundfile

    from es4r.data.corpus import NEUTRAL_PARAMS

    path = set_file(folder)
    spec = assign_situation_voices(json.loads(path.read_text()))
    path.write_text(json.dumps(spec, indent=2, ensure_ascii=False) + "\n")
    (Path(folder) / "audio").mkdir(exist_ok=True)
    piper = kokoro = None
    written = []
    for number, item in enumerate(spec["items"]):
        for turn, (text, clip) in enumerate(zip(item["turns"], item["audio"])):
            target = Path(folder) / clip
            if target.exists() and not force:
                continue
            if item["voice"].startswith("piper:"):
                if piper is None:
                    from es4r.voice.piper_engine import PiperEngine

                    piper = PiperEngine.from_pretrained()
                result = piper.synthesize(text, None, NEUTRAL_PARAMS, seed=100 * number + turn)
                samples, rate = result.waveform, result.sample_rate
            else:
                if kokoro is None:
                    from es4r.voice.kokoro_english import KokoroEnglish

                    kokoro = KokoroEnglish(item["voice"].split(":", 1)[1])
                samples, rate = kokoro.speak(text), 24_000
            samples = levelled(prepare_waveform(samples, rate).samples)
            soundfile.write(target, samples, SAMPLE_RATE, format="OGG", subtype="VORBIS")
            logger.info("%s: %.1f s (%s)", target.name, len(samples) / SAMPLE_RATE, item["voice"])
            written.append(target)
    return written


def speak_examples(folder: Path = EXAMPLES) -> list[Path]:
    """Every example turn (EXAMPLE_TURNS) as 16 kHz mono 16-bit WAV in `folder`: Piper
    en_US-joe-medium or Kokoro jf_gongitsune speaking English, levelled, then each turn's gain
    (a loud turn turned down only as far as keeps it unclipped). Both voices load before any
    file is written. Returns the files written."""
    import soundfile

    from es4r.data.corpus import NEUTRAL_PARAMS
    from es4r.voice.kokoro_english import KokoroEnglish
    from es4r.voice.piper_engine import PiperEngine

    if not Path(folder).is_dir():
        raise SetFolderError(f"{folder} is not a folder; give the folder the example clips go into")
    piper, kokoro = PiperEngine.from_pretrained(), KokoroEnglish()
    written = []
    for number, (name, (voice, text, speed, gain_db)) in enumerate(EXAMPLE_TURNS.items()):
        if voice == "piper":
            result = piper.synthesize(text, None, replace(NEUTRAL_PARAMS, speed=speed), seed=number)
            samples, rate = result.waveform, result.sample_rate
        else:
            samples, rate = kokoro.speak(text, speed=1.1 * speed), 24_000
        samples = levelled(prepare_waveform(samples, rate).samples) * 10 ** (gain_db / 20)
        samples *= min(1.0, 0.95 / float(abs(samples).max()))  # a loud turn stays unclipped
        target = Path(folder) / f"{name}.wav"
        soundfile.write(target, samples, SAMPLE_RATE, subtype="PCM_16")
        logger.info("%s: %.1f s, %s, speed %.2f, %+.0f dB", name, len(samples) / SAMPLE_RATE, voice, speed, gain_db)
        written.append(target)
    return written
