"""StyleTTS2's inference networks (LibriTTS multi-speaker layout), sized from config.yml.

Reused from the PyPI `styletts2` package (0.1.6, MIT; only modules that import without
torchaudio): the style diffusion (`Modules.diffusion`: AudioDiffusionConditional,
KDiffusion, LogNormalDistribution, StyleTransformer1d), the HiFi-GAN / iSTFTNet generators
and the AdaIN residual block (`Modules.hifigan`, `Modules.istftnet`). Written here because
`styletts2.models` imports torchaudio: the text encoder, prosody predictor, style encoder and
the decoder front end. Parameter names match the official checkpoint exactly; shapes in
comments are (batch, channels, frames) unless said otherwise."""

from __future__ import annotations

import importlib.util
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

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
    sigma_mean: float  # log-normal sigma distribution (training only; kept for parity)
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
            transformer=dict(need(diffusion, "transformer", "model_params.diffusion")),
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


class AdaLayerNorm(nn.Module):
    """Layer norm whose gain and bias come from the style vector."""

    def __init__(self, style_dim: int, channels: int, eps: float = 1e-5):
        super().__init__()
        self.channels, self.eps = channels, eps
        self.fc = nn.Linear(style_dim, channels * 2)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """x (B, T, C), style (B, S) -> (B, T, C)."""
        gamma, beta = self.fc(style).unsqueeze(1).chunk(2, dim=-1)  # (B, 1, C) each
        return (1 + gamma) * F.layer_norm(x, (self.channels,), eps=self.eps) + beta


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
        from styletts2.Modules.istftnet import AdainResBlk1d

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
        from styletts2.Modules import hifigan, istftnet

        kind = config.decoder["type"]
        hidden = int(config.decoder.get("hidden_dim", OFFICIAL_DECODER_HIDDEN))
        asr_dim = int(config.decoder.get("asr_res_dim", OFFICIAL_ASR_RES_CHANNELS))
        out_dim = int(config.decoder["upsample_initial_channel"])
        block, style = istftnet.AdainResBlk1d, config.style_dim
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
            self.generator = istftnet.Generator(
                style, upsample_initial_channel=out_dim, gen_istft_n_fft=config.decoder["gen_istft_n_fft"],
                gen_istft_hop_size=config.decoder["gen_istft_hop_size"], **sizes)
        else:
            self.generator = hifigan.Generator(style, upsample_initial_channel=out_dim, **sizes)

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
            still_same_rate = block.upsample_type == "none"
        return self.generator(x, style, f0)


STYLETTS2_INSTALL = "pip install --no-deps styletts2==0.1.6 einops-exts==0.0.4"


def build_networks(config: StyleTTS2Config, plbert_params: dict[str, Any]) -> nn.ModuleDict:
    """The eight inference networks of the official checkpoint, keyed as in its `net` dict."""
    if importlib.util.find_spec("styletts2") is None or importlib.util.find_spec("einops_exts") is None:
        raise ImportError(f"StyleTTS2's model code is missing; `{STYLETTS2_INSTALL}` "
                          "(--no-deps: the package pins transformers<5 and torchaudio)")
    from styletts2.Modules.diffusion.diffusion import AudioDiffusionConditional
    from styletts2.Modules.diffusion.modules import StyleTransformer1d
    from styletts2.Modules.diffusion.sampler import KDiffusion, LogNormalDistribution
    from transformers import AlbertConfig, AlbertModel

    with warnings.catch_warnings():  # torch deprecates weight_norm; the checkpoint uses its names
        warnings.simplefilter("ignore", FutureWarning)
        bert = AlbertModel(AlbertConfig(**plbert_params))
        both = config.style_dim * 2  # acoustic + prosodic halves
        transformer = StyleTransformer1d(
            channels=both, context_embedding_features=bert.config.hidden_size,
            context_features=both, **config.transformer)
        diffusion = AudioDiffusionConditional(
            in_channels=1, embedding_max_length=bert.config.max_position_embeddings,
            embedding_features=bert.config.hidden_size, embedding_mask_proba=config.embedding_mask_proba,
            channels=both, context_features=both)
        diffusion.diffusion = KDiffusion(
            net=transformer, sigma_distribution=LogNormalDistribution(config.sigma_mean, config.sigma_std),
            sigma_data=config.sigma_data, dynamic_threshold=0.0)
        diffusion.unet = transformer
        return nn.ModuleDict({
            "bert": bert,
            "bert_encoder": nn.Linear(bert.config.hidden_size, config.hidden_dim),
            "predictor": ProsodyPredictor(config.style_dim, config.hidden_dim, config.n_layer,
                                          config.max_dur, config.dropout),
            "decoder": Decoder(config),
            "text_encoder": TextEncoder(config.hidden_dim, TEXT_ENCODER_KERNEL, config.n_layer, config.n_token),
            "predictor_encoder": StyleEncoder(config.dim_in, config.style_dim, config.hidden_dim),
            "style_encoder": StyleEncoder(config.dim_in, config.style_dim, config.hidden_dim),
            "diffusion": diffusion,
        })


# ---- the official checkpoint layout ------------------------------------------------------
NETWORK_NAMES = ("bert", "bert_encoder", "predictor", "decoder", "text_encoder",
                 "predictor_encoder", "style_encoder", "diffusion")
CONFIG_NAME = "config.yml"
DATA_PARALLEL_PREFIX = "module."  # the official .pth was saved from wrapped modules
HUB_ALLOW_PATTERNS = ["*.yml", "*.pth"]  # config + weights; skips the reference-audio zip
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


class StyleTTS2CheckpointError(RuntimeError):
    """The folder does not hold a StyleTTS2 checkpoint in the official layout."""


def _resolve_folder(path_or_id: str) -> Path:
    """A local folder, or a hub snapshot (needs a network; never used offline)."""
    path = Path(path_or_id).expanduser()
    if path.exists():
        return path
    if not _HUB_ID.fullmatch(str(path_or_id)):
        raise StyleTTS2CheckpointError(f"no folder {path_or_id!r}; pass a folder holding {CONFIG_NAME} "
                                       "and the .pth, or a hub id like 'yl4579/StyleTTS2-LibriTTS'")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=path_or_id, allow_patterns=HUB_ALLOW_PATTERNS))
    except Exception as error:  # network, auth, missing repo: all mean "cannot fetch"
        raise StyleTTS2CheckpointError(f"{path_or_id!r} is not a local folder and could not be "
                                       f"fetched from the hub ({error}); download it and pass the folder") from error


def _is_model_config(path: Path) -> bool:
    """A StyleTTS2 config.yml (not PL-BERT's or the aligner's): it describes the diffusion."""
    raw = yaml.safe_load(path.read_text()) or {}
    return isinstance(raw.get("model_params"), dict) and "diffusion" in raw["model_params"]


def find_checkpoint(root: Path) -> tuple[Path, Path]:
    """(config.yml, .pth) of the one StyleTTS2 model under `root`."""
    configs = [root / CONFIG_NAME] if (root / CONFIG_NAME).is_file() else sorted(root.rglob(CONFIG_NAME))
    candidates = [c for c in configs if _is_model_config(c) and any(c.parent.glob("*.pth"))]
    if len(candidates) != 1:
        raise StyleTTS2CheckpointError(
            f"expected one StyleTTS2 {CONFIG_NAME} next to a .pth under {root}; found "
            f"{[str(c) for c in candidates] or 'none'}. Pass the folder holding the model you want.")
    weights = sorted(candidates[0].parent.glob("*.pth"))
    if len(weights) != 1:
        raise StyleTTS2CheckpointError(f"expected one .pth next to {candidates[0]}; found "
                                       f"{[w.name for w in weights]}. Keep only the epoch to load.")
    return candidates[0], weights[0]


def _plbert_params(root: Path, config_dir: Path, plbert_dir: str) -> dict[str, Any]:
    """PL-BERT sizes: PLBERT_dir under the checkpoint, else the copy the styletts2 package ships
    (the hub's LibriTTS folder refers to Utils/PLBERT/ of the GitHub repository)."""
    package = importlib.util.find_spec("styletts2")
    shipped = [Path(p) / "Utils" / "PLBERT" for p in (package.submodule_search_locations or [])] if package else []
    for folder in [config_dir / plbert_dir, root / plbert_dir, *shipped]:
        if (folder / CONFIG_NAME).is_file():
            return dict(yaml.safe_load((folder / CONFIG_NAME).read_text())["model_params"])
    raise StyleTTS2CheckpointError(f"no PL-BERT {CONFIG_NAME} in {plbert_dir!r} under {config_dir} or "
                                   f"in the styletts2 package; `{STYLETTS2_INSTALL}`")


def _read_net(weights: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The .pth's `net` dict, read without running arbitrary pickled code."""
    scalar = np._core.multiarray.scalar  # numpy scalars (e.g. a saved val_loss), under both names
    numpy_scalars = [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
                     np.dtype, *(type(np.dtype(code)) for code in "fdilb")]
    with torch.serialization.safe_globals(numpy_scalars):
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as error:
            raise StyleTTS2CheckpointError(f"cannot read {weights}: {error}") from error
    if not isinstance(state, dict) or "net" not in state:
        raise StyleTTS2CheckpointError(f"{weights} has no 'net' dict; expected a StyleTTS2 training checkpoint")
    return state["net"]


def load_strict(networks: nn.ModuleDict, net: dict[str, dict[str, torch.Tensor]], source: Path) -> None:
    """Copy every inference network's weights; any missing or unexpected key is an error.
    Only non-persistent buffers (PL-BERT's position_ids, saved by older transformers) are
    skipped, because the library recomputes them."""
    absent = [name for name in networks if name not in net]
    if absent:
        raise StyleTTS2CheckpointError(f"{source}: net lacks {absent}; found {sorted(net)}")
    for name, module in networks.items():
        state = {k.removeprefix(DATA_PARALLEL_PREFIX): v for k, v in net[name].items()}
        expected = set(module.state_dict())
        recomputed = {n for n, _ in module.named_buffers()} - expected
        found = set(state) - recomputed
        missing, unexpected = sorted(expected - found), sorted(found - expected)
        if missing or unexpected:
            raise StyleTTS2CheckpointError(
                f"{source}: net['{name}'] does not match the network built from {CONFIG_NAME}: "
                f"missing keys {missing[:10]}, unexpected keys {unexpected[:10]}"
                f"{' (first 10 shown)' if max(len(missing), len(unexpected)) > 10 else ''}. "
                f"Check that {CONFIG_NAME} belongs to this .pth.")
        try:
            module.load_state_dict({k: state[k] for k in found}, strict=True)
        except RuntimeError as error:
            raise StyleTTS2CheckpointError(f"{source}: net['{name}'] has wrong shapes: {error}") from error


def load_checkpoint_folder(path_or_id: str) -> tuple[nn.ModuleDict, StyleTTS2Config]:
    """Build the networks from config.yml and load the .pth strictly (eval mode, CPU)."""
    root = _resolve_folder(path_or_id)
    config_path, weights = find_checkpoint(root)
    config = StyleTTS2Config.from_yaml_dict(yaml.safe_load(config_path.read_text()))
    networks = build_networks(config, _plbert_params(root, config_path.parent, config.plbert_dir))
    load_strict(networks, _read_net(weights), weights)
    return networks.eval(), config


# ---- a tiny random checkpoint in the same layout (tests, the `tiny` preset) ----------------
TINY_CHECKPOINT_NAME = "epochs_2nd_tiny.pth"
TINY_PLBERT = {"vocab_size": 178, "hidden_size": 32, "embedding_size": 16, "num_attention_heads": 2,
               "intermediate_size": 64, "max_position_embeddings": 128, "num_hidden_layers": 2,
               "dropout": 0.1}
TINY_GENERATORS = {
    "hifigan": {"type": "hifigan", "resblock_kernel_sizes": [3], "upsample_rates": [10, 5, 3, 2],
                "upsample_initial_channel": 32, "resblock_dilation_sizes": [[1, 3, 5]],
                "upsample_kernel_sizes": [20, 10, 6, 4]},
    "istftnet": {"type": "istftnet", "resblock_kernel_sizes": [3], "upsample_rates": [10, 6],
                 "upsample_initial_channel": 32, "resblock_dilation_sizes": [[1, 3, 5]],
                 "upsample_kernel_sizes": [20, 12], "gen_istft_n_fft": 20, "gen_istft_hop_size": 5},
}
TINY_DECODER_SIZES = {"hidden_dim": 32, "asr_res_dim": 8}  # official: 1024 and 64, fixed in code
SPECTRAL_NORM_WARMUP = 10  # power iterations, else random u, v make eval-mode weights explode
TINY_MAX_PHONEME_FRAMES = 2  # random durations would otherwise average max_dur / 2 frames


def tiny_config_dict(decoder: str = "hifigan") -> dict[str, Any]:
    """config.yml of the tiny model: the official keys at toy sizes, flagged es4r_random."""
    return {
        "es4r_random": True, "es4r_max_phoneme_frames": TINY_MAX_PHONEME_FRAMES, "PLBERT_dir": "PLBERT/",
        "preprocess_params": {"sr": 24000, "spect_params": {"n_fft": 2048, "win_length": 1200, "hop_length": 300}},
        "model_params": {
            "multispeaker": True, "dim_in": 8, "hidden_dim": 32, "max_conv_dim": 32, "n_layer": 1,
            "n_mels": 80, "n_token": 178, "max_dur": 8, "style_dim": 16, "dropout": 0.2,
            "decoder": {**TINY_GENERATORS[decoder], **TINY_DECODER_SIZES},
            "diffusion": {"embedding_mask_proba": 0.1,
                          "transformer": {"num_layers": 1, "num_heads": 2, "head_features": 8, "multiplier": 2},
                          "dist": {"sigma_data": 0.2, "estimate_sigma_data": True, "mean": -3.0, "std": 1.0}},
        },
    }


def make_tiny_styletts2_checkpoint(folder: str | Path, seed: int = 0, decoder: str = "hifigan") -> Path:
    """Write config.yml, PLBERT/config.yml and a random .pth in the official layout (with the
    `module.` prefixes); returns the folder, loadable by StyleTTS2Engine.from_pretrained."""
    folder = Path(folder)
    (folder / "PLBERT").mkdir(parents=True, exist_ok=True)
    raw = tiny_config_dict(decoder)
    (folder / CONFIG_NAME).write_text(yaml.safe_dump(raw, sort_keys=False))
    (folder / "PLBERT" / CONFIG_NAME).write_text(yaml.safe_dump({"model_params": TINY_PLBERT}))
    config = StyleTTS2Config.from_yaml_dict(raw)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        networks = build_networks(config, TINY_PLBERT)
        mel = torch.randn(1, 1, config.n_mels, MIN_STYLE_FRAMES)
        for _ in range(SPECTRAL_NORM_WARMUP):  # converge u, v as training would have
            networks["style_encoder"].train()(mel)
            networks["predictor_encoder"].train()(mel)
    net = {name: {DATA_PARALLEL_PREFIX + k: v for k, v in module.state_dict().items()}
           for name, module in networks.items()}
    torch.save({"net": net, "epoch": 0, "iters": 0}, folder / TINY_CHECKPOINT_NAME)
    return folder
