"""StyleTTS2's inference networks (LibriTTS multi-speaker layout), sized from config.yml
(loading a checkpoint into them: styletts2_checkpoint.py).

Written here after `models.py` of the PyPI `styletts2` package (0.1.6, MIT), which imports
torchaudio: the text encoder, prosody predictor, style encoder and the decoder front end. The
parts copied from that package live beside this file: the style diffusion
(styletts2_diffusion.py) and the HiFi-GAN / iSTFTNet generators with the AdaIN residual block
(styletts2_generators.py); the package itself is not needed. Parameter names match the official
checkpoint exactly; shapes in comments are (batch, channels, frames) unless said otherwise."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from es4r.voice.styletts2_diffusion import AdaLayerNorm, StyleDiffusion, StyleTransformer1d
from es4r.voice.styletts2_generators import AdainResBlk1d, HiFiGANGenerator, ISTFTNetGenerator

# Sizes the official code writes as literals instead of reading from config.yml.
TEXT_ENCODER_KERNEL = 5  # build_model: TextEncoder(kernel_size=5)
STYLE_ENCODER_DOWNSAMPLES = 4  # StyleEncoder: repeat_num = 4 halving residual blocks
STYLE_ENCODER_FINAL_KERNEL = 5  # StyleEncoder: last Conv2d(dim, dim, 5) without padding
OFFICIAL_DECODER_HIDDEN = 1024  # Decoder: AdainResBlk1d(..., 1024) (override: decoder.hidden_dim)
OFFICIAL_ASR_RES_CHANNELS = 64  # Decoder: asr_res Conv1d(512, 64) (override: decoder.asr_res_dim)
DECODER_PLAIN_BLOCKS = 3  # Decoder: three same-rate blocks, then one 2x upsampling block
PROSODY_CHANNELS = 2  # F0 and energy (N) curves, one channel each, fed to the decoder
LEAKY_SLOPE = 0.2  # LeakyReLU slope used throughout StyleTTS2
RESIDUAL_SCALE = 1 / math.sqrt(2)  # residual blocks add two unit-variance paths
TEXT_DROPOUT = 0.2  # TextEncoder dropout (a no-op at inference, kept for parity)
MIN_STYLE_FRAMES = (STYLE_ENCODER_FINAL_KERNEL - 1) * 2**STYLE_ENCODER_DOWNSAMPLES + 1  # 65
DECODER_TYPES = ("hifigan", "istftnet")
TRANSFORMER_KEYS = ("num_layers", "num_heads", "head_features", "multiplier")  # the denoiser's sizes


class StyleTTS2ConfigError(ValueError):
    """config.yml does not describe a StyleTTS2 model we can build."""


@dataclass(frozen=True)
class StyleTTS2Config:
    """Everything the networks and the audio front end need, read from config.yml."""

    n_token: int  # phoneme symbols
    hidden_dim: int  # text encoder / predictor width
    style_dim: int  # one half of the reference style vector (acoustic or prosodic)
    dim_in: int  # first style encoder width
    n_layer: int  # text encoder convolutions = duration encoder LSTMs
    n_mels: int
    max_dur: int  # duration classes per phoneme (frames)
    dropout: float
    decoder: dict  # type, generator sizes (+ optional hidden_dim / asr_res_dim)
    transformer: dict  # style diffusion transformer: num_layers, num_heads, head_features, multiplier
    sigma_data: float  # KDiffusion data std (estimated during training, saved in config.yml)
    # Training only, read for parity and unused at inference: the log-normal distribution of the
    # training noise levels, and how often training drops the text embedding.
    sigma_mean: float
    sigma_std: float
    embedding_mask_proba: float
    sample_rate: int
    n_fft: int
    win_length: int
    hop_length: int
    plbert_dir: str  # where the PL-BERT config.yml lives (relative to the checkpoint root)
    random: bool  # es4r_random: the tiny test checkpoint with random weights
    max_phoneme_frames: int  # cap on one phoneme's predicted duration

    @classmethod
    def from_yaml_dict(cls, raw: dict[str, Any]) -> "StyleTTS2Config":
        def need(section: dict, key: str, where: str) -> Any:
            if key not in section:
                raise StyleTTS2ConfigError(
                    f"config.yml lacks {where}.{key}; expected the official StyleTTS2 layout "
                    "(model_params, preprocess_params, PLBERT_dir)")
            return section[key]

        model = need(raw, "model_params", "<root>")
        if not model.get("multispeaker", False):
            raise StyleTTS2ConfigError(
                "model_params.multispeaker is false; only the LibriTTS multi-speaker layout "
                "is supported (its diffusion is conditioned on a reference style)")
        spect = need(need(raw, "preprocess_params", "<root>"), "spect_params", "preprocess_params")
        diffusion = need(model, "diffusion", "model_params")
        dist = need(diffusion, "dist", "model_params.diffusion")
        decoder = dict(need(model, "decoder", "model_params"))
        if decoder.get("type") not in DECODER_TYPES:
            raise StyleTTS2ConfigError(
                f"model_params.decoder.type is {decoder.get('type')!r}; expected one of {DECODER_TYPES}")
        max_dur = int(need(model, "max_dur", "model_params"))
        transformer = dict(need(diffusion, "transformer", "model_params.diffusion"))
        if sorted(transformer) != sorted(TRANSFORMER_KEYS):
            raise StyleTTS2ConfigError(
                f"model_params.diffusion.transformer has {sorted(transformer)}; expected exactly "
                f"{list(TRANSFORMER_KEYS)} (the official multi-speaker denoiser)")
        return cls(
            n_token=int(need(model, "n_token", "model_params")),
            hidden_dim=int(need(model, "hidden_dim", "model_params")),
            style_dim=int(need(model, "style_dim", "model_params")),
            dim_in=int(need(model, "dim_in", "model_params")),
            n_layer=int(need(model, "n_layer", "model_params")),
            n_mels=int(need(model, "n_mels", "model_params")),
            max_dur=max_dur,
            dropout=float(need(model, "dropout", "model_params")),
            decoder=decoder,
            transformer=transformer,
            sigma_data=float(need(dist, "sigma_data", "model_params.diffusion.dist")),
            sigma_mean=float(need(dist, "mean", "model_params.diffusion.dist")),
            sigma_std=float(need(dist, "std", "model_params.diffusion.dist")),
            embedding_mask_proba=float(diffusion.get("embedding_mask_proba", 0.0)),
            sample_rate=int(need(raw["preprocess_params"], "sr", "preprocess_params")),
            n_fft=int(need(spect, "n_fft", "preprocess_params.spect_params")),
            win_length=int(need(spect, "win_length", "preprocess_params.spect_params")),
            hop_length=int(need(spect, "hop_length", "preprocess_params.spect_params")),
            plbert_dir=str(need(raw, "PLBERT_dir", "<root>")),
            random=bool(raw.get("es4r_random", False)),
            max_phoneme_frames=int(raw.get("es4r_max_phoneme_frames", max_dur)),
        )


class LayerNorm(nn.Module):
    """Layer norm over channels of a (batch, channels, frames) tensor."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.channels, self.eps = channels, eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.transpose(1, -1), (self.channels,), self.gamma, self.beta, self.eps)
        return x.transpose(1, -1)


class TextEncoder(nn.Module):
    """Phoneme ids -> acoustic text features: embedding, CNN stack, BiLSTM."""

    def __init__(self, channels: int, kernel_size: int, depth: int, n_symbols: int):
        super().__init__()
        self.embedding = nn.Embedding(n_symbols, channels)
        self.cnn = nn.ModuleList(
            nn.Sequential(
                nn.utils.weight_norm(nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2)),
                LayerNorm(channels), nn.LeakyReLU(LEAKY_SLOPE), nn.Dropout(TEXT_DROPOUT),
            )
            for _ in range(depth)
        )
        self.lstm = nn.LSTM(channels, channels // 2, 1, batch_first=True, bidirectional=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) of one unpadded length -> (B, channels, T)."""
        x = self.embedding(tokens).transpose(1, 2)  # (B, C, T)
        for block in self.cnn:
            x = block(x)
        x, _ = self.lstm(x.transpose(1, 2))  # (B, T, C)
        return x.transpose(1, 2)


class LinearNorm(nn.Module):
    """A Linear under the official parameter name `linear_layer`."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear_layer = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_layer(x)


class DurationEncoder(nn.Module):
    """Style-conditioned BiLSTM stack over PL-BERT features (the predictor's text encoder)."""

    def __init__(self, sty_dim: int, d_model: int, nlayers: int):
        super().__init__()
        self.lstms = nn.ModuleList()
        for _ in range(nlayers):
            self.lstms.append(nn.LSTM(d_model + sty_dim, d_model // 2, num_layers=1,
                                      batch_first=True, bidirectional=True))
            self.lstms.append(AdaLayerNorm(sty_dim, d_model))

    def forward(self, features: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """features (B, C, T), style (B, S) -> (B, T, C + S)."""
        style_frames = style.unsqueeze(1).expand(-1, features.shape[-1], -1)  # (B, T, S)
        x = torch.cat([features.transpose(1, 2), style_frames], dim=-1)  # (B, T, C + S)
        for block in self.lstms:
            if isinstance(block, AdaLayerNorm):
                x = torch.cat([block(x, style), style_frames], dim=-1)
            else:
                x, _ = block(x)  # (B, T, C)
        return x


class ProsodyPredictor(nn.Module):
    """Durations, pitch (F0) and energy (N) from text features and the prosodic style."""

    def __init__(self, style_dim: int, d_hid: int, nlayers: int, max_dur: int, dropout: float):
        super().__init__()
        self.text_encoder = DurationEncoder(style_dim, d_hid, nlayers)
        self.lstm = nn.LSTM(d_hid + style_dim, d_hid // 2, 1, batch_first=True, bidirectional=True)
        self.duration_proj = LinearNorm(d_hid, max_dur)
        self.shared = nn.LSTM(d_hid + style_dim, d_hid // 2, 1, batch_first=True, bidirectional=True)
        for name in ("F0", "N"):
            setattr(self, name, nn.ModuleList([
                AdainResBlk1d(d_hid, d_hid, style_dim, dropout_p=dropout),
                AdainResBlk1d(d_hid, d_hid // 2, style_dim, upsample=True, dropout_p=dropout),
                AdainResBlk1d(d_hid // 2, d_hid // 2, style_dim, dropout_p=dropout),
            ]))
        self.F0_proj = nn.Conv1d(d_hid // 2, 1, 1, 1, 0)
        self.N_proj = nn.Conv1d(d_hid // 2, 1, 1, 1, 0)

    def durations(self, encoded: torch.Tensor) -> torch.Tensor:
        """encoded (B, T, C + S) from text_encoder -> expected frames per phoneme (B, T)."""
        x, _ = self.lstm(encoded)
        return torch.sigmoid(self.duration_proj(x)).sum(dim=-1)

    def pitch_energy(self, aligned: torch.Tensor, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """aligned (B, C + S, frames) -> F0 and N curves, each (B, 2 * frames)."""
        x, _ = self.shared(aligned.transpose(1, 2))
        curves = []
        for blocks, projection in ((self.F0, self.F0_proj), (self.N, self.N_proj)):
            curve = x.transpose(1, 2)
            for block in blocks:
                curve = block(curve, style)
            curves.append(projection(curve).squeeze(1))
        return curves[0], curves[1]


class LearnedDownSample(nn.Module):
    """Depthwise strided conv halving both axes (the residual path's downsampling)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.utils.spectral_norm(nn.Conv2d(dim, dim, 3, stride=2, groups=dim, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ResBlk(nn.Module):
    """Spectrally normalised 2-D residual block that halves both mel axes."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        sn = nn.utils.spectral_norm
        self.actv = nn.LeakyReLU(LEAKY_SLOPE)
        self.downsample_res = LearnedDownSample(dim_in)
        self.conv1 = sn(nn.Conv2d(dim_in, dim_in, 3, 1, 1))
        self.conv2 = sn(nn.Conv2d(dim_in, dim_out, 3, 1, 1))
        self.learned_sc = dim_in != dim_out
        if self.learned_sc:
            self.conv1x1 = sn(nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv1x1(x) if self.learned_sc else x
        if shortcut.shape[-1] % 2:  # odd frame count: repeat the last frame before pooling
            shortcut = torch.cat([shortcut, shortcut[..., -1:]], dim=-1)
        shortcut = F.avg_pool2d(shortcut, 2)
        residual = self.conv2(self.actv(self.downsample_res(self.conv1(self.actv(x)))))
        return (shortcut + residual) * RESIDUAL_SCALE


class StyleEncoder(nn.Module):
    """Mel spectrogram (B, 1, n_mels, frames) -> style vector (B, style_dim)."""

    def __init__(self, dim_in: int, style_dim: int, max_conv_dim: int):
        super().__init__()
        sn = nn.utils.spectral_norm
        blocks: list[nn.Module] = [sn(nn.Conv2d(1, dim_in, 3, 1, 1))]
        for _ in range(STYLE_ENCODER_DOWNSAMPLES):
            dim_out = min(dim_in * 2, max_conv_dim)
            blocks.append(ResBlk(dim_in, dim_out))
            dim_in = dim_out
        blocks += [nn.LeakyReLU(LEAKY_SLOPE), sn(nn.Conv2d(dim_out, dim_out, STYLE_ENCODER_FINAL_KERNEL, 1, 0)),
                   nn.AdaptiveAvgPool2d(1), nn.LeakyReLU(LEAKY_SLOPE)]
        self.shared = nn.Sequential(*blocks)
        self.unshared = nn.Linear(dim_out, style_dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.unshared(self.shared(mel).flatten(1))


class Decoder(nn.Module):
    """Aligned text features + F0 + energy + acoustic style -> waveform (B, 1, samples)."""

    def __init__(self, config: StyleTTS2Config):
        super().__init__()
        kind = config.decoder["type"]
        hidden = int(config.decoder.get("hidden_dim", OFFICIAL_DECODER_HIDDEN))
        asr_dim = int(config.decoder.get("asr_res_dim", OFFICIAL_ASR_RES_CHANNELS))
        out_dim = int(config.decoder["upsample_initial_channel"])
        block, style = AdainResBlk1d, config.style_dim
        skip = PROSODY_CHANNELS + asr_dim  # re-injected before every same-rate block
        self.encode = block(config.hidden_dim + PROSODY_CHANNELS, hidden, style)
        self.decode = nn.ModuleList([block(hidden + skip, hidden, style) for _ in range(DECODER_PLAIN_BLOCKS)])
        self.decode.append(block(hidden + skip, out_dim, style, upsample=True))
        wn = nn.utils.weight_norm
        self.F0_conv = wn(nn.Conv1d(1, 1, kernel_size=3, stride=2, groups=1, padding=1))
        self.N_conv = wn(nn.Conv1d(1, 1, kernel_size=3, stride=2, groups=1, padding=1))
        self.asr_res = nn.Sequential(wn(nn.Conv1d(config.hidden_dim, asr_dim, kernel_size=1)))
        sizes = {k: config.decoder[k] for k in ("resblock_kernel_sizes", "upsample_rates",
                                                "resblock_dilation_sizes", "upsample_kernel_sizes")}
        if kind == "istftnet":
            self.generator = ISTFTNetGenerator(
                style, upsample_initial_channel=out_dim, gen_istft_n_fft=config.decoder["gen_istft_n_fft"],
                gen_istft_hop_size=config.decoder["gen_istft_hop_size"], **sizes)
        else:
            self.generator = HiFiGANGenerator(style, upsample_initial_channel=out_dim, **sizes)

    def forward(self, asr: torch.Tensor, f0: torch.Tensor, energy: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """asr (B, hidden, frames); f0, energy (B, 2 * frames); style (B, style_dim)."""
        f0_down = self.F0_conv(f0.unsqueeze(1))  # (B, 1, frames)
        energy_down = self.N_conv(energy.unsqueeze(1))
        x = self.encode(torch.cat([asr, f0_down, energy_down], dim=1), style)
        asr_res = self.asr_res(asr)
        still_same_rate = True  # skips are re-injected up to and into the upsampling block
        for block in self.decode:
            if still_same_rate:
                x = torch.cat([x, asr_res, f0_down, energy_down], dim=1)
            x = block(x, style)
            still_same_rate = not block.upsample
        return self.generator(x, style, f0)


def build_networks(config: StyleTTS2Config, plbert_params: dict[str, Any]) -> nn.ModuleDict:
    """The eight inference networks of the official checkpoint, keyed as in its `net` dict."""
    from transformers import AlbertConfig, AlbertModel

    with warnings.catch_warnings():  # torch deprecates weight_norm; the checkpoint uses its names
        warnings.simplefilter("ignore", FutureWarning)
        bert = AlbertModel(AlbertConfig(**plbert_params))
        both = config.style_dim * 2  # acoustic + prosodic halves
        transformer = StyleTransformer1d(
            channels=both, context_embedding_features=bert.config.hidden_size,
            context_features=both, **config.transformer)
        return nn.ModuleDict({
            "bert": bert,
            "bert_encoder": nn.Linear(bert.config.hidden_size, config.hidden_dim),
            "predictor": ProsodyPredictor(config.style_dim, config.hidden_dim, config.n_layer,
                                          config.max_dur, config.dropout),
            "decoder": Decoder(config),
            "text_encoder": TextEncoder(config.hidden_dim, TEXT_ENCODER_KERNEL, config.n_layer, config.n_token),
            "predictor_encoder": StyleEncoder(config.dim_in, config.style_dim, config.hidden_dim),
            "style_encoder": StyleEncoder(config.dim_in, config.style_dim, config.hidden_dim),
            "diffusion": StyleDiffusion(transformer, sigma_data=config.sigma_data),
        })
