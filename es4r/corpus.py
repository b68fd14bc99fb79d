"""The spoken training corpus: real human chit-chat (PyPI `chitchat-dataset`, MIT) turned
into an ES4R manifest (DESIGN.md, "Data contract") by speaking each speaker turn with an
offline voice, at a loudness that follows a planned energy trajectory per conversation.

Why: ES4R learns from the energy trend of the user's turns (DESIGN.md steps 12-13) and no
spoken empathetic corpus installs offline. The text is real; the voices are synthetic, and
the energy trends are imposed by gain after synthesis (falling, rising or flat), so every
sample carries its plan and the energies measured on the written WAVs."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import re
import time
import unicodedata
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import soundfile

from es4r.audio import SAMPLE_RATE, load_audio, prepare_waveform, turn_energy
from es4r.config import default_strategy_table
from es4r.data import LISTENER, SPEAKER
from es4r.strategy import NEUTRAL, select_strategy
from es4r.tts.base import TTSError

logger = logging.getLogger(__name__)

SOURCE_PACKAGE = "chitchat_dataset"  # PyPI chitchat-dataset; its JSON is read, never imported
SOURCE_FILE = "dataset.json"
SOURCE_NAME = "chitchat-dataset 0.9.0 (BYU PCC lab Chit-Chat Challenge)"
SOURCE_LICENCE = "MIT"
SOURCE_URL = "https://github.com/BYU-PCCL/chitchat-dataset"
INSTALL_HINT = "pip install chitchat-dataset==0.9.0"

SPEAKER_TURNS = 3  # speaker turns per sample: three are needed to see a sustained fall
WINDOW_TURNS = 2 * SPEAKER_TURNS  # S L S L S + the listener response
MIN_WORDS = 2  # shorter turns ("ok", "lol") say nothing to learn from
MAX_TURN_CHARS = 150  # about 10 s of speech; keeps three turns inside the audio budget
MAX_SPEAKER_CHARS = 330  # all speaker turns of a sample, about 25 s at ~13 chars/s
MAX_SAMPLE_SECONDS = 25.0  # total speaker audio per sample, checked after synthesis
MAX_NON_ASCII_FRACTION = 0.05  # more than this (emoji, other scripts) drops the turn
MAX_SEED = 2**30  # per-sample seeds stay well inside onnxruntime's int range
HELDOUT_FRACTION = 0.1  # share of conversations reserved for held-out, by hashed id

ENERGY_PLANS = ("falling", "rising", "flat")
MIN_STEP_DB, MAX_STEP_DB = 3.0, 6.0  # gain change between consecutive speaker turns
SPEAKER_LEVEL_DB = 3.0  # each conversation's speaker is up to this louder or softer
REFERENCE_ENERGY = 0.09  # turn_energy of a 0 dB turn (about -30 dBFS RMS speech)
PEAK_LIMIT = 0.95  # a sample whose loudest turn would peak above this is turned down whole
ENERGY_MELS = 80  # mel bins of the recorded energies (whisper-base/small; ratios do not depend on it)

SPEED_RANGE = (0.88, 1.15)  # speaker's usual pace
SPEED_JITTER = 0.06  # per-turn pace change, relative
EXPRESSIVENESS_RANGE = (0.3, 0.9)  # speaker's pitch / prosody (espeak pitch 38..62)
EXPRESSIVENESS_JITTER = 0.08  # per-turn change
NEUTRAL_PARAMS = default_strategy_table()[NEUTRAL]  # alpha/beta unused by offline voices
MANIFESTS = {"train": "train.jsonl", "heldout": "heldout.jsonl"}
CARD_FILE = "card.json"
_PUNCTUATION_END = tuple(".!?,;:")
_TYPOGRAPHY = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                             "\u2013": "-", "\u2014": "-", "\u2026": "..."})
_UNSPEAKABLE = re.compile(r"https?://|www\.|\S@\S|<[^>]*>")


class CorpusError(RuntimeError):
    """The corpus cannot be built as asked; the message says what to change."""


@dataclass(frozen=True)
class VoiceSpec:
    """One offline voice of the pool; `weight` is its share of conversations."""

    name: str
    engine: str  # "piper" | "espeak"
    espeak_voice: str = ""  # espeak-ng voice+variant, e.g. "en-us+f3"
    weight: float = 1.0


DEFAULT_VOICES = (
    VoiceSpec("piper:en_US-joe-medium", "piper", weight=2.0),
    VoiceSpec("espeak:en-us", "espeak", "en-us"),
    VoiceSpec("espeak:en-gb", "espeak", "en-gb"),
    VoiceSpec("espeak:en-us+f3", "espeak", "en-us+f3"),
    VoiceSpec("espeak:en-gb-x-rp+f4", "espeak", "en-gb-x-rp+f4"),
    VoiceSpec("espeak:en-us+m3", "espeak", "en-us+m3"),
    VoiceSpec("espeak:en-gb-scotland", "espeak", "en-gb-scotland"),
)
ESPEAK_VOICES = tuple(v for v in DEFAULT_VOICES if v.engine == "espeak")


@dataclass(frozen=True)
class Conversation:
    conversation_id: str
    messages: tuple[tuple[str, ...], ...]  # raw chat lines of each message, in order

    def turns(self) -> tuple[str | None, ...]:
        """Cleaned text per message; None where it failed the filter (see clean_utterance)."""
        return tuple(clean_utterance(list(lines)) for lines in self.messages)


@dataclass(frozen=True)
class Candidate:
    """One conversation picked for a split, with its window and plan (everything but audio)."""

    split: str
    conversation_id: str
    turns: tuple[str | None, ...]  # cleaned, as Conversation.turns()
    start: int  # index of the first speaker message
    plan: str  # one of ENERGY_PLANS
    seed: int


@dataclass(frozen=True)
class CorpusCard:
    """What was built: written to OUT/card.json and summarised in assets/DATA_CARD.md."""

    out_dir: str
    seed: int
    counts: dict  # split -> samples
    seconds: dict  # split -> {total, turn_mean, turn_min, turn_max, sample_mean, sample_max}
    voices: dict  # voice name -> speaker turns
    plans: dict  # split -> {plan: samples}
    strategies: dict  # split -> {strategy chosen on measured energies: samples}
    plan_followed: float  # share of falling/rising samples whose energies move as planned
    rejected: dict  # reason -> candidates skipped
    build_seconds: float
    source: dict
    settings: dict  # the limits and voice ranges the build used


def find_source() -> Path:
    """The JSON file of the installed chitchat-dataset package, found without importing it."""
    spec = importlib.util.find_spec(SOURCE_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / SOURCE_FILE
        if path.is_file():
            return path
    raise CorpusError(f"expected the {SOURCE_PACKAGE} package with {SOURCE_FILE}; not installed: {INSTALL_HINT}")


def clean_utterance(pieces: list[str]) -> str | None:
    """One message (one or more chat lines) -> one speakable ASCII turn, or None if it is
    empty, too short or long, mostly non-ASCII, or holds links / addresses / markup."""
    sentences = []
    for piece in pieces:
        piece = " ".join(piece.translate(_TYPOGRAPHY).split())
        if piece:
            sentences.append(piece if piece.endswith(_PUNCTUATION_END) else piece + ".")
    text = " ".join(sentences)
    if not text or _UNSPEAKABLE.search(text):
        return None
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    if len(text) - len(ascii_text) > MAX_NON_ASCII_FRACTION * len(text):
        return None
    ascii_text = " ".join(ascii_text.split())
    words = [w for w in ascii_text.split() if any(c.isalpha() for c in w)]
    if len(words) < MIN_WORDS or len(ascii_text) > MAX_TURN_CHARS:
        return None
    return ascii_text


def load_conversations(path: Path | None = None) -> list[Conversation]:
    """Conversations of the source long enough for one window, ordered by id. Text is
    cleaned later, only for the conversations a build looks at."""
    path = path or find_source()
    with open(path, encoding="utf-8") as handle:
        raw = json.load(handle)
    conversations = []
    for conversation_id in sorted(raw):
        messages = raw[conversation_id].get("messages", [])
        if len(messages) >= WINDOW_TURNS:
            lines = tuple(tuple(line.get("text", "") for line in message) for message in messages)
            conversations.append(Conversation(conversation_id, lines))
    return conversations


def _hash_fraction(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()
    return int(digest[:12], 16) / float(16**12)


def split_order(conversations: list[Conversation], seed: int) -> dict[str, list[Conversation]]:
    """Conversations of each split in seeded order. A conversation's split depends only on
    (seed, id), so asking for more samples never moves one across the split."""
    order = sorted(conversations, key=lambda c: _hash_fraction(seed, "order:" + c.conversation_id))
    heldout = [c for c in order if _hash_fraction(seed, "split:" + c.conversation_id) < HELDOUT_FRACTION]
    train = [c for c in order if _hash_fraction(seed, "split:" + c.conversation_id) >= HELDOUT_FRACTION]
    return {"train": train, "heldout": heldout}


def window_starts(turns: tuple[str | None, ...]) -> list[int]:
    """Starts of S L S L S R windows whose cleaned turns all passed the filter and whose
    speaker text fits the audio budget."""
    starts = []
    for start in range(len(turns) - WINDOW_TURNS + 1):
        window = turns[start:start + WINDOW_TURNS]
        if any(t is None for t in window):
            continue
        if sum(len(window[i]) for i in range(0, WINDOW_TURNS - 1, 2)) <= MAX_SPEAKER_CHARS:
            starts.append(start)
    return starts


def candidates(conversations: list[Conversation], split: str, seed: int) -> Iterator[Candidate]:
    """Candidates of one split in seeded order; plans cycle so the three stay balanced."""
    rank = 0
    for conversation in conversations:
        turns = conversation.turns()
        starts = window_starts(turns)
        if not starts:
            continue
        rng = _rng(seed, conversation.conversation_id)
        yield Candidate(split, conversation.conversation_id, turns, int(starts[rng.integers(len(starts))]),
                        ENERGY_PLANS[rank % len(ENERGY_PLANS)], int(rng.integers(MAX_SEED)))
        rank += 1


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)])


def plan_gains(plan: str, turns: int, step_db: float) -> list[float]:
    """Gain per speaker turn (dB), centred on 0: falling +s..-s, rising -s..+s, flat 0."""
    if plan not in ENERGY_PLANS:
        raise ValueError(f"unknown energy plan {plan!r}; choose one of {', '.join(ENERGY_PLANS)}")
    centred = np.arange(turns) - (turns - 1) / 2.0
    direction = {"falling": -1.0, "rising": 1.0, "flat": 0.0}[plan]
    return [float(direction * step_db * c) for c in centred]


class Renderer:
    """Speaks candidates into WAVs; voices load lazily, once per process."""

    def __init__(self, out_dir: Path, voices: tuple[VoiceSpec, ...] = DEFAULT_VOICES) -> None:
        if not voices:
            raise CorpusError("expected at least one voice in the pool; found none")
        self.out_dir, self.voices = Path(out_dir), voices
        self._engines: dict[str, object] = {}

    def engine(self, voice: VoiceSpec):
        if voice.name not in self._engines:
            if voice.engine == "piper":
                from es4r.tts.piper_engine import PiperEngine

                self._engines[voice.name] = PiperEngine.from_pretrained()
            else:
                from es4r.tts.espeak_engine import EspeakEngine

                self._engines[voice.name] = EspeakEngine.from_system(voice=voice.espeak_voice)
        return self._engines[voice.name]

    def render(self, candidate: Candidate) -> dict | str:
        """The manifest row of one candidate, or the reason it was rejected."""
        rng = np.random.default_rng(candidate.seed)
        weights = np.array([v.weight for v in self.voices])
        voice = self.voices[int(rng.choice(len(self.voices), p=weights / weights.sum()))]
        speed, expressiveness = rng.uniform(*SPEED_RANGE), rng.uniform(*EXPRESSIVENESS_RANGE)
        step_db, level_db = rng.uniform(MIN_STEP_DB, MAX_STEP_DB), rng.uniform(-SPEAKER_LEVEL_DB, SPEAKER_LEVEL_DB)
        gains = plan_gains(candidate.plan, SPEAKER_TURNS, step_db)
        turns = candidate.turns
        indices = range(candidate.start, candidate.start + WINDOW_TURNS - 1)
        waves, settings = [], []
        for turn_number, index in enumerate(indices[::2]):
            params = replace(
                NEUTRAL_PARAMS, name=f"corpus-{candidate.plan}",
                speed=float(speed * (1.0 + rng.uniform(-SPEED_JITTER, SPEED_JITTER))),
                expressiveness=float(np.clip(expressiveness + rng.uniform(-EXPRESSIVENESS_JITTER, EXPRESSIVENESS_JITTER), 0.0, 1.0)),
                gain_db=0.0,  # loudness is set below, to the plan, on the measured energy
            )
            try:
                result = self.engine(voice).synthesize(turns[index], None, params, seed=candidate.seed + turn_number)
                waves.append(prepare_waveform(result.waveform, result.sample_rate).samples)
            except (TTSError, ValueError) as error:  # AudioError is a ValueError
                logger.warning("skipping %s: turn %d could not be spoken (%s)", candidate.conversation_id, index, error)
                return "synthesis failed"
            settings.append({"speed": round(params.speed, 3), "expressiveness": round(params.expressiveness, 3),
                             "gain_db": round(level_db + gains[turn_number], 2), "engine": result.params})
        if sum(len(w) for w in waves) / SAMPLE_RATE > MAX_SAMPLE_SECONDS:
            return "audio over budget"
        waves = _level(waves, [level_db + g for g in gains])
        return self._write(candidate, voice, waves, settings, gains)

    def _write(self, candidate: Candidate, voice: VoiceSpec, waves: list[np.ndarray], settings: list[dict],
               gains: list[float]) -> dict:
        history: list[dict] = []
        folder = Path("audio") / candidate.split / candidate.conversation_id
        (self.out_dir / folder).mkdir(parents=True, exist_ok=True)
        energies, seconds = [], []
        for offset in range(WINDOW_TURNS - 1):
            index = candidate.start + offset
            turn = {"index": index, "role": SPEAKER if offset % 2 == 0 else LISTENER,
                    "utterance": candidate.turns[index], "audio_path": None}
            if offset % 2 == 0:
                relative = folder / f"turn{index:03d}.wav"
                soundfile.write(self.out_dir / relative, waves[offset // 2], SAMPLE_RATE, subtype="PCM_16")
                written = load_audio(self.out_dir / relative).samples  # measure what was written
                energies.append(round(turn_energy(written, ENERGY_MELS), 6))
                seconds.append(round(len(written) / SAMPLE_RATE, 3))
                turn["audio_path"] = relative.as_posix()
            history.append(turn)
        response_index = candidate.start + WINDOW_TURNS - 1
        return {
            "conversation_id": candidate.conversation_id, "turn_id": response_index,
            "dialogue_history": history, "response": {"utterance": candidate.turns[response_index]},
            "energy_plan": candidate.plan, "planned_gain_db": [round(g, 2) for g in gains],
            "energies": energies, "energy_mels": ENERGY_MELS, "seconds": seconds,
            "voice": voice.name, "voice_settings": settings, "seed": candidate.seed,
            "source": SOURCE_NAME,
        }


def _level(waves: list[np.ndarray], gains_db: list[float]) -> list[np.ndarray]:
    """Scale each turn so its energy is REFERENCE_ENERGY x 10^(gain/20) (energy is linear in
    amplitude), then turn the whole sample down together if a peak would pass PEAK_LIMIT,
    which keeps the planned ratios between turns exact."""
    scales = [REFERENCE_ENERGY * 10.0 ** (g / 20.0) / turn_energy(w, ENERGY_MELS) for w, g in zip(waves, gains_db)]
    peak = max(float(np.max(np.abs(w))) * s for w, s in zip(waves, scales))
    common = min(1.0, PEAK_LIMIT / peak)
    return [(w * s * common).astype(np.float32) for w, s in zip(waves, scales)]


_WORKER: Renderer | None = None


def _init_worker(out_dir: Path, voices: tuple[VoiceSpec, ...]) -> None:
    global _WORKER
    _WORKER = Renderer(out_dir, voices)


def _render_in_worker(candidate: Candidate) -> dict | str:
    return _WORKER.render(candidate)


def available_voices(voices: tuple[VoiceSpec, ...]) -> tuple[VoiceSpec, ...]:
    """The pool without Piper if its voice is not installed (said in a warning)."""
    from es4r.tts.piper_engine import INSTALL_HINT as PIPER_HINT, piper_available

    if any(v.engine == "piper" for v in voices) and not piper_available():
        warnings.warn(f"the Piper voice is not installed ({PIPER_HINT}); building with espeak-ng voices only")
        voices = tuple(v for v in voices if v.engine != "piper")
    return voices


def build_corpus(out_dir: str | Path, n_train: int = 400, n_heldout: int = 40, seed: int = 42,
                 voices: tuple[VoiceSpec, ...] = DEFAULT_VOICES, workers: int = 1,
                 source: Path | None = None) -> CorpusCard:
    """Build OUT/train.jsonl, OUT/heldout.jsonl, OUT/audio/... and OUT/card.json.

    One sample per conversation: three speaker turns (spoken) with the listener turns
    between them (text), and the next listener turn as the target response. Deterministic
    for a given seed, voice pool and source, whatever `workers` is."""
    started, out_dir = time.monotonic(), Path(out_dir)
    voices = available_voices(voices)
    conversations = split_order(load_conversations(source), seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = {"train": n_train, "heldout": n_heldout}
    rows: dict[str, list[dict]] = {}
    rejected: Counter = Counter()
    pool = None
    if workers > 1:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(workers, _init_worker, (out_dir, voices))
    renderer = Renderer(out_dir, voices)
    try:
        for split, count in wanted.items():
            rows[split] = []
            stream = candidates(conversations[split], split, seed)
            while len(rows[split]) < count:
                batch = [c for _, c in zip(range(count - len(rows[split])), stream)]
                if not batch:
                    raise CorpusError(f"{split}: expected {count} usable conversations, found {len(rows[split])}; "
                                      "ask for fewer or loosen the text limits")
                results = pool.map(_render_in_worker, batch) if pool else [renderer.render(c) for c in batch]
                for result in results:
                    if isinstance(result, str):
                        rejected[result] += 1
                    else:
                        rows[split].append(result)
                logger.info("%s: %d / %d samples", split, len(rows[split]), count)
    finally:
        if pool:
            pool.close()
            pool.join()
    for split, name in MANIFESTS.items():
        with open(out_dir / name, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows[split])
    card = _card(out_dir, seed, rows, rejected, time.monotonic() - started)
    (out_dir / CARD_FILE).write_text(json.dumps(asdict(card), indent=2), encoding="utf-8")
    return card


def plan_followed(row: dict) -> bool:
    """Whether measured energies move as planned (strictly, turn to turn)."""
    steps = np.diff(row["energies"])
    return bool({"falling": np.all(steps < 0), "rising": np.all(steps > 0)}.get(row["energy_plan"], True))


def _card(out_dir: Path, seed: int, rows: dict[str, list[dict]], rejected: Counter, elapsed: float) -> CorpusCard:
    seconds, plans, strategies = {}, {}, {}
    voices: Counter = Counter()
    for split, split_rows in rows.items():
        turn_seconds = [s for row in split_rows for s in row["seconds"]] or [0.0]
        sample_seconds = [sum(row["seconds"]) for row in split_rows] or [0.0]
        seconds[split] = {"total": round(sum(turn_seconds), 1), "turn_mean": round(float(np.mean(turn_seconds)), 2),
                          "turn_min": round(min(turn_seconds), 2), "turn_max": round(max(turn_seconds), 2),
                          "sample_mean": round(float(np.mean(sample_seconds)), 2), "sample_max": round(max(sample_seconds), 2)}
        plans[split] = dict(Counter(row["energy_plan"] for row in split_rows))
        strategies[split] = dict(Counter(select_strategy(row["energies"]).name for row in split_rows))
        for row in split_rows:
            voices[row["voice"]] += len(row["energies"])
    directed = [row for split_rows in rows.values() for row in split_rows if row["energy_plan"] != "flat"]
    followed = float(np.mean([plan_followed(row) for row in directed])) if directed else 1.0
    return CorpusCard(
        out_dir=str(out_dir), seed=seed, counts={split: len(r) for split, r in rows.items()}, seconds=seconds,
        voices=dict(voices), plans=plans, strategies=strategies, plan_followed=followed, rejected=dict(rejected),
        build_seconds=round(elapsed, 1),
        source={"name": SOURCE_NAME, "licence": SOURCE_LICENCE, "url": SOURCE_URL, "install": INSTALL_HINT},
        settings=build_settings(),
    )


def build_settings() -> dict:
    """The named limits and voice ranges, recorded in the card so a build can be compared."""
    return {
        "speaker_turns": SPEAKER_TURNS, "min_words": MIN_WORDS, "max_turn_chars": MAX_TURN_CHARS,
        "max_speaker_chars": MAX_SPEAKER_CHARS, "max_sample_seconds": MAX_SAMPLE_SECONDS,
        "heldout_fraction": HELDOUT_FRACTION, "step_db": [MIN_STEP_DB, MAX_STEP_DB],
        "speaker_level_db": SPEAKER_LEVEL_DB, "reference_energy": REFERENCE_ENERGY, "peak_limit": PEAK_LIMIT,
        "energy_mels": ENERGY_MELS, "speed": list(SPEED_RANGE), "speed_jitter": SPEED_JITTER,
        "expressiveness": list(EXPRESSIVENESS_RANGE), "expressiveness_jitter": EXPRESSIVENESS_JITTER,
        "sample_rate": SAMPLE_RATE, "sample_format": "PCM_16 mono WAV",
    }
