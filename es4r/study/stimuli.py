"""The listening study's input, and loudness-matched copies of every clip it plays.

Input: the folder the evaluate command writes, holding ``samples.jsonl`` with one JSON
object per line::

    {"sample_id": "conv12_t3",
     "context": [{"role": "speaker", "utterance": "I lost my job.", "audio_path": "ctx/c12_0.wav"},
                 {"role": "listener", "utterance": "Oh no, what happened?"}],
     "systems": {"es4r":     {"text": "That sounds hard...", "audio_path": "es4r/c12_t3.wav"},
                 "baseline": {"text": "Okay.",               "audio_path": "baseline/c12_t3.wav"}},
     "gold": {"DMOS-Q": "win"}}

* ``sample_id``: unique in the file.
* ``context``: the dialogue so far, oldest first; ``role`` is ``speaker`` or ``listener``;
  ``utterance`` is what was said (the corpus transcript); ``audio_path`` is optional per turn;
  ``recognised: true`` marks words that came from the speech recogniser because no
  transcript existed (the page labels them).
* ``systems``: each compared system's reply; both ``text`` and ``audio_path`` are required.
* ``gold`` (optional): known answers for attention checks, written as the first system
  of the study over the second (``win`` / ``tie`` / ``lose``); gold items are shown to
  every annotator and left out of the results.

Audio paths are relative to the folder. Loudness is matched so that level gives nothing
away: every clip is measured with ITU-R BS.1770 (K-weighting, gated mean square) and a
copy scaled to ``TARGET_LUFS`` is cached under a content-hash file name, which also keeps
system names out of the URLs the browser sees.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SAMPLES_FILE = "samples.jsonl"
ROLES = ("speaker", "listener")
CHOICES = ("win", "tie", "lose")  # the first system over the second / reply A over reply B

TARGET_LUFS = -23.0  # EBU R128 programme loudness
PEAK_CEILING = 10 ** (-1.0 / 20)  # -1 dBFS: never scale a clip into clipping
LUFS_OFFSET = -0.691  # BS.1770 calibration constant
BLOCK_SECONDS = 0.4  # gating block
BLOCK_OVERLAP = 0.75
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
# Analogue prototypes of the K-weighting stages, fitted to the BS.1770 48 kHz table
SHELF_HZ, SHELF_GAIN_DB, SHELF_Q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
SHELF_BAND_EXPONENT = 0.4996667741545416
HIGHPASS_HZ, HIGHPASS_Q = 38.13547087602444, 0.5003270373238773
HASH_CHARS = 24


class StudyInputError(ValueError):
    """The pairs folder does not follow the format in this module's docstring."""


@dataclass(frozen=True)
class ContextTurn:
    role: str  # speaker | listener
    utterance: str
    audio_path: Path | None  # absolute
    recognised: bool = False  # the words are speech-recogniser output (no transcript existed)


@dataclass(frozen=True)
class Reply:
    text: str
    audio_path: Path  # absolute


@dataclass(frozen=True)
class PairSample:
    sample_id: str
    context: tuple[ContextTurn, ...]
    replies: dict[str, Reply]  # system name -> its reply
    gold: dict[str, str] | None  # criterion -> known choice of first system over second
    line: int  # where it came from, for messages


def _require(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise StudyInputError(f"{where}: {message}")


def _audio(folder: Path, value: object, where: str) -> Path:
    _require(isinstance(value, str) and value != "", where, f"audio_path must be a non-empty "
             f"string relative to {folder}, found {value!r}")
    path = (folder / str(value)).resolve()
    _require(path.is_file(), where, f"audio file {path} does not exist; paths are relative "
             f"to the folder holding {SAMPLES_FILE}")
    return path


def _parse_line(folder: Path, row: object, where: str) -> PairSample:
    _require(isinstance(row, dict), where, f"expected a JSON object, found {type(row).__name__}")
    sample_id = row.get("sample_id")
    _require(isinstance(sample_id, str) and sample_id != "", where,
             f"sample_id must be a non-empty string, found {sample_id!r}")
    raw_context = row.get("context")
    _require(isinstance(raw_context, list), where, "context must be a list of turns")
    context = []
    for index, turn in enumerate(raw_context):
        at = f"{where} context[{index}]"
        _require(isinstance(turn, dict), at, "expected an object with role and utterance")
        _require(turn.get("role") in ROLES, at, f"role must be one of {ROLES}, found "
                 f"{turn.get('role')!r}")
        _require(isinstance(turn.get("utterance"), str), at, "utterance must be a string")
        audio = turn.get("audio_path")
        _require(isinstance(turn.get("recognised", False), bool), at, "recognised must be true or false")
        context.append(ContextTurn(turn["role"], turn["utterance"],
                                   None if audio is None else _audio(folder, audio, at),
                                   turn.get("recognised", False)))
    systems = row.get("systems")
    _require(isinstance(systems, dict) and len(systems) >= 2, where,
             "systems must map at least two system names to {text, audio_path}")
    replies = {}
    for name, reply in systems.items():
        at = f"{where} systems[{name!r}]"
        _require(isinstance(reply, dict) and isinstance(reply.get("text"), str), at,
                 "expected {\"text\": ..., \"audio_path\": ...}")
        replies[name] = Reply(reply["text"], _audio(folder, reply.get("audio_path"), at))
    gold = row.get("gold")
    if gold is not None:
        _require(isinstance(gold, dict) and all(v in CHOICES for v in gold.values()), where,
                 f"gold must map criterion names to one of {CHOICES}, found {gold!r}")
    return PairSample(sample_id, tuple(context), replies, gold, 0)


def load_pairs(folder: str | Path) -> list[PairSample]:
    """Read and validate ``folder/samples.jsonl``; errors name the file and line."""
    folder = Path(folder).resolve()
    path = folder / SAMPLES_FILE
    if not path.is_file():
        raise StudyInputError(f"{path} not found; expected the evaluate command's output folder "
                              f"holding {SAMPLES_FILE}")
    samples: list[PairSample] = []
    seen: dict[str, int] = {}
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(text)
        except json.JSONDecodeError as error:
            raise StudyInputError(f"{where}: not valid JSON ({error.msg})") from error
        sample = _parse_line(folder, row, where)
        _require(sample.sample_id not in seen, where,
                 f"sample_id {sample.sample_id!r} already used on line {seen.get(sample.sample_id)}")
        seen[sample.sample_id] = number
        samples.append(PairSample(sample.sample_id, sample.context, sample.replies,
                                  sample.gold, number))
    if not samples:
        raise StudyInputError(f"{path} holds no samples")
    return samples


def k_weighting(sample_rate: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The two BS.1770 K-weighting biquads (b, a) at any rate, by bilinear transform of the
    analogue prototypes (libebur128's construction); at 48 kHz they equal the standard's table."""
    k = math.tan(math.pi * SHELF_HZ / sample_rate)
    high_gain = 10 ** (SHELF_GAIN_DB / 20)
    band_gain = high_gain**SHELF_BAND_EXPONENT
    norm = 1 + k / SHELF_Q + k * k
    shelf_b = np.array([high_gain + band_gain * k / SHELF_Q + k * k, 2 * (k * k - high_gain),
                        high_gain - band_gain * k / SHELF_Q + k * k]) / norm
    shelf_a = np.array([norm, 2 * (k * k - 1), 1 - k / SHELF_Q + k * k]) / norm
    k = math.tan(math.pi * HIGHPASS_HZ / sample_rate)
    norm = 1 + k / HIGHPASS_Q + k * k
    highpass_b = np.array([1.0, -2.0, 1.0])
    highpass_a = np.array([norm, 2 * (k * k - 1), 1 - k / HIGHPASS_Q + k * k]) / norm
    return [(shelf_b, shelf_a), (highpass_b, highpass_a)]


def integrated_loudness(samples: np.ndarray, sample_rate: int) -> float:
    """BS.1770 integrated loudness in LUFS of mono or (n, channels) float audio."""
    from scipy.signal import lfilter

    audio = np.asarray(samples, dtype=np.float64)
    audio = audio[:, None] if audio.ndim == 1 else audio
    for b, a in k_weighting(sample_rate):
        audio = lfilter(b, a, audio, axis=0)
    block = int(BLOCK_SECONDS * sample_rate)
    step = max(1, int(block * (1 - BLOCK_OVERLAP)))
    if len(audio) < block:  # shorter than one gating block: measure the whole clip
        powers = np.mean(audio**2, axis=0, keepdims=True)
    else:
        starts = range(0, len(audio) - block + 1, step)
        powers = np.stack([np.mean(audio[s:s + block] ** 2, axis=0) for s in starts])
    block_power = powers.sum(axis=1)  # channel weights are 1 for mono/stereo
    with np.errstate(divide="ignore"):
        block_lufs = LUFS_OFFSET + 10 * np.log10(block_power)
    kept = block_power[block_lufs > ABSOLUTE_GATE_LUFS]
    if kept.size == 0:
        return -math.inf
    relative_gate = LUFS_OFFSET + 10 * np.log10(kept.mean()) + RELATIVE_GATE_LU
    kept = block_power[(block_lufs > ABSOLUTE_GATE_LUFS) & (block_lufs > relative_gate)]
    return float(LUFS_OFFSET + 10 * np.log10(kept.mean()))


@dataclass(frozen=True)
class NormalisedClip:
    path: Path  # cached copy, named by content hash
    source_lufs: float
    output_lufs: float
    gain_db: float
    seconds: float  # duration, for checking that a reply was really heard to the end


@dataclass(frozen=True)
class ClipLevel:
    lufs: float  # integrated loudness
    peak: float  # largest absolute sample


def measure_clip(source: Path) -> ClipLevel:
    import soundfile

    samples, rate = soundfile.read(str(source), dtype="float64", always_2d=False)
    return ClipLevel(integrated_loudness(samples, rate), float(np.max(np.abs(samples))))


def common_target(levels: list[ClipLevel], target_lufs: float = TARGET_LUFS) -> float:
    """The loudest level every clip can reach without passing the -1 dBFS peak ceiling, capped
    at `target_lufs`: all clips are then equally loud and none is limited (limiting one
    system's clips would let level track the system)."""
    return min([target_lufs, *map(reachable_lufs, levels)])


def reachable_lufs(level: ClipLevel) -> float:
    """The loudest level a clip reaches with its peak at the -1 dBFS ceiling."""
    if not (math.isfinite(level.lufs) and level.peak > 0):
        return math.inf  # silent: refused on its own (normalise_clip), never the one that sets the level
    return level.lufs + 20 * math.log10(PEAK_CEILING / level.peak)


def normalise_clip(source: Path, cache_dir: Path, target_lufs: float = TARGET_LUFS) -> NormalisedClip:
    """Write (once) a copy of `source` scaled to `target_lufs`, as 16-bit PCM WAV."""
    import soundfile

    data = Path(source).read_bytes()
    digest = hashlib.sha256(data + f"|{target_lufs}".encode()).hexdigest()[:HASH_CHARS]
    out = Path(cache_dir) / f"{digest}.wav"
    samples, rate = soundfile.read(str(source), dtype="float64", always_2d=False)
    loudness = integrated_loudness(samples, rate)
    if not math.isfinite(loudness):
        raise StudyInputError(f"{source} is silent (below {ABSOLUTE_GATE_LUFS} LUFS); "
                              "every stimulus must contain sound")
    gain = 10 ** ((target_lufs - loudness) / 20)
    peak = float(np.max(np.abs(samples))) * gain
    if peak > PEAK_CEILING:
        logger.warning("%s would clip at %.1f LUFS; scaling to a -1 dBFS peak instead, so it "
                       "plays %.1f dB quieter than the target", source, target_lufs,
                       20 * math.log10(peak / PEAK_CEILING))
        gain *= PEAK_CEILING / peak
    if not out.exists():
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        partial = out.with_suffix(".partial.wav")
        soundfile.write(str(partial), samples * gain, rate, subtype="PCM_16")
        partial.replace(out)  # atomic: a crash never leaves a half-written stimulus
    gain_db = 20 * math.log10(gain)
    return NormalisedClip(out, loudness, loudness + gain_db, gain_db, len(samples) / rate)
