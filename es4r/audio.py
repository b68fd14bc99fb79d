"""Audio in: loading, validation, resampling, log-mel features and per-turn energy.

Constants are Whisper's, defined once and derived from each other; everything else imports
them from here."""

from __future__ import annotations

import io
import logging
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from es4r.config import AudioConfig

logger = logging.getLogger(__name__)
PEAK_NOTE_ABOVE = 1.01  # a peak this far over full scale is worth telling the user about

SAMPLE_RATE = AudioConfig.sample_rate  # Whisper's input rate, set once (config.AudioConfig)
N_FFT = 400  # 25 ms window
HOP_LENGTH = 160  # 10 ms hop
CHUNK_LENGTH = 30  # seconds in one Whisper window
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480000 samples in a window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames in a window
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100
ENCODER_STRIDE = 2  # Whisper's second conv halves the frame rate


class AudioError(ValueError):
    """Bad input audio; the message is written for the person who supplied it."""


@dataclass(frozen=True)
class Waveform:
    samples: np.ndarray  # (n,) float32 mono at SAMPLE_RATE
    notes: tuple[str, ...] = ()  # what a person should act on (clipped, rescaled): shown beside the turn
    conversions: tuple[str, ...] = ()  # what every microphone needs (downmixed, resampled): kept in the export only

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def _to_float(data: np.ndarray) -> np.ndarray:
    """int PCM -> float in [-1, 1]; float passes through."""
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        scale = max(abs(info.min), info.max)
        offset = 0 if info.min < 0 else (info.max + 1) / 2  # unsigned 8-bit PCM is offset
        return ((data.astype(np.float64) - offset) / scale).astype(np.float32)
    if np.issubdtype(data.dtype, np.floating):
        return data.astype(np.float32)
    raise AudioError(f"unsupported sample type {data.dtype}; expected integer or float PCM")


def prepare_waveform(
    data: np.ndarray, sample_rate: int, config: AudioConfig = AudioConfig()
) -> Waveform:
    """Validate and normalise raw samples: mono, 16 kHz, float32, finite, audible, in range.

    Accepts (n,), (n, channels) or (channels, n) arrays of int or float PCM."""
    data = np.asarray(data)
    notes: list[str] = []
    conversions: list[str] = []
    if data.size == 0:
        raise AudioError("The recording is empty. Please record again.")
    if not sample_rate or sample_rate <= 0:
        raise AudioError(f"Invalid sample rate {sample_rate!r}; expected a positive number of Hz.")
    audio = _to_float(data)
    if audio.ndim == 2:
        channel_axis = 0 if audio.shape[0] < audio.shape[1] else 1
        audio = audio.mean(axis=channel_axis)
        conversions.append(f"downmixed {data.shape[channel_axis]} channels to mono")
    elif audio.ndim != 1:
        raise AudioError(f"Audio has shape {data.shape}; expected mono or stereo samples.")
    if not np.all(np.isfinite(audio)):
        raise AudioError("The audio contains invalid samples (NaN or infinity); it may be corrupt.")
    if sample_rate != config.sample_rate:
        import librosa

        audio = librosa.resample(audio, orig_sr=sample_rate, target_sr=config.sample_rate)
        conversions.append(f"resampled {sample_rate} Hz to {config.sample_rate} Hz")
    seconds = len(audio) / config.sample_rate
    if seconds < config.min_seconds:
        raise AudioError(
            f"The recording is too short ({seconds:.2f} s); please speak for at least "
            f"{config.min_seconds:.1f} s."
        )
    if seconds > config.max_seconds:
        raise AudioError(
            f"The recording is too long ({seconds:.1f} s); the limit is {config.max_seconds:.0f} s "
            "per turn. Please split it into shorter turns."
        )
    peak = float(np.max(np.abs(audio)))
    if peak > 1.0:  # resampling can overshoot full scale by a hair: rescale quietly then
        audio = audio / peak
        if peak > PEAK_NOTE_ABOVE:
            notes.append(f"rescaled out-of-range samples (peak {peak:.2f})")
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    if rms < config.silence_rms:
        raise AudioError("The recording is silent. Check the microphone and speak a little louder.")
    clipped = float(np.mean(np.abs(audio) >= 0.999))
    if clipped > config.clip_fraction:
        notes.append(f"{clipped:.0%} of samples are clipped; the recording may be distorted")
        logger.warning("input audio is clipped (%.1f%% of samples at full scale)", 100 * clipped)
    return Waveform(np.ascontiguousarray(audio, dtype=np.float32), tuple(notes), tuple(conversions))


def load_audio(source: str | Path | bytes, config: AudioConfig = AudioConfig()) -> Waveform:
    """Read a file (path or bytes) and validate it. Corrupt or non-audio files raise AudioError."""
    import soundfile as sf

    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise AudioError(f"Audio file not found: {path}")
        size = path.stat().st_size
        if size > config.max_upload_bytes:
            raise AudioError(
                f"The file is too large ({size / 2**20:.1f} MB); the limit is "
                f"{config.max_upload_bytes / 2**20:.0f} MB."
            )
        handle: object = str(path)
    else:
        if len(source) > config.max_upload_bytes:
            raise AudioError(f"The upload is too large; the limit is {config.max_upload_bytes / 2**20:.0f} MB.")
        handle = io.BytesIO(source)
    try:
        data, rate = sf.read(handle, dtype="float32", always_2d=False)
    except Exception as error:  # soundfile raises several types for unreadable input
        data, rate = _load_with_librosa(source, error)
    return prepare_waveform(data, rate, config)


def _load_with_librosa(source: str | Path | bytes, first_error: Exception) -> tuple[np.ndarray, int]:
    """Second chance for formats libsndfile lacks (e.g. browser webm/mp4 via audioread)."""
    if not isinstance(source, (str, Path)):
        raise AudioError("This file is not readable audio (it may be corrupt or not an audio file).") from first_error
    try:
        import librosa

        with warnings.catch_warnings():  # librosa's "PySoundFile failed" notes: we report failure ourselves
            warnings.simplefilter("ignore")
            data, rate = librosa.load(str(source), sr=None, mono=False)
    except Exception as error:
        raise AudioError(
            f"Could not read {Path(source).name} as audio; it may be corrupt or in an unsupported format "
            "(WAV, FLAC, OGG and MP3 work)."
        ) from error
    if data.ndim == 2:
        data = data.T
    return data, int(rate)


def log_mel(samples: np.ndarray, n_mels: int) -> np.ndarray:
    """Whisper's log-mel spectrogram of one turn, unpadded: (n_mels, frames) float32.

    Uses transformers' WhisperFeatureExtractor maths (so features match what the frozen
    encoder saw in pretraining) without padding to 30 s."""
    import torch  # the extractor computes with torch when it is installed

    extractor = _extractor(n_mels)
    with torch.autocast("cpu", enabled=False):  # fp32 features also inside a bf16 training step (affect pairs)
        features = extractor(
            samples, sampling_rate=SAMPLE_RATE, return_tensors="np", padding="longest",
            return_attention_mask=False,
        ).input_features[0]
    frames = max(1, len(samples) // HOP_LENGTH)
    return features[:, :frames].astype(np.float32)


class TurnMels:
    """Each turn's log-mel (`log_mel`), made once per recording and kept while the
    conversation goes on: the speech path hears every turn again each turn, and a turn's audio
    never changes. Keyed by the audio array itself (held here, so its id is never reused);
    the oldest are dropped beyond `keep`. Thread-safe: a turn is heard on the pipeline's
    worker thread while the next recording is added on the caller's."""

    def __init__(self, n_mels: int, keep: int = 64):
        self.n_mels, self.keep = n_mels, keep
        self._mels: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """The log-mel of `audio` (at `sample_rate`; resampled to SAMPLE_RATE first). Shared
        with every later turn that hears this one: read it, never change it."""
        key = (id(audio), sample_rate)
        with self._lock:
            kept = self._mels.get(key)
            if kept is not None and kept[0] is audio:
                self._mels.move_to_end(key)
                return kept[1]
        samples = np.asarray(audio, dtype=np.float32)
        if sample_rate != SAMPLE_RATE:
            import librosa

            samples = librosa.resample(samples, orig_sr=sample_rate, target_sr=SAMPLE_RATE)
        mel = log_mel(samples, self.n_mels)
        with self._lock:
            self._mels[key] = (audio, mel)
            while len(self._mels) > self.keep:
                self._mels.popitem(last=False)
        return mel


_EXTRACTORS: dict[int, object] = {}


def _extractor(n_mels: int):
    from transformers import WhisperFeatureExtractor

    if n_mels not in _EXTRACTORS:
        _EXTRACTORS[n_mels] = WhisperFeatureExtractor(
            feature_size=n_mels, sampling_rate=SAMPLE_RATE, hop_length=HOP_LENGTH,
            chunk_length=CHUNK_LENGTH, n_fft=N_FFT,
        )
    return _EXTRACTORS[n_mels]


def turn_energy(samples: np.ndarray, n_mels: int = 80) -> float:
    """Paper Sec. 3.3: E_i = mean over frames of the L2 norm of the (linear-magnitude)
    mel-spectrogram frame. Linear magnitude keeps loudness in the measure; Whisper's
    log-mel is normalised per clip and would hide it."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=samples.astype(np.float32), sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH,
        n_mels=n_mels, power=1.0,
    )
    return float(np.linalg.norm(mel, axis=0).mean())


WARM_UP_RATES = (22_050, SAMPLE_RATE)  # a Piper reply resampled to Whisper's rate, as every later turn does


def warm_up_audio() -> float:
    """Resample a short clip and take its turn energy once, so numba compiles librosa's helpers
    and caches them on disk: on a fresh install the resampler's first call took 15 s here and
    the first mel spectrogram 2.5 s (it imports librosa's pitch module, whose helpers compile
    on import), which would otherwise fall on the first visitor's turn; a later process loads
    the cached code in about 2 s, at start-up instead of in a turn. Returns the seconds."""
    import time

    import librosa

    start = time.perf_counter()
    clip = librosa.resample(np.zeros(WARM_UP_RATES[0] // 10, dtype=np.float32), orig_sr=WARM_UP_RATES[0],
                            target_sr=WARM_UP_RATES[1])
    turn_energy(clip)
    return time.perf_counter() - start
