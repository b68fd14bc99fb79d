"""The StyleTTS2 voice (paper Sec. 3.3): reference style extraction and style-diffusion
synthesis with a strategy's alpha / beta, loaded strictly from the official checkpoint layout.

Inference follows StyleTTS2's LibriTTS demo: ref_s = [acoustic style, prosodic style] of a
24 kHz reference mel; the diffusion samples a style from the PL-BERT text embedding
conditioned on ref_s, and alpha (acoustic) / beta (prosodic) mix the sample with ref_s."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import torch

from es4r.config import RANDOM, TRAINED, StrategyParams
from es4r.voice.base import SpokenSentences, SynthesisResult, TTSError, speak_whole
from es4r.voice.phonemes import check_espeak, phonemize_en
from es4r.voice.styletts2_checkpoint import load_checkpoint_folder, make_tiny_styletts2_checkpoint
from es4r.voice.styletts2_diffusion import ADPM2Sampler, DiffusionSampler, KarrasSchedule
from es4r.voice.styletts2_networks import MIN_STYLE_FRAMES, StyleTTS2Config

logger = logging.getLogger(__name__)

__all__ = ["StyleTTS2Engine", "make_tiny_styletts2_checkpoint", "is_noise_like", "spectral_flatness"]

ENGINE_NAME = "styletts2"
# Reference mel exactly as StyleTTS2 trained it: torchaudio.MelSpectrogram built without a
# sample_rate, so its filters assume torchaudio's default 16 kHz (f_max 8 kHz) although the
# audio is 24 kHz; then log(1e-5 + mel), normalised with mean -4, std 4.
TORCHAUDIO_DEFAULT_MEL_RATE = 16_000
MEL_LOG_FLOOR = 1e-5
MEL_MEAN, MEL_STD = -4.0, 4.0
REFERENCE_TRIM_TOP_DB = 30  # the demo trims reference silence quieter than this
# Sampler of the LibriTTS demo: ADPM2 with a Karras schedule ("empirical parameters").
SIGMA_MIN, SIGMA_MAX, KARRAS_RHO = 1e-4, 3.0, 9.0
MIN_DIFFUSION_STEPS = 2  # the Karras schedule divides by (steps - 1)
STYLE_CONTINUITY = 0.7  # long-form demo's t: weight of the previous sentence's style
START_TOKEN = 0  # the pad symbol '$' the demo prepends to every phoneme sequence
TAIL_PULSE_SAMPLES = 50  # the demo drops the decoder's last 50 samples (a click at the end)
SENTENCE_PAUSE_SECONDS = 0.2  # silence between concatenated sentences
# Very short inputs were never seen in training (clips under 1 s were skipped) and can come
# out as loud noise: sequences under ~1 s of speech are padded by repeating themselves,
# synthesised, then cut back at the predicted end of the original tokens.
MIN_PHONEME_TOKENS = 16
SHORT_TEXT_JOINER = " … "
# Noise guard: spectral flatness is ~0.56 for white noise, 0.18 for pink noise and below 0.03
# for speech (espeak-ng and LibriVox clips measured 0.0004-0.024).
NOISE_FLATNESS = 0.3  # median flatness of active frames at or above this = noise-like
NOISE_MIN_RMS = 1e-3  # quieter output is silence, not noise
GUARD_FRAME = 1024  # samples per analysis frame (43 ms at 24 kHz)
ACTIVE_FRAME_DB = -30.0  # frames this far below the loudest frame are ignored
SAFE_EMBEDDING_SCALE = 1.0  # classifier-free guidance > 1 is the known trigger
SAFE_MIX_FACTOR = 0.5  # the retry halves alpha and beta (leans on the reference)
SAFE_MIN_STEPS = 10  # and samples the style with at least this many diffusion steps
STYLE_ABS_LIMIT = 10.0  # trained style vectors stay within a few units; clamp beyond
PEAK_LIMIT = 0.99  # output peaks above 1 are scaled down to this
# StyleTTS2's phoneme symbols (index = token id): pad, punctuation, ASCII letters, IPA letters. From
# `text_utils.py` of the PyPI `styletts2` package 0.1.6 (MIT; Copyright (c) 2023 Sidharth Rajaram;
# from StyleTTS2: Copyright (c) 2023 Aaron (Yinghao) Li). "'" appears twice; the later id wins.
_PAD = "$"
_PUNCTUATION = ';:,.!?¡¿—…"«»“” '
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_LETTERS_IPA = "ɑɐɒæɓʙβɔɕçɗɖðʤəɘɚɛɜɝɞɟʄɡɠɢʛɦɧħɥʜɨɪʝɭɬɫɮʟɱɯɰŋɳɲɴøɵɸθœɶʘɹɺɾɻʀʁɽʂʃʈʧʉʊʋⱱʌɣɤʍχʎʏʑʐʒʔʡʕʢǀǁǂǃˈˌːˑʼʴʰʱʲʷˠˤ˞↓↑→↗↘'̩'ᵻ"
SYMBOLS = (_PAD, *_PUNCTUATION, *_LETTERS, *_LETTERS_IPA)


def _frame_power(waveform: np.ndarray) -> np.ndarray:
    """(frames, bins) power spectra of Hann-windowed, half-overlapping frames."""
    padded = np.pad(waveform.astype(np.float64), (0, max(0, GUARD_FRAME - len(waveform))))
    frames = np.lib.stride_tricks.sliding_window_view(padded, GUARD_FRAME)[:: GUARD_FRAME // 2]
    return np.abs(np.fft.rfft(frames * np.hanning(GUARD_FRAME), axis=-1)) ** 2


def spectral_flatness(waveform: np.ndarray) -> float:
    """Median spectral flatness (geometric / arithmetic mean power) over the active frames."""
    power = _frame_power(waveform) + 1e-20
    energy = power.sum(axis=-1)
    active = energy >= energy.max() * 10 ** (ACTIVE_FRAME_DB / 10)
    flatness = np.exp(np.log(power[active]).mean(axis=-1)) / power[active].mean(axis=-1)
    return float(np.median(flatness))


def is_noise_like(waveform: np.ndarray) -> bool:
    """True for audible output whose spectrum is flat like white noise (not speech)."""
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.size == 0 or float(np.sqrt(np.mean(waveform**2))) < NOISE_MIN_RMS:
        return False
    return spectral_flatness(waveform) >= NOISE_FLATNESS


def _clean_style(style: torch.Tensor, what: str, notes: list[str]) -> torch.Tensor:
    """Replace non-finite values and clamp runaway ones (random tiny encoders overflow)."""
    if bool(torch.isfinite(style).all()) and float(style.abs().max()) <= STYLE_ABS_LIMIT:
        return style
    notes.append(f"{what} had non-finite or extreme values; clamped to ±{STYLE_ABS_LIMIT:g}")
    return torch.nan_to_num(style, nan=0.0).clamp(-STYLE_ABS_LIMIT, STYLE_ABS_LIMIT)


def _trim_silence(samples: np.ndarray, hop: int) -> np.ndarray:
    """Drop leading / trailing frames REFERENCE_TRIM_TOP_DB below the loudest (librosa's
    effects.trim, without its slow first call)."""
    frames = np.lib.stride_tricks.sliding_window_view(samples, min(hop, samples.size))[::hop]
    power_db = 10 * np.log10(np.maximum((frames.astype(np.float64) ** 2).mean(axis=-1), 1e-20))
    loud = np.flatnonzero(power_db >= power_db.max() - REFERENCE_TRIM_TOP_DB)
    return samples[loud[0] * hop : (loud[-1] + 1) * hop + hop] if loud.size else samples


class StyleTTS2Engine:
    """TTSEngine over StyleTTS2's LibriTTS networks. Build with `from_pretrained`."""

    name = ENGINE_NAME
    accepts_style = True

    def __init__(self, networks: torch.nn.ModuleDict, config: StyleTTS2Config, device: str = "cpu"):
        self.device = torch.device(device)
        self.networks = networks.to(self.device).eval()
        self.config = config
        self.status = RANDOM if config.random else TRAINED
        self.style_dim = 2 * config.style_dim  # acoustic half + prosodic half
        self.sample_rate = config.sample_rate
        self.sampler = DiffusionSampler(
            networks["diffusion"].diffusion, sampler=ADPM2Sampler(),
            sigma_schedule=KarrasSchedule(sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, rho=KARRAS_RHO))
        bert = networks["bert"].config
        self.max_tokens = min(bert.max_position_embeddings,
                              networks["diffusion"].unet.fixed_embedding.max_length)
        self.symbols = {symbol: index for index, symbol in enumerate(SYMBOLS)}
        if len(self.symbols) > config.n_token:
            raise ValueError(f"StyleTTS2 symbol table has {len(self.symbols)} symbols but the model "
                             f"embeds {config.n_token}; config.yml model_params.n_token is wrong")

    @classmethod
    def from_pretrained(cls, path_or_id: str, device: str = "cpu") -> "StyleTTS2Engine":
        """Load a folder (or hub id) holding config.yml + the official .pth, strictly.
        espeak-ng is checked first, so a missing phonemiser is reported at start-up."""
        check_espeak()
        networks, config = load_checkpoint_folder(path_or_id)
        logger.info("StyleTTS2 loaded from %s (%s)", path_or_id, RANDOM if config.random else TRAINED)
        return cls(networks, config, device)

    # ---- style (paper Sec. 3.3) ---------------------------------------------------------
    def reference_mel(self, waveform: np.ndarray) -> torch.Tensor:
        """24 kHz waveform -> normalised log-mel (1, 1, n_mels, frames), StyleTTS2's features."""
        import librosa

        cfg = self.config
        wave = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32)).to(self.device)
        spectrum = torch.stft(wave, cfg.n_fft, cfg.hop_length, cfg.win_length,
                              window=torch.hann_window(cfg.win_length, device=self.device),
                              center=True, pad_mode="reflect", return_complex=True).abs() ** 2
        filters = librosa.filters.mel(sr=TORCHAUDIO_DEFAULT_MEL_RATE, n_fft=cfg.n_fft, n_mels=cfg.n_mels,
                                      fmin=0.0, fmax=TORCHAUDIO_DEFAULT_MEL_RATE / 2, htk=True, norm=None)
        mel = torch.from_numpy(filters).to(self.device) @ spectrum  # (n_mels, frames)
        return ((torch.log(MEL_LOG_FLOOR + mel) - MEL_MEAN) / MEL_STD)[None, None]

    def extract_style(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray:
        """ref_s = [style_encoder(mel), predictor_encoder(mel)], (style_dim,) float32."""
        import librosa

        samples = np.nan_to_num(np.asarray(waveform, dtype=np.float32).squeeze())
        if samples.ndim != 1 or samples.size == 0:
            raise TTSError(f"reference audio must be mono samples (n,); found shape {np.shape(waveform)}")
        if sample_rate != self.sample_rate:
            samples = librosa.resample(samples, orig_sr=sample_rate, target_sr=self.sample_rate)
        samples = _trim_silence(samples, self.config.hop_length)
        needed = (MIN_STYLE_FRAMES - 1) * self.config.hop_length  # the encoders' receptive field
        if samples.size < needed:
            logger.warning("reference is %.2f s; repeated to %.2f s, the style encoders' minimum",
                           samples.size / self.sample_rate, needed / self.sample_rate)
            samples = np.resize(samples, needed)
        mel = self.reference_mel(samples)
        with torch.no_grad():
            style = torch.cat([self.networks["style_encoder"](mel), self.networks["predictor_encoder"](mel)], dim=1)
        notes: list[str] = []
        style = _clean_style(style, "reference style", notes)
        for note in notes:
            logger.warning(note)
        return style[0].cpu().numpy().astype(np.float32)

    # ---- synthesis (paper Sec. 3.3) -----------------------------------------------------
    def tokens(self, text: str) -> list[int]:
        """Speakable text -> StyleTTS2 symbol ids, with the start token; unknown symbols dropped."""
        phonemes = phonemize_en(text)
        dropped = {symbol for symbol in phonemes if symbol not in self.symbols}
        if dropped:
            logger.debug("phonemes outside StyleTTS2's symbol table dropped: %s", "".join(sorted(dropped)))
        return [START_TOKEN] + [self.symbols[symbol] for symbol in phonemes if symbol in self.symbols]

    def synthesize(self, text: str, style: np.ndarray | None, params: StrategyParams, seed: int = 0) -> SynthesisResult:
        """Speak `text` sentence by sentence with the strategy's alpha / beta; seeded.

        With `style=None` the diffusion is conditioned on a zero reference and its sample is
        used unmixed (alpha / beta have nothing to mix with). `speed` and `gain_db` are not
        used: this voice's pace and expressiveness come from alpha / beta."""
        return speak_whole(self, text, style, params, seed)

    def prepare(self, seed: int) -> None:
        """Nothing to get ready: an utterance seeds torch's generator as it starts."""

    def start(self, style: np.ndarray | None, params: StrategyParams, seed: int = 0) -> "StyleTTS2Utterance":
        """A reply spoken sentence by sentence (see `synthesize`)."""
        if params.diffusion_steps < MIN_DIFFUSION_STEPS:
            raise ValueError(f"diffusion_steps must be >= {MIN_DIFFUSION_STEPS}; found {params.diffusion_steps}")
        notes: list[str] = []
        reference = None
        if style is not None:
            style = np.asarray(style, dtype=np.float32)
            if style.shape != (self.style_dim,):
                raise TTSError(f"style vector must have shape ({self.style_dim},); found {style.shape}. "
                               "Extract it with this engine's extract_style.")
            reference = _clean_style(torch.from_numpy(style)[None].to(self.device), "given style", notes)
        return StyleTTS2Utterance(self, reference, params, seed, notes)

    def _guarded(self, sentence: str, reference: torch.Tensor | None, params: StrategyParams,
                 previous: torch.Tensor | None, notes: list[str], index: int) -> tuple[np.ndarray, torch.Tensor, bool]:
        """One sentence with the noise guard: re-render once with safer settings if noise-like."""
        audio, style = self._render(sentence, reference, params, previous, notes)
        if not is_noise_like(audio):
            return audio, style, False
        safe = replace(params, embedding_scale=SAFE_EMBEDDING_SCALE, alpha=params.alpha * SAFE_MIX_FACTOR,
                       beta=params.beta * SAFE_MIX_FACTOR,
                       diffusion_steps=max(SAFE_MIN_STEPS, 2 * params.diffusion_steps))
        notes.append(f"noise guard: sentence {index + 1} sounded like noise; re-rendered with "
                     f"alpha={safe.alpha:g}, beta={safe.beta:g}, steps={safe.diffusion_steps}, "
                     f"embedding_scale={safe.embedding_scale:g}")
        audio, style = self._render(sentence, reference, safe, previous, notes)
        if is_noise_like(audio):
            notes.append(f"noise guard: sentence {index + 1} is still noise-like after the retry")
        return audio, style, True

    def _render(self, sentence: str, reference: torch.Tensor | None, params: StrategyParams,
                previous: torch.Tensor | None, notes: list[str]) -> tuple[np.ndarray, torch.Tensor]:
        """One sentence -> (waveform, mixed style (1, style_dim)); the LibriTTS demo's steps."""
        nets, half = self.networks, self.config.style_dim
        ids = self.tokens(sentence)
        if len(ids) > self.max_tokens:
            notes.append(f"a sentence had {len(ids)} phonemes; cut to the model's {self.max_tokens}")
            ids = ids[: self.max_tokens]
        kept = len(ids)
        if kept < MIN_PHONEME_TOKENS:  # too short: repeat, synthesise, cut back below
            joiner = self.tokens(SHORT_TEXT_JOINER)[1:]
            while len(ids) < MIN_PHONEME_TOKENS:
                ids = ids + joiner + ids[1:kept]
            ids = ids[: self.max_tokens]
        tokens = torch.tensor([ids], dtype=torch.long, device=self.device)  # (1, T)
        text_features = nets["text_encoder"](tokens)  # (1, hidden, T)
        bert_features = nets["bert"](tokens, attention_mask=torch.ones_like(tokens)).last_hidden_state
        duration_features = nets["bert_encoder"](bert_features).transpose(1, 2)  # (1, hidden, T)
        noise = torch.randn(1, 1, 2 * half, device=self.device)
        features = reference if reference is not None else torch.zeros(1, 2 * half, device=self.device)
        sampled = self.sampler(noise=noise, embedding=bert_features, embedding_scale=params.embedding_scale,
                               features=features, num_steps=params.diffusion_steps).squeeze(1)  # (1, 2S)
        sampled = _clean_style(sampled, "diffused style", notes)
        if previous is not None:
            sampled = STYLE_CONTINUITY * previous + (1 - STYLE_CONTINUITY) * sampled
        acoustic, prosodic = sampled[:, :half], sampled[:, half:]
        if reference is not None:
            acoustic = params.alpha * acoustic + (1 - params.alpha) * reference[:, :half]
            prosodic = params.beta * prosodic + (1 - params.beta) * reference[:, half:]
        encoded = nets["predictor"].text_encoder(duration_features, prosodic)  # (1, T, hidden + S)
        expected = nets["predictor"].durations(encoded)[0]  # (T,)
        frames = torch.round(expected).clamp(1, self.config.max_phoneme_frames).long()
        alignment = torch.repeat_interleave(torch.eye(len(ids), device=self.device), frames, dim=1)[None]
        prosody_in = encoded.transpose(1, 2) @ alignment  # (1, hidden + S, frames)
        text_in = text_features @ alignment  # (1, hidden, frames)
        if self.config.decoder["type"] == "hifigan":  # the demo delays both by one frame
            prosody_in = torch.cat([prosody_in[..., :1], prosody_in[..., :-1]], dim=-1)
            text_in = torch.cat([text_in[..., :1], text_in[..., :-1]], dim=-1)
        f0, energy = nets["predictor"].pitch_energy(prosody_in, prosodic)
        audio = nets["decoder"](text_in, f0, energy, acoustic).squeeze().float().cpu().numpy()
        if kept < len(ids):
            samples_per_frame = audio.size / int(frames.sum())
            audio = audio[: int(round(int(frames[:kept].sum()) * samples_per_frame))]
        else:
            audio = audio[:-TAIL_PULSE_SAMPLES]
        return audio, torch.cat([acoustic, prosodic], dim=-1)


class StyleTTS2Utterance:
    """One reply of a StyleTTS2Engine, a sentence at a time. Between sentences it keeps what a
    single pass would carry: the random generators' state (saved and restored around each
    sentence, so other work on the same generators in between changes nothing) and the
    previous sentence's style (the long-form demo's continuity)."""

    def __init__(self, engine: StyleTTS2Engine, reference: torch.Tensor | None, params: StrategyParams, seed: int,
                 notes: list[str]):
        self.engine, self.reference, self.params, self.seed = engine, reference, params, seed
        self.spoken = SpokenSentences(notes)
        self.sample_rate = engine.sample_rate
        self._devices = [engine.device] if engine.device.type == "cuda" else []
        self._rng: tuple | None = None  # (cpu state, cuda states) after the last sentence
        self._previous: torch.Tensor | None = None
        self._retried = False

    def add(self, sentence: str) -> np.ndarray:
        with torch.random.fork_rng(devices=self._devices), torch.no_grad():
            if self._rng is None:
                torch.manual_seed(self.seed)
            else:
                torch.set_rng_state(self._rng[0])
                for device, state in zip(self._devices, self._rng[1]):
                    torch.cuda.set_rng_state(state, device)
            audio, self._previous, retried = self.engine._guarded(sentence, self.reference, self.params,
                                                                  self._previous, self.spoken.notes,
                                                                  len(self.spoken.pieces))
            self._rng = (torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in self._devices])
        self._retried |= retried
        if not np.isfinite(audio).all():
            self.spoken.notes.append("output had non-finite samples; set to zero")
            audio = np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(np.abs(audio).max(initial=0.0))
        if peak > 1.0:
            self.spoken.notes.append(f"output peaked at {peak:.2f}; scaled to {PEAK_LIMIT}")
            audio = audio * (PEAK_LIMIT / peak)
        return self.spoken.append(sentence, audio, int(SENTENCE_PAUSE_SECONDS * self.sample_rate))

    def result(self) -> SynthesisResult:
        params = self.params
        used = {"alpha": params.alpha, "beta": params.beta, "diffusion_steps": params.diffusion_steps,
                "embedding_scale": params.embedding_scale, "sentences": len(self.spoken.pieces),
                "retried": self._retried}
        return self.spoken.result(self.sample_rate, self.engine.name, self.reference is not None, self.seed, used)
