"""StyleTTS2 engine on a tiny random checkpoint in the official layout (es4r/voice/styletts2*.py,
es4r/voice/phonemes.py). Real speech comes from espeak-ng and pocketsphinx-testdata."""

import dataclasses
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from es4r.config import RANDOM, default_strategy_table
from es4r.voice import styletts2 as st2
from es4r.voice.base import TTSEngine, TTSError
from es4r.voice.phonemes import check_espeak, phonemize_en, tokenize_like_nltk
from es4r.voice.styletts2 import StyleTTS2Engine, is_noise_like, make_tiny_styletts2_checkpoint
from es4r.voice.styletts2_checkpoint import TINY_CHECKPOINT_NAME, TINY_MAX_PHONEME_FRAMES, StyleTTS2CheckpointError
from es4r.voice.styletts2_networks import StyleTTS2ConfigError

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

NEUTRAL = default_strategy_table()["neutral"]
REPLY = "I am here for you, always."
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
SAMPLES_PER_FRAME = 600  # tiny hifigan: 2 x upsampling after alignment, x 300 hop


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread; the shared test machine has two busy cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return make_tiny_styletts2_checkpoint(tmp_path_factory.mktemp("tiny_styletts2"), seed=0)


@pytest.fixture(scope="module")
def engine(tiny_folder) -> StyleTTS2Engine:
    return StyleTTS2Engine.from_pretrained(str(tiny_folder))


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> tuple[np.ndarray, int]:
    """A real (formant-synthesised) English utterance from espeak-ng."""
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "I have been feeling a bit lonely lately."], check=True)
    samples, rate = sf.read(path, dtype="float32")
    return samples, rate


@pytest.fixture(scope="module")
def style(engine, speech) -> np.ndarray:
    return engine.extract_style(*speech)


@pytest.fixture(scope="module")
def neutral(engine, style):
    return engine.synthesize(REPLY, style, NEUTRAL, seed=3)


def _copy_with(tiny_folder: Path, tmp_path: Path, edit) -> Path:
    folder = tmp_path / "edited"
    shutil.copytree(tiny_folder, folder)
    state = torch.load(folder / TINY_CHECKPOINT_NAME, weights_only=True)
    edit(state["net"])
    torch.save(state, folder / TINY_CHECKPOINT_NAME)
    return folder


# ---- loading --------------------------------------------------------------------------------
def test_tiny_checkpoint_round_trips_strictly(engine, tiny_folder):
    saved = torch.load(tiny_folder / TINY_CHECKPOINT_NAME, weights_only=True)["net"]
    assert isinstance(engine, TTSEngine) and engine.status == RANDOM and engine.accepts_style
    for name, module in engine.networks.items():
        loaded = module.state_dict()
        assert {k.removeprefix("module.") for k in saved[name]} == set(loaded)
        for key, value in saved[name].items():
            assert torch.equal(loaded[key.removeprefix("module.")], value), (name, key)
    config = yaml.safe_load((tiny_folder / "config.yml").read_text())
    assert engine.style_dim == 2 * config["model_params"]["style_dim"]


def test_missing_key_is_named(tiny_folder, tmp_path):
    folder = _copy_with(tiny_folder, tmp_path, lambda net: net["decoder"].pop("module.F0_conv.bias"))
    with pytest.raises(StyleTTS2CheckpointError, match=r"net\['decoder'\].*missing keys \['F0_conv.bias'\]"):
        StyleTTS2Engine.from_pretrained(str(folder))


def test_unexpected_key_is_named(tiny_folder, tmp_path):
    def add(net):
        net["predictor"]["module.extra_head.weight"] = torch.zeros(2)
    folder = _copy_with(tiny_folder, tmp_path, add)
    with pytest.raises(StyleTTS2CheckpointError, match=r"unexpected keys \['extra_head.weight'\]"):
        StyleTTS2Engine.from_pretrained(str(folder))


def test_missing_network_and_wrong_shape_fail(tiny_folder, tmp_path):
    folder = _copy_with(tiny_folder, tmp_path, lambda net: net.pop("diffusion"))
    with pytest.raises(StyleTTS2CheckpointError, match="lacks \\['diffusion'\\]"):
        StyleTTS2Engine.from_pretrained(str(folder))
    def widen(net):
        net["bert_encoder"]["module.bias"] = torch.zeros(999)
    folder = _copy_with(tiny_folder, tmp_path / "b", widen)
    with pytest.raises(StyleTTS2CheckpointError, match="bert_encoder.*wrong shapes"):
        StyleTTS2Engine.from_pretrained(str(folder))


def test_legacy_position_ids_buffer_is_accepted(tiny_folder, tmp_path):
    def add(net):
        net["bert"]["module.embeddings.position_ids"] = torch.arange(128)[None]
    folder = _copy_with(tiny_folder, tmp_path, add)
    assert StyleTTS2Engine.from_pretrained(str(folder)).status == RANDOM


def test_config_without_a_size_names_it(tiny_folder, tmp_path):
    folder = tmp_path / "cfg"
    shutil.copytree(tiny_folder, folder)
    raw = yaml.safe_load((folder / "config.yml").read_text())
    del raw["model_params"]["style_dim"]
    (folder / "config.yml").write_text(yaml.safe_dump(raw))
    with pytest.raises(StyleTTS2ConfigError, match="model_params.style_dim"):
        StyleTTS2Engine.from_pretrained(str(folder))


def test_denoiser_options_outside_the_official_layout_are_named(tiny_folder, tmp_path):
    folder = tmp_path / "cfg"
    shutil.copytree(tiny_folder, folder)
    raw = yaml.safe_load((folder / "config.yml").read_text())
    raw["model_params"]["diffusion"]["transformer"]["use_rel_pos"] = True
    (folder / "config.yml").write_text(yaml.safe_dump(raw))
    with pytest.raises(StyleTTS2ConfigError, match="transformer has .*'use_rel_pos'.*expected exactly"):
        StyleTTS2Engine.from_pretrained(str(folder))


def test_missing_folder_says_what_to_pass(tmp_path):
    with pytest.raises(StyleTTS2CheckpointError, match="config.yml"):
        StyleTTS2Engine.from_pretrained(str(tmp_path / "nowhere"))
    with pytest.raises(StyleTTS2CheckpointError, match="expected one StyleTTS2 config.yml"):
        StyleTTS2Engine.from_pretrained(str(tmp_path))


# ---- style ----------------------------------------------------------------------------------
def test_reference_mel_matches_librosa(engine, speech):
    import librosa

    wave = librosa.resample(speech[0], orig_sr=speech[1], target_sr=engine.sample_rate)
    cfg = engine.config
    mel = librosa.feature.melspectrogram(y=wave, sr=st2.TORCHAUDIO_DEFAULT_MEL_RATE, n_fft=cfg.n_fft,
                                         hop_length=cfg.hop_length, win_length=cfg.win_length, center=True,
                                         pad_mode="reflect", power=2.0, n_mels=cfg.n_mels, htk=True, norm=None)
    expected = (np.log(st2.MEL_LOG_FLOOR + mel) - st2.MEL_MEAN) / st2.MEL_STD
    ours = engine.reference_mel(wave)[0, 0].numpy()
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=1e-3)


def test_style_has_the_engine_shape_and_depends_on_the_voice(engine, speech, style):
    assert style.shape == (engine.style_dim,) and style.dtype == np.float32 and np.isfinite(style).all()
    lower = speech[0][:: 2].copy()  # same words at half the sample rate claim: an octave lower
    other = engine.extract_style(lower, speech[1])
    assert not np.allclose(style, other)
    short = engine.extract_style(speech[0][: int(0.3 * speech[1])], speech[1])  # below 1 s: repeated
    assert short.shape == style.shape and np.isfinite(short).all()


# ---- synthesis ------------------------------------------------------------------------------
def test_synthesis_is_finite_bounded_and_sensibly_long(engine, neutral):
    wave = neutral.waveform
    assert neutral.sample_rate == 24_000 and neutral.engine == "styletts2" and neutral.used_style
    assert wave.dtype == np.float32 and wave.ndim == 1 and np.isfinite(wave).all()
    assert np.abs(wave).max() <= 1.0 and np.abs(wave).max() > 0
    tokens = len(engine.tokens(REPLY))  # one sentence, long enough not to be padded
    assert tokens >= st2.MIN_PHONEME_TOKENS
    low = tokens * SAMPLES_PER_FRAME - st2.TAIL_PULSE_SAMPLES
    high = tokens * TINY_MAX_PHONEME_FRAMES * SAMPLES_PER_FRAME
    assert low <= wave.size <= high
    assert neutral.params["alpha"] == NEUTRAL.alpha and neutral.params["sentences"] == 1


def test_same_seed_renders_identically_and_other_seeds_differ(engine, style, neutral):
    again = engine.synthesize(REPLY, style, NEUTRAL, seed=3)
    np.testing.assert_array_equal(again.waveform, neutral.waveform)
    other = engine.synthesize(REPLY, style, NEUTRAL, seed=4)
    assert other.waveform.shape != neutral.waveform.shape or not np.array_equal(other.waveform, neutral.waveform)


@pytest.mark.parametrize("change", [{"alpha": 0.9}, {"beta": 0.1}])
def test_alpha_and_beta_change_the_waveform(engine, style, neutral, change):
    result = engine.synthesize(REPLY, style, dataclasses.replace(NEUTRAL, **change), seed=3)
    assert result.waveform.shape != neutral.waveform.shape or not np.allclose(result.waveform, neutral.waveform)


def test_without_a_style_the_diffused_style_speaks(engine):
    result = engine.synthesize(REPLY, None, NEUTRAL, seed=0)
    assert not result.used_style and np.isfinite(result.waveform).all() and result.waveform.size > 0


def test_long_replies_are_split_with_pauses(engine, style):
    reply = "That sounds really hard to carry. I am here with you now."
    result = engine.synthesize(reply, style, NEUTRAL, seed=0)
    assert result.params["sentences"] == 2
    pause = int(st2.SENTENCE_PAUSE_SECONDS * result.sample_rate)
    silent = np.flatnonzero(result.waveform == 0.0)
    runs = np.split(silent, np.flatnonzero(np.diff(silent) != 1) + 1)
    assert max(len(run) for run in runs) >= pause


def test_short_text_is_padded_then_cut_back(engine, style):
    tokens = engine.tokens("Hi.")
    assert len(tokens) < st2.MIN_PHONEME_TOKENS
    result = engine.synthesize("Hi.", style, NEUTRAL, seed=0)
    assert 0 < result.waveform.size <= len(tokens) * TINY_MAX_PHONEME_FRAMES * SAMPLES_PER_FRAME


def test_overflowing_style_is_clamped_with_a_note(engine, style):
    wild = style.copy()
    wild[0], wild[1] = np.inf, 1e9
    result = engine.synthesize(REPLY, wild, NEUTRAL, seed=0)
    assert np.isfinite(result.waveform).all()
    assert any("clamped" in note for note in result.notes)


def test_bad_inputs_raise_clear_errors(engine, style):
    with pytest.raises(TTSError, match=f"shape \\({engine.style_dim},\\)"):
        engine.synthesize(REPLY, style[:3], NEUTRAL)
    with pytest.raises(TTSError, match="nothing speakable"):
        engine.synthesize("🙂 **", style, NEUTRAL)
    with pytest.raises(ValueError, match="diffusion_steps must be >= 2"):
        engine.synthesize(REPLY, style, dataclasses.replace(NEUTRAL, diffusion_steps=1))


def test_istftnet_decoder_variant(tmp_path, style):
    engine = StyleTTS2Engine.from_pretrained(str(make_tiny_styletts2_checkpoint(tmp_path, decoder="istftnet")))
    result = engine.synthesize(REPLY, style, NEUTRAL, seed=0)
    assert np.isfinite(result.waveform).all() and 0 < np.abs(result.waveform).max() <= 1.0


# ---- noise guard ----------------------------------------------------------------------------
def test_noise_guard_flags_white_noise_not_speech(speech):
    noise = np.random.default_rng(0).standard_normal(24_000).astype(np.float32) * 0.3
    assert is_noise_like(noise)
    assert not is_noise_like(speech[0])
    assert not is_noise_like(np.zeros(24_000, dtype=np.float32))
    for clip in sorted(LIBRIVOX.glob("*.wav"))[:2]:  # real read speech, when installed
        assert not is_noise_like(sf.read(clip, dtype="float32")[0])


def test_noise_guard_retries_once_with_safer_settings(engine, style, monkeypatch):
    renders = []
    original = StyleTTS2Engine._render
    monkeypatch.setattr(StyleTTS2Engine, "_render", lambda self, *a: renders.append(a[2]) or original(self, *a))
    monkeypatch.setattr(st2, "is_noise_like", lambda waveform: True)
    result = engine.synthesize(REPLY, style, dataclasses.replace(NEUTRAL, embedding_scale=2.0), seed=0)
    assert len(renders) == 2 and result.params["retried"]
    safe = renders[1]
    assert safe.embedding_scale == st2.SAFE_EMBEDDING_SCALE and safe.beta < NEUTRAL.beta
    assert safe.diffusion_steps >= st2.SAFE_MIN_STEPS
    assert any("re-rendered" in n for n in result.notes) and any("still noise-like" in n for n in result.notes)


# ---- phonemes -------------------------------------------------------------------------------
def test_phonemize_en_gives_stressed_ipa_with_spaced_punctuation():
    phonemes = phonemize_en("Hello, world!")
    assert "ˈ" in phonemes and phonemes.endswith(" !") and " , " in phonemes
    assert tokenize_like_nltk('aɪ "sɛd" hˈaɪ,ðɛn…') == "aɪ sɛd hˈaɪ , ðɛn …"
    assert phonemize_en("  ") == ""


def test_check_espeak_says_how_to_install(monkeypatch):
    check_espeak()
    from phonemizer.backend import EspeakBackend

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(EspeakBackend, "is_available", staticmethod(lambda: False))
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
        check_espeak()


def test_missing_espeak_is_reported_when_the_engine_loads(monkeypatch, tmp_path):
    from phonemizer.backend import EspeakBackend

    folder = make_tiny_styletts2_checkpoint(tmp_path / "tts")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(EspeakBackend, "is_available", staticmethod(lambda: False))
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
        StyleTTS2Engine.from_pretrained(str(folder))
