import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from es4r import audio
from es4r.audio import SAMPLE_RATE, AudioError, TurnMels, load_audio, log_mel, prepare_waveform, turn_energy
from es4r.config import AudioConfig


def _tone(seconds=1.0, rate=SAMPLE_RATE, level=0.3):
    t = np.arange(int(seconds * rate)) / rate
    return (level * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_real_clip_loads(speech_paths):
    wave = load_audio(speech_paths[0])
    assert wave.samples.dtype == np.float32 and 1.0 < wave.seconds < 10.0
    assert wave.notes == ()


@pytest.mark.parametrize("data, message", [
    (np.zeros(0, np.float32), "empty"),
    (np.zeros(SAMPLE_RATE, np.float32), "silent"),
    (_tone(0.1), "too short"),
    (np.full(SAMPLE_RATE, np.nan, np.float32), "NaN"),
])
def test_bad_samples_are_refused(data, message):
    with pytest.raises(AudioError, match=message):
        prepare_waveform(data, SAMPLE_RATE)


def test_too_long_states_the_limit():
    with pytest.raises(AudioError, match="limit is 2 s"):
        prepare_waveform(_tone(3.0), SAMPLE_RATE, AudioConfig(max_seconds=2.0))


def test_infinite_samples_refused():
    data = _tone()
    data[10] = np.inf
    with pytest.raises(AudioError, match="infinity"):
        prepare_waveform(data, SAMPLE_RATE)


def test_stereo_is_downmixed_both_layouts():
    stereo = np.stack([_tone(), _tone() * 0.5], axis=1)  # (n, 2)
    a = prepare_waveform(stereo, SAMPLE_RATE)
    b = prepare_waveform(stereo.T, SAMPLE_RATE)  # (2, n)
    assert a.samples.shape == (SAMPLE_RATE,) and np.allclose(a.samples, b.samples)
    assert "downmixed" in a.conversions[0] and a.notes == ()  # every microphone's stereo: nothing to act on


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_any_rate_is_resampled(rate):
    wave = prepare_waveform(_tone(1.0, rate), rate)
    assert abs(len(wave.samples) - SAMPLE_RATE) <= 2
    assert any("resampled" in n for n in wave.conversions) and wave.notes == ()


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.uint8])
def test_int_pcm(dtype):
    info = np.iinfo(dtype)
    tone = _tone()
    if info.min < 0:
        data = (tone * info.max).astype(dtype)
    else:
        data = ((tone + 1) / 2 * info.max).astype(dtype)
    wave = prepare_waveform(data, SAMPLE_RATE)
    assert np.corrcoef(wave.samples, tone)[0, 1] > 0.99


def test_clipped_audio_is_noted():
    wave = prepare_waveform(np.clip(_tone(level=3.0), -1, 1), SAMPLE_RATE)
    assert any("clipped" in n for n in wave.notes)


def test_corrupt_and_non_audio_files(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage" * 20)
    with pytest.raises(AudioError, match="corrupt"):
        load_audio(bad)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(AudioError):
        load_audio(text)
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "missing.wav")


def test_huge_upload_refused(tmp_path):
    path = tmp_path / "big.wav"
    sf.write(path, _tone(2.0), SAMPLE_RATE)
    with pytest.raises(AudioError, match="too large"):
        load_audio(path, AudioConfig(max_upload_bytes=1000))


def test_bytes_input(speech_paths):
    wave = load_audio(speech_paths[0].read_bytes())
    assert wave.seconds > 1.0
    buffer = io.BytesIO()
    sf.write(buffer, _tone(), SAMPLE_RATE, format="FLAC")
    assert load_audio(buffer.getvalue()).seconds == pytest.approx(1.0, abs=0.01)


def test_log_mel_shape_follows_bins_and_length(speech_paths):
    samples = load_audio(speech_paths[0]).samples
    for bins in (80, 128):
        mel = log_mel(samples, bins)
        assert mel.shape == (bins, len(samples) // 160)


def test_energy_tracks_loudness_and_not_length(speech_paths):
    """E_i is a mean over frames: the same speech said twice in a row has the same energy (a
    sum, or a norm over time, would grow with how long someone spoke), and scaling is linear."""
    samples = load_audio(speech_paths[0]).samples
    assert turn_energy(samples * 0.25) < turn_energy(samples * 0.5) < turn_energy(samples)
    assert turn_energy(np.concatenate([samples, samples])) == pytest.approx(turn_energy(samples), rel=0.02)
    assert turn_energy(samples * 0.5) == pytest.approx(0.5 * turn_energy(samples), rel=1e-4)


def _signals(seconds: float = 2.0) -> dict[str, np.ndarray]:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    noise = np.random.default_rng(0).standard_normal(len(t))
    return {"noise": 0.1 * noise, "hum": 0.3 * np.sin(2 * np.pi * 50 * t),
            "tone": 0.3 * np.sin(2 * np.pi * 440 * t), "square": 0.3 * np.sign(np.sin(2 * np.pi * 220 * t))}


def test_voice_activity_separates_speech_from_noise_and_tones(speech_paths):
    from es4r.vad import speech_seconds

    for path in speech_paths[:2]:
        wave = load_audio(path)
        assert speech_seconds(wave.samples) > 0.5 * wave.seconds  # most of a spoken clip is speech
    for name, signal in _signals().items():
        assert speech_seconds(signal.astype(np.float32)) < AudioConfig().min_speech_seconds, name


def test_the_voice_activity_check_leaves_torch_threads_alone():
    """silero_vad sets torch to one thread when it is imported; the LLM decodes on every core."""
    import subprocess
    import sys

    code = ("import torch; torch.set_num_threads(2); import numpy as np; from es4r.vad import speech_seconds; "
            "speech_seconds(np.zeros(16000, np.float32)); print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    assert out.stdout.strip().splitlines()[-1] == "2"


def test_the_warm_up_reaches_what_a_turn_compiles():
    """setup.sh and the app's start run warm_up_audio so a first turn compiles nothing: it must
    touch the resampler and librosa's pitch module (imported with the mel spectrogram, its numba
    helpers compile on import) — 2.5 s of a fresh install's first turn otherwise. A process of
    its own, so no other test has imported them first."""
    import subprocess
    import sys

    code = ("import sys; from es4r.audio import warm_up_audio; assert warm_up_audio() > 0; "
            "print(all(m in sys.modules for m in ('librosa.core.pitch', 'librosa.core.audio')))")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           cwd=Path(__file__).resolve().parent.parent)
    assert shown.stdout.strip() == "True", shown.stderr[-2000:]


def test_turn_mels_are_made_once_per_recording(speech_paths, monkeypatch):
    made = []
    monkeypatch.setattr(audio, "log_mel", lambda samples, n_mels: made.append(len(samples)) or log_mel(samples, n_mels))
    mels = TurnMels(80, keep=2)
    first = load_audio(speech_paths[0]).samples
    mel = mels(first, SAMPLE_RATE)
    np.testing.assert_array_equal(mel, log_mel(first, 80))
    assert mels(first, SAMPLE_RATE) is mel and len(made) == 1  # heard again: kept
    copy = first.copy()  # another recording with the same samples is another turn
    np.testing.assert_array_equal(mels(copy, SAMPLE_RATE), mel)
    assert len(made) == 2
    reply = np.ascontiguousarray(first[::2])  # a reply at another rate is resampled to Whisper's first
    assert mels(reply, SAMPLE_RATE // 2).shape[1] == pytest.approx(mel.shape[1], abs=2)
    assert len(made) == 3 and made[-1] == pytest.approx(len(first), abs=2)
    assert mels(first, SAMPLE_RATE) is not mel and len(made) == 4  # the oldest of three was let go (keep=2)
