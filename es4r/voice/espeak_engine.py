"""espeak-ng, the rule-based formant voice: the last offline fallback, always installable
from Debian. Robotic but intelligible; strategies reach it through rate, pitch, pitch range
and amplitude (see `espeak_knobs`)."""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import soundfile

from es4r.config import FALLBACK, StrategyParams
from es4r.voice.base import SpokenSentences, SynthesisResult, TTSError, speak_whole

logger = logging.getLogger(__name__)

ESPEAK_BINARY = "espeak-ng"
ESPEAK_VOICE = "en-us"
INSTALL_HINT = "install it with `apt-get install espeak-ng` (Debian/Ubuntu) or `brew install espeak-ng` (macOS)"
TIMEOUT_SECONDS = 60.0

DEFAULT_RATE_WPM = 175  # espeak-ng's own default speaking rate
MIN_RATE_WPM, MAX_RATE_WPM = 80, 450  # espeak-ng's accepted range
NEUTRAL_EXPRESSIVENESS = 0.6  # the default neutral strategy's value: espeak's own pitch
NEUTRAL_PITCH = 50  # espeak-ng's default base pitch (0..99)
PITCH_PER_EXPRESSIVENESS = 40  # comfort 0.35 -> 40 (lower), encourage 0.9 -> 62 (brighter)
MIN_PITCH, MAX_PITCH = 0, 99
NEUTRAL_RANGE_PERCENT = 100.0  # SSML prosody range: pitch movement, 100% = espeak's own
MIN_RANGE_PERCENT, MAX_RANGE_PERCENT = 10.0, 200.0
NEUTRAL_AMPLITUDE = 70  # espeak-ng's -a (0..200, default 100) is linear; 100 peaks near 0.7
MAX_AMPLITUDE = 200
FULL_SCALE = 0.999  # a peak at or above this is reported as possible clipping
SENTENCE_PAUSE_SECONDS = 0.2  # silence between sentences (each is one espeak-ng call)


@dataclass(frozen=True)
class EspeakKnobs:
    """espeak-ng's own settings for one utterance (recorded in SynthesisResult.params)."""

    rate_wpm: int  # -s
    pitch: int  # -p, base pitch 0..99
    range_percent: float  # SSML <prosody range>, pitch movement
    amplitude: int  # -a, linear loudness 0..200


def espeak_knobs(params: StrategyParams) -> EspeakKnobs:
    """Map engine-neutral strategy settings onto espeak-ng's knobs (e = expressiveness).

    ============== ============== ============================================
    StrategyParams espeak-ng      mapping
    ============== ============== ============================================
    speed          -s (words/min) 175 x speed, within [80, 450]
    expressiveness -p (pitch)     50 + 40 x (e - 0.6), within [0, 99]
    expressiveness prosody range  100% x e / 0.6, within [10%, 200%]
    gain_db        -a (amplitude) 70 x 10^(gain_db / 20), at most 200
    alpha, beta    (none)         StyleTTS2 only; ignored here
    ============== ============== ============================================

    With the default table: comfort -> 149 wpm, pitch 40, range 58%, amplitude 44;
    neutral -> 175, 50, 100%, 70; encourage -> 196, 62, 150%, 88.
    """
    offset = params.expressiveness - NEUTRAL_EXPRESSIVENESS
    return EspeakKnobs(
        rate_wpm=int(np.clip(round(DEFAULT_RATE_WPM * params.speed), MIN_RATE_WPM, MAX_RATE_WPM)),
        pitch=int(np.clip(round(NEUTRAL_PITCH + PITCH_PER_EXPRESSIVENESS * offset), MIN_PITCH, MAX_PITCH)),
        range_percent=float(np.clip(
            NEUTRAL_RANGE_PERCENT * params.expressiveness / NEUTRAL_EXPRESSIVENESS,
            MIN_RANGE_PERCENT, MAX_RANGE_PERCENT,
        )),
        amplitude=int(min(round(NEUTRAL_AMPLITUDE * 10.0 ** (params.gain_db / 20.0)), MAX_AMPLITUDE)),
    )


class EspeakEngine:
    """TTSEngine over the espeak-ng command line. Deterministic: `seed` is only recorded."""

    accepts_style = False
    style_dim = None

    def __init__(self, binary: str, voice: str = ESPEAK_VOICE, status: str = FALLBACK) -> None:
        self.name = ESPEAK_BINARY
        self.status = status
        self.binary = binary
        self.voice = voice

    @classmethod
    def from_system(cls, voice: str = ESPEAK_VOICE, status: str = FALLBACK) -> "EspeakEngine":
        """Find espeak-ng on PATH; TTSError with an install hint if it is missing."""
        binary = shutil.which(ESPEAK_BINARY)
        if binary is None:
            raise TTSError(f"the espeak-ng voice needs the `{ESPEAK_BINARY}` program, not found on PATH; {INSTALL_HINT}")
        return cls(binary, voice=voice, status=status)

    def extract_style(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray | None:
        """espeak-ng has no style encoder."""
        return None

    def synthesize(
        self, text: str, style: np.ndarray | None, params: StrategyParams, seed: int = 0
    ) -> SynthesisResult:
        """Speak `text`; `style` is ignored (noted). Returns float32 mono at espeak's rate."""
        return speak_whole(self, text, style, params, seed)

    def start(self, style: np.ndarray | None, params: StrategyParams, seed: int = 0) -> "EspeakUtterance":
        """A reply spoken sentence by sentence, one espeak-ng call each."""
        return EspeakUtterance(self, style, params, seed)

    def prepare(self, seed: int) -> None:
        """Nothing to get ready: each sentence is one espeak-ng call."""

    def _run(self, spoken: str, knobs: EspeakKnobs) -> tuple[np.ndarray, int]:
        """One espeak-ng call writing a temporary WAV; (samples float32, sample_rate)."""
        markup = f'<speak><prosody range="{knobs.range_percent:.0f}%">{escape(spoken)}</prosody></speak>'
        with tempfile.TemporaryDirectory() as folder:
            wav = Path(folder) / "speech.wav"
            command = [
                self.binary, "-v", self.voice, "-m",
                "-s", str(knobs.rate_wpm), "-p", str(knobs.pitch), "-a", str(knobs.amplitude),
                "-w", str(wav), markup,
            ]
            try:
                completed = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
            except FileNotFoundError as error:
                raise TTSError(f"could not run {self.binary}: {error}; {INSTALL_HINT}") from error
            except subprocess.TimeoutExpired as error:
                raise TTSError(f"espeak-ng took longer than {TIMEOUT_SECONDS:.0f} s; expected about 1 s") from error
            if completed.returncode != 0 or not wav.is_file():
                raise TTSError(
                    f"espeak-ng failed (exit {completed.returncode}): {completed.stderr.strip() or 'no message'}; "
                    f"check that the voice {self.voice!r} is installed (`espeak-ng --voices=en`)"
                )
            samples, sample_rate = soundfile.read(wav, dtype="float32", always_2d=True)
        if samples.shape[0] == 0:
            raise TTSError(f"espeak-ng wrote an empty recording for {spoken!r}; expected speech")
        return samples.mean(axis=1).astype(np.float32), int(sample_rate)


class EspeakUtterance:
    """One reply of an EspeakEngine, a sentence at a time (espeak-ng is deterministic)."""

    def __init__(self, engine: EspeakEngine, style: np.ndarray | None, params: StrategyParams, seed: int):
        self.engine, self.seed = engine, seed
        self.knobs = espeak_knobs(params)
        self.sample_rate = 0  # espeak-ng's own, known after the first sentence
        self.spoken = SpokenSentences(
            ["the espeak-ng voice cannot take a style vector; the style was ignored"] if style is not None else [])

    def add(self, sentence: str) -> np.ndarray:
        audio, self.sample_rate = self.engine._run(sentence, self.knobs)
        if float(np.max(np.abs(audio))) >= FULL_SCALE:
            self.spoken.notes.append(f"espeak-ng output reaches full scale at amplitude {self.knobs.amplitude}; "
                                     "it may clip")
        return self.spoken.append(sentence, audio, int(SENTENCE_PAUSE_SECONDS * self.sample_rate))

    def result(self) -> SynthesisResult:
        return self.spoken.result(self.sample_rate, self.engine.name, False, self.seed,
                                  {**asdict(self.knobs), "voice": self.engine.voice})
