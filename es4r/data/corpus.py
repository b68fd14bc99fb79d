"""The spoken training corpus: real human chit-chat (PyPI `chitchat-dataset`, MIT) turned
into an ES4R manifest (the JSONL layout of es4r/data/manifest.py; the source and its windows:
corpus_source.py; the card: corpus_card.py) by speaking every history turn with an
offline voice: the speaker's turns in the conversation's speaker voice, following a planned
loudness and pace trajectory, the listener's turns in a different, neutral voice.

Why: ES4R learns from the energy trend of the user's turns (paper Sec. 3.3) and no
spoken empathetic corpus installs offline. The text is real; the voices are synthetic, and
the trends are imposed: loudness by gain after synthesis, pace through the voice's own speed.
Each conversation is rendered three times (falling, rising, flat) with the same words, voice
and listener audio, so the only thing that tells the three rows apart is how the user
sounds; every row carries its plan, a one-sentence `affect_hint`, and the energies and
durations measured on the written WAVs."""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import soundfile

from es4r.audio import SAMPLE_RATE, load_audio, prepare_waveform, turn_energy
from es4r.config import StrategyParams, default_strategy_table
from es4r.data.corpus_card import CorpusCard, describe_corpus
from es4r.data.corpus_source import (HELDOUT_FRACTION, MAX_SPEAKER_CHARS, MAX_TURN_CHARS, MIN_WORDS, SOURCE_NAME,
                                     SPEAKER_TURNS, WINDOW_TURNS, Candidate, CorpusError, candidates,
                                     load_conversations, split_order)
from es4r.data.manifest import LISTENER, SPEAKER
from es4r.modeling.affect_reader import AFFECT_NOTES
from es4r.voice.base import TTSError
from es4r.voice.strategy import NEUTRAL

logger = logging.getLogger(__name__)


MAX_SAMPLE_SECONDS = 25.0  # total speaker audio per sample, checked after synthesis

ENERGY_PLANS = ("falling", "rising", "flat")  # also the variants: one row per plan per conversation
MIN_STEP_DB, MAX_STEP_DB = 3.0, 6.0  # gain change between consecutive speaker turns
PACE_STEP = 0.12  # speed factor change between consecutive speaker turns: falling x1.12, x1.0, x0.88
MAX_HISTORY_SECONDS = 55.0  # all history audio of a row, listener turns included (the model hears 60 s)
SPEAKER_LEVEL_DB = 3.0  # each conversation's speaker is up to this louder or softer
REFERENCE_ENERGY = 0.09  # turn_energy of a 0 dB turn (about -30 dBFS RMS speech)
PEAK_LIMIT = 0.95  # a conversation whose loudest speaker turn (any variant) would peak above this is turned down whole
ENERGY_MELS = 80  # mel bins of the recorded energies (whisper-base/small; ratios do not depend on it)

SPEED_RANGE = (0.88, 1.15)  # speaker's usual pace
SPEED_JITTER = 0.03  # per-turn pace change, relative, shared by the variants; small enough that the
# plan's speeds stay strictly ordered: consecutive plan factors differ by a ratio >= 1.12 > 1.03 / 0.97
EXPRESSIVENESS_RANGE = (0.3, 0.9)  # speaker's pitch / prosody (espeak pitch 38..62)
EXPRESSIVENESS_JITTER = 0.08  # per-turn change
NEUTRAL_PARAMS = default_strategy_table()[NEUTRAL]  # alpha/beta unused by offline voices
LISTENER_PARAMS = replace(NEUTRAL_PARAMS, name="corpus-listener", gain_db=0.0)  # neutral pace and prosody
LISTENER_SEED_OFFSET = 1000  # listener turns' synthesis seeds, apart from the speaker turns'
# How the speaker sounds, by plan: the affect-aware teacher's note (es4r/data/teacher.py), in the
# words the speech path's affect reader gives the LLM when it hears the same trend.
AFFECT_HINTS = AFFECT_NOTES
MANIFESTS = {"train": "train.jsonl", "heldout": "heldout.jsonl"}
CARD_FILE = "card.json"


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
VOICE_POOLS = {"all": DEFAULT_VOICES, "espeak": ESPEAK_VOICES}  # espeak: espeak-ng only (fast)
# The listener's voice: espeak-ng (always installable) and outside the speaker pool, so the
# two sides of a conversation never share a voice; see listener_voice for other pools.
LISTENER_VOICE = VoiceSpec("espeak:en-us+f2", "espeak", "en-us+f2")


@dataclass(frozen=True)
class Persona:
    """The per-conversation randomness of the speaker, drawn once and shared by the three
    variants, so that only the plan tells them apart."""

    voice: VoiceSpec
    speeds: tuple[float, ...]  # per speaker turn: usual pace x jitter, before the plan's factor
    expressiveness: tuple[float, ...]  # per speaker turn
    step_db: float
    level_db: float


def _ramp(plan: str, turns: int) -> list[float]:
    """-1..+1 steps per turn in the plan's direction, centred on 0 (flat: all 0)."""
    if plan not in ENERGY_PLANS:
        raise ValueError(f"unknown energy plan {plan!r}; choose one of {', '.join(ENERGY_PLANS)}")
    direction = {"falling": -1.0, "rising": 1.0, "flat": 0.0}[plan]
    return [float(direction * c) for c in np.arange(turns) - (turns - 1) / 2.0]


def plan_gains(plan: str, turns: int, step_db: float) -> list[float]:
    """Gain per speaker turn (dB), centred on 0: falling +s..-s, rising -s..+s, flat 0."""
    return [step_db * r for r in _ramp(plan, turns)]


def plan_paces(plan: str, turns: int, step: float = PACE_STEP) -> list[float]:
    """Speed factor per speaker turn around the speaker's usual pace: falling 1+s..1-s
    (slower each turn), rising 1-s..1+s, flat 1. It reaches the voice as its own speed
    (Piper length_scale, espeak-ng words per minute), so pace is spoken, not stretched."""
    return [1.0 + step * r for r in _ramp(plan, turns)]


def affect_hint(plan: str) -> str:
    """How the user sounds in a variant, in one sentence, from the plan alone (never from
    the measurement, so the hint is what the audio was made to carry)."""
    if plan not in AFFECT_HINTS:
        raise ValueError(f"unknown energy plan {plan!r}; choose one of {', '.join(AFFECT_HINTS)}")
    return AFFECT_HINTS[plan]


def draw_persona(seed: int, voices: tuple[VoiceSpec, ...]) -> Persona:
    """The speaker of one conversation: voice, usual pace and pitch with per-turn jitter,
    the plan's step size and a personal level."""
    rng = np.random.default_rng(seed)
    weights = np.array([v.weight for v in voices])
    voice = voices[int(rng.choice(len(voices), p=weights / weights.sum()))]
    speed, expressiveness = rng.uniform(*SPEED_RANGE), rng.uniform(*EXPRESSIVENESS_RANGE)
    step_db, level_db = rng.uniform(MIN_STEP_DB, MAX_STEP_DB), rng.uniform(-SPEAKER_LEVEL_DB, SPEAKER_LEVEL_DB)
    speeds = tuple(float(speed * (1.0 + rng.uniform(-SPEED_JITTER, SPEED_JITTER))) for _ in range(SPEAKER_TURNS))
    pitches = tuple(float(np.clip(expressiveness + rng.uniform(-EXPRESSIVENESS_JITTER, EXPRESSIVENESS_JITTER), 0.0, 1.0))
                    for _ in range(SPEAKER_TURNS))
    return Persona(voice, speeds, pitches, float(step_db), float(level_db))


def listener_voice(speaker: VoiceSpec, voices: tuple[VoiceSpec, ...]) -> VoiceSpec:
    """LISTENER_VOICE, unless the speaker has it (a pool that includes it): then the first
    voice of the pool, and failing that of ESPEAK_VOICES, that is not the speaker's."""
    if speaker.name != LISTENER_VOICE.name:
        return LISTENER_VOICE
    return next(v for v in (*voices, *ESPEAK_VOICES) if v.name != speaker.name)


class Renderer:
    """Speaks candidates into WAVs; voices load lazily, once per process."""

    def __init__(self, out_dir: Path, voices: tuple[VoiceSpec, ...] = DEFAULT_VOICES) -> None:
        if not voices:
            raise CorpusError("expected at least one voice in the pool; found none")
        self.out_dir, self.voices = Path(out_dir), voices
        self._engines: dict[str, object] = {}
        self._spoken: dict[tuple, tuple[np.ndarray, dict]] = {}

    def engine(self, voice: VoiceSpec):
        """The voice's engine, loaded on first use (the listener voice may be outside the pool)."""
        if voice.name not in self._engines:
            if voice.engine == "piper":
                from es4r.voice.piper_engine import PiperEngine

                self._engines[voice.name] = PiperEngine.from_pretrained()
            else:
                from es4r.voice.espeak_engine import EspeakEngine

                self._engines[voice.name] = EspeakEngine.from_system(voice=voice.espeak_voice)
        return self._engines[voice.name]

    def render(self, candidate: Candidate) -> list[dict] | str:
        """The manifest rows of one candidate, one per plan, or the reason it was rejected."""
        self._spoken.clear()
        persona = draw_persona(candidate.seed, self.voices)
        listener = listener_voice(persona.voice, self.voices)
        try:
            spoken = {plan: self._speak_speaker(candidate, persona, plan) for plan in ENERGY_PLANS}
            if any(sum(len(w) for w in waves) / SAMPLE_RATE > MAX_SAMPLE_SECONDS for waves, _ in spoken.values()):
                return "audio over budget"
            heard = [self._speak(listener, candidate.turns[index], LISTENER_PARAMS,
                                 candidate.seed + LISTENER_SEED_OFFSET + number)
                     for number, index in enumerate(candidate.listener_indices())]
        except (TTSError, ValueError) as error:  # AudioError is a ValueError
            logger.warning("skipping %s: a turn could not be spoken (%s)", candidate.conversation_id, error)
            return "synthesis failed"
        listener_samples = sum(len(w) for w, _ in heard)
        if any((sum(len(w) for w in waves) + listener_samples) / SAMPLE_RATE > MAX_HISTORY_SECONDS
               for waves, _ in spoken.values()):
            return "history audio over budget"
        gains = {plan: plan_gains(plan, SPEAKER_TURNS, persona.step_db) for plan in ENERGY_PLANS}
        # one peak guard over all three variants keeps the speaker's level the same in each
        levelled = _level([w for waves, _ in spoken.values() for w in waves],
                          [persona.level_db + g for plan in ENERGY_PLANS for g in gains[plan]])
        speaker_waves = {plan: levelled[n * SPEAKER_TURNS:(n + 1) * SPEAKER_TURNS] for n, plan in enumerate(ENERGY_PLANS)}
        listener_waves = _level([w for w, _ in heard], [0.0] * len(heard))
        folder = Path("audio") / candidate.split / candidate.conversation_id
        (self.out_dir / folder).mkdir(parents=True, exist_ok=True)
        listener_turns = [self._write_turn(folder / f"turn{index:03d}.wav", wave)
                          for index, wave in zip(candidate.listener_indices(), listener_waves)]
        listener_settings = [{"speed": LISTENER_PARAMS.speed, "expressiveness": LISTENER_PARAMS.expressiveness,
                              "gain_db": 0.0, "engine": engine} for _, engine in heard]
        speaker_turns = {plan: [self._write_turn(folder / f"turn{index:03d}_{plan}.wav", wave)
                                for index, wave in zip(candidate.speaker_indices(), speaker_waves[plan])]
                         for plan in ENERGY_PLANS}
        rows = []
        for plan in ENERGY_PLANS:
            settings = [{**s, "gain_db": round(persona.level_db + g, 2)} for s, g in zip(spoken[plan][1], gains[plan])]
            rows.append(self._row(candidate, plan, persona, listener, speaker_turns, listener_turns,
                                  settings, listener_settings, gains[plan]))
        return rows

    def _speak_speaker(self, candidate: Candidate, persona: Persona, plan: str) -> tuple[list[np.ndarray], list[dict]]:
        """The speaker turns of one variant at the plan's pace (gain comes later, on the
        measured energy). Each turn keeps its seed in every variant, so the variants differ
        only by the plan's speed factor."""
        waves, settings = [], []
        paces = plan_paces(plan, SPEAKER_TURNS)
        for number, index in enumerate(candidate.speaker_indices()):
            params = replace(NEUTRAL_PARAMS, name=f"corpus-{plan}", speed=persona.speeds[number] * paces[number],
                             expressiveness=persona.expressiveness[number], gain_db=0.0)
            wave, engine = self._speak(persona.voice, candidate.turns[index], params, candidate.seed + number)
            waves.append(wave)
            settings.append({"speed": round(params.speed, 3), "expressiveness": round(params.expressiveness, 3),
                             "engine": engine})
        return waves, settings

    def _speak(self, voice: VoiceSpec, text: str, params: StrategyParams, seed: int) -> tuple[np.ndarray, dict]:
        """One turn at 16 kHz and the engine's own settings. Cached within a conversation:
        the middle speaker turn has speed factor 1 in every plan, so it is spoken once."""
        key = (voice.name, text, params.speed, params.expressiveness, seed)
        if key not in self._spoken:
            result = self.engine(voice).synthesize(text, None, params, seed=seed)
            self._spoken[key] = (prepare_waveform(result.waveform, result.sample_rate).samples, result.params)
        return self._spoken[key]

    def _write_turn(self, relative: Path, wave: np.ndarray) -> dict:
        """Write one 16-bit WAV and measure what was written (energy, seconds)."""
        soundfile.write(self.out_dir / relative, wave, SAMPLE_RATE, subtype="PCM_16")
        written = load_audio(self.out_dir / relative).samples
        return {"audio_path": relative.as_posix(), "energy": round(turn_energy(written, ENERGY_MELS), 6),
                "seconds": round(len(written) / SAMPLE_RATE, 3)}

    def _row(self, candidate: Candidate, plan: str, persona: Persona, listener: VoiceSpec, speaker_turns: dict,
             listener_turns: list[dict], settings: list[dict], listener_settings: list[dict], gains: list[float]) -> dict:
        spoken = iter(speaker_turns[plan])
        heard = iter(listener_turns)
        history = []
        for offset in range(WINDOW_TURNS - 1):
            index = candidate.start + offset
            role = SPEAKER if offset % 2 == 0 else LISTENER
            audio = next(spoken) if role == SPEAKER else next(heard)
            history.append({"index": index, "role": role, "utterance": candidate.turns[index],
                            "audio_path": audio["audio_path"]})
        texts = [candidate.turns[i] for i in candidate.speaker_indices()]
        seconds = [t["seconds"] for t in speaker_turns[plan]]
        flat_seconds = [t["seconds"] for t in speaker_turns["flat"]]
        human = candidate.turns[candidate.start + WINDOW_TURNS - 1]
        return {
            "conversation_id": candidate.conversation_id, "turn_id": candidate.start + WINDOW_TURNS - 1,
            "variant": plan, "dialogue_history": history,
            "response": {"utterance": human}, "human_response": human,
            "energy_plan": plan, "affect_hint": affect_hint(plan),
            "planned_gain_db": [round(g, 2) for g in gains],
            "planned_pace": [round(p, 3) for p in plan_paces(plan, SPEAKER_TURNS)],
            "energies": [t["energy"] for t in speaker_turns[plan]], "energy_mels": ENERGY_MELS,
            "seconds": seconds, "seconds_per_char": [round(s / len(t), 5) for s, t in zip(seconds, texts)],
            "pace_vs_flat": [round(s / f, 4) for s, f in zip(seconds, flat_seconds)],
            "listener_seconds": [t["seconds"] for t in listener_turns],
            "voice": persona.voice.name, "listener_voice": listener.name,
            "voice_settings": settings, "listener_settings": listener_settings,
            "seed": candidate.seed, "source": SOURCE_NAME,
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


def _render_in_worker(candidate: Candidate) -> list[dict] | str:
    return _WORKER.render(candidate)


def available_voices(voices: tuple[VoiceSpec, ...]) -> tuple[VoiceSpec, ...]:
    """The pool without Piper if its voice is not installed (said in a warning)."""
    from es4r.voice.piper_engine import INSTALL_HINT as PIPER_HINT, piper_available

    if any(v.engine == "piper" for v in voices) and not piper_available():
        warnings.warn(f"the Piper voice is not installed ({PIPER_HINT}); building with espeak-ng voices only")
        voices = tuple(v for v in voices if v.engine != "piper")
    return voices


def build_corpus(out_dir: str | Path, n_train: int = 240, n_heldout: int = 40, seed: int = 42,
                 voices: tuple[VoiceSpec, ...] = DEFAULT_VOICES, workers: int = 1,
                 source: Path | None = None) -> CorpusCard:
    """Build OUT/train.jsonl, OUT/heldout.jsonl, OUT/audio/... and OUT/card.json.

    `n_train` and `n_heldout` count conversations; each gives three rows (falling, rising,
    flat): three speaker turns and the two listener turns between them, all spoken, and the
    next listener turn as the target response. Deterministic for a given seed, voice pool
    and source, whatever `workers` is."""
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
            rows[split], done = [], 0
            stream = candidates(conversations[split], split, seed)
            while done < count:
                batch = [c for _, c in zip(range(count - done), stream)]
                if not batch:
                    raise CorpusError(f"{split}: expected {count} usable conversations, found {done}; "
                                      "ask for fewer or loosen the text limits")
                results = pool.map(_render_in_worker, batch) if pool else [renderer.render(c) for c in batch]
                for result in results:
                    if isinstance(result, str):
                        rejected[result] += 1
                    else:
                        rows[split].extend(result)
                        done += 1
                logger.info("%s: %d / %d conversations", split, done, count)
    finally:
        if pool:
            pool.close()
            pool.join()
    for split, name in MANIFESTS.items():
        with open(out_dir / name, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows[split])
    card = describe_corpus(out_dir, seed, rows, rejected, time.monotonic() - started, build_settings())
    (out_dir / CARD_FILE).write_text(json.dumps(asdict(card), indent=2), encoding="utf-8")
    return card


def build_settings() -> dict:
    """The named limits and voice ranges, recorded in the card so a build can be compared."""
    return {
        "speaker_turns": SPEAKER_TURNS, "variants": list(ENERGY_PLANS), "min_words": MIN_WORDS,
        "max_turn_chars": MAX_TURN_CHARS, "max_speaker_chars": MAX_SPEAKER_CHARS,
        "max_sample_seconds": MAX_SAMPLE_SECONDS, "max_history_seconds": MAX_HISTORY_SECONDS,
        "heldout_fraction": HELDOUT_FRACTION, "step_db": [MIN_STEP_DB, MAX_STEP_DB], "pace_step": PACE_STEP,
        "speaker_level_db": SPEAKER_LEVEL_DB, "reference_energy": REFERENCE_ENERGY, "peak_limit": PEAK_LIMIT,
        "energy_mels": ENERGY_MELS, "speed": list(SPEED_RANGE), "speed_jitter": SPEED_JITTER,
        "expressiveness": list(EXPRESSIVENESS_RANGE), "expressiveness_jitter": EXPRESSIVENESS_JITTER,
        "listener_voice": LISTENER_VOICE.name, "listener_speed": LISTENER_PARAMS.speed,
        "listener_expressiveness": LISTENER_PARAMS.expressiveness,
        "sample_rate": SAMPLE_RATE, "sample_format": "PCM_16 mono WAV",
    }
