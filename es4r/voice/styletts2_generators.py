"""StyleTTS2's waveform generators (HiFi-GAN and iSTFTNet, each driven by a harmonic-plus-noise
source built from F0) and the AdaIN residual blocks they share with the decoder and the prosody
predictor (styletts2_networks.py).

Copied from the PyPI `styletts2` package 0.1.6 (licence text: es4r/voice/LICENSE-styletts2), `Modules/hifigan.py` and `Modules/istftnet.py`
(MIT; Copyright (c) 2023 Sidharth Rajaram; from StyleTTS2: Copyright (c) 2023 Aaron (Yinghao)
Li), which StyleTTS2 based on jik876/hifi-gan, rishikksh20/iSTFTNet-pytorch and
nii-yamagishilab's neural source-filter (NSF) scripts. Changed: only inference is kept (no
remove_weight_norm, fw_phase, pulse-train sine branch, padDiff or the package's own Decoder);
blocks the two files both define are written once; the STFT window comes from torch instead of
scipy (the same float32 values); literals are named; shapes are in docstrings. Kept as in the
package, so that a seed gives the package's weights and audio: parameter names (the checkpoint's
keys), construction order, the weight init that weight norm discards, and every random draw,
including the noise branch the generators never use."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import weight_norm

GENERATOR_LEAKY_SLOPE = 0.1  # LRELU_SLOPE of hifigan.py / istftnet.py
BLOCK_LEAKY_SLOPE = 0.2  # AdainResBlk1d's activation
ISTFT_FINAL_LEAKY_SLOPE = 0.01  # iSTFTNet's last F.leaky_relu, at torch's default slope
INIT_STD = 0.01  # init_weights: convolution weights ~ N(0, 0.01)
SOURCE_SAMPLE_RATE = 24_000  # the official generators build the source at 24 kHz whatever config.yml says
HARMONICS = 8  # overtones above F0 in the source (harmonic_num)
SINE_AMPLITUDE = 0.1  # of each harmonic; unvoiced samples get noise of std SINE_AMPLITUDE / 3
VOICED_NOISE_STD = 0.003  # noise added to voiced samples
VOICED_THRESHOLD = 10.0  # Hz: F0 above this is voiced
SOURCE_DILATIONS = (1, 3, 5)  # of the residual blocks on the source branch
SOURCE_KERNEL, LAST_SOURCE_KERNEL = 7, 11  # their kernels: before the last upsampling, at it
POST_KERNEL = 7  # conv_post


def _official_init(module: nn.Module) -> None:
    """The package's init_weights: N(0, INIT_STD) on a convolution's `weight`. Every convolution
    it reaches is weight-normed, so this writes the derived weight, which the next forward
    recomputes from weight_g / weight_v: it changes only the random stream, and is kept so that
    a seed builds the package's weights."""
    if "Conv" in type(module).__name__:
        module.weight.data.normal_(0.0, INIT_STD)


def _same_padding(kernel_size: int, dilation: int = 1) -> int:
    return int((kernel_size * dilation - dilation) / 2)


def _snake(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Snake activation x + sin²(alpha x) / alpha, alpha learnt per channel (1, C, 1)."""
    return x + (1 / alpha) * (torch.sin(alpha * x) ** 2)


class AdaIN1d(nn.Module):
    """Instance norm whose gain and bias come from the style vector."""

    def __init__(self, style_dim: int, channels: int):
        super().__init__()
        self.norm = nn.InstanceNorm1d(channels, affine=False)
        self.fc = nn.Linear(style_dim, channels * 2)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """x (B, C, T), style (B, S) -> (B, C, T)."""
        gamma, beta = self.fc(style).unsqueeze(-1).chunk(2, dim=1)  # (B, C, 1) each
        return (1 + gamma) * self.norm(x) + beta


class AdainResBlk1d(nn.Module):
    """Style-conditioned residual block (decoder, prosody predictor); `upsample` doubles the frames."""

    def __init__(self, dim_in: int, dim_out: int, style_dim: int, upsample: bool = False, dropout_p: float = 0.0):
        super().__init__()
        self.actv = nn.LeakyReLU(BLOCK_LEAKY_SLOPE)
        self.upsample = upsample
        self.learned_sc = dim_in != dim_out
        self.conv1 = weight_norm(nn.Conv1d(dim_in, dim_out, 3, 1, 1))
        self.conv2 = weight_norm(nn.Conv1d(dim_out, dim_out, 3, 1, 1))
        self.norm1 = AdaIN1d(style_dim, dim_in)
        self.norm2 = AdaIN1d(style_dim, dim_out)
        if self.learned_sc:
            self.conv1x1 = weight_norm(nn.Conv1d(dim_in, dim_out, 1, 1, 0, bias=False))
        self.dropout = nn.Dropout(dropout_p)
        self.pool = (weight_norm(nn.ConvTranspose1d(dim_in, dim_in, kernel_size=3, stride=2, groups=dim_in,
                                                    padding=1, output_padding=1))
                     if upsample else nn.Identity())  # the residual path's learnt 2x upsampling

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """x (B, dim_in, T), style (B, S) -> (B, dim_out, T), or 2T frames when upsampling."""
        shortcut = F.interpolate(x, scale_factor=2, mode="nearest") if self.upsample else x
        if self.learned_sc:
            shortcut = self.conv1x1(shortcut)
        residual = self.conv1(self.dropout(self.pool(self.actv(self.norm1(x, style)))))
        residual = self.conv2(self.dropout(self.actv(self.norm2(residual, style))))
        return (residual + shortcut) / math.sqrt(2)


class AdaINResBlock1(nn.Module):
    """The generators' residual block: per dilation, AdaIN + Snake + dilated conv, then AdaIN +
    Snake + plain conv, added to the input."""

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int], style_dim: int):
        super().__init__()

        def conv(dilation: int) -> nn.Module:
            return weight_norm(nn.Conv1d(channels, channels, kernel_size, 1, dilation=dilation,
                                         padding=_same_padding(kernel_size, dilation)))

        self.convs1 = nn.ModuleList(conv(dilation) for dilation in dilations)
        self.convs1.apply(_official_init)
        self.convs2 = nn.ModuleList(conv(1) for _ in dilations)
        self.convs2.apply(_official_init)
        self.adain1 = nn.ModuleList(AdaIN1d(style_dim, channels) for _ in dilations)
        self.adain2 = nn.ModuleList(AdaIN1d(style_dim, channels) for _ in dilations)
        self.alpha1 = nn.ParameterList(nn.Parameter(torch.ones(1, channels, 1)) for _ in dilations)
        self.alpha2 = nn.ParameterList(nn.Parameter(torch.ones(1, channels, 1)) for _ in dilations)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """x (B, C, T), style (B, S) -> (B, C, T)."""
        for conv1, conv2, norm1, norm2, alpha1, alpha2 in zip(self.convs1, self.convs2, self.adain1, self.adain2,
                                                              self.alpha1, self.alpha2):
            residual = conv1(_snake(norm1(x, style), alpha1))
            x = conv2(_snake(norm2(residual, style), alpha2)) + x
        return x


class SourceModuleHnNSF(nn.Module):
    """Harmonic-plus-noise excitation: sines at F0 and its overtones (noise where unvoiced),
    merged into one channel."""

    def __init__(self, upsample_scale: int):
        super().__init__()
        self.upsample_scale = upsample_scale  # output samples per F0 frame
        self.l_linear = nn.Linear(HARMONICS + 1, 1)

    def _sines(self, harmonics: torch.Tensor) -> torch.Tensor:
        """(B, samples, H) frequencies in Hz -> unit sines with random initial phases (but the
        fundamental's); the phase is accumulated at the frame rate, then interpolated."""
        cycles = (harmonics / SOURCE_SAMPLE_RATE) % 1  # per sample
        initial = torch.rand(harmonics.shape[0], harmonics.shape[2], device=harmonics.device)
        initial[:, 0] = 0
        cycles[:, 0, :] = cycles[:, 0, :] + initial
        cycles = F.interpolate(cycles.transpose(1, 2), scale_factor=1 / self.upsample_scale,
                               mode="linear").transpose(1, 2)  # (B, frames, H)
        phase = torch.cumsum(cycles, dim=1) * 2 * math.pi
        phase = F.interpolate(phase.transpose(1, 2) * self.upsample_scale, scale_factor=self.upsample_scale,
                              mode="linear").transpose(1, 2)  # (B, samples, H)
        return torch.sin(phase)

    def forward(self, f0: torch.Tensor) -> torch.Tensor:
        """f0 (B, samples, 1) in Hz -> excitation (B, samples, 1)."""
        harmonics = f0 * torch.arange(1, HARMONICS + 2, dtype=torch.float32, device=f0.device)  # (B, samples, H)
        sines = self._sines(harmonics) * SINE_AMPLITUDE
        voiced = (f0 > VOICED_THRESHOLD).type(torch.float32)
        noise_std = voiced * VOICED_NOISE_STD + (1 - voiced) * SINE_AMPLITUDE / 3
        sines = sines * voiced + noise_std * torch.randn_like(sines)
        torch.randn_like(voiced)  # the package's noise-branch source: drawn, never used
        return torch.tanh(self.l_linear(sines))


def _upsample_f0(f0: torch.Tensor, scale: int) -> torch.Tensor:
    """f0 (B, frames) -> (B, frames * scale, 1), each value repeated."""
    return F.interpolate(f0[:, None], scale_factor=float(scale), mode="nearest").transpose(1, 2)


def _mean_of_resblocks(resblocks: nn.ModuleList, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """Average of one stage's parallel residual blocks (summed in order, as the package does)."""
    outputs = [block(x, style) for block in resblocks]
    return sum(outputs[1:], outputs[0]) / len(outputs)


class HiFiGANGenerator(nn.Module):
    """HiFi-GAN with an NSF source: (B, C, frames) features + style + F0 -> (B, 1, samples)."""

    def __init__(self, style_dim: int, resblock_kernel_sizes: list[int], upsample_rates: list[int],
                 upsample_initial_channel: int, resblock_dilation_sizes: list[list[int]],
                 upsample_kernel_sizes: list[int]):
        super().__init__()
        self.num_kernels = len(resblock_kernel_sizes)
        self.num_upsamples = len(upsample_rates)
        self.f0_scale = math.prod(upsample_rates)
        self.m_source = SourceModuleHnNSF(upsample_scale=self.f0_scale)
        self.noise_convs = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.noise_res = nn.ModuleList()
        for i, (rate, kernel) in enumerate(zip(upsample_rates, upsample_kernel_sizes)):
            channels = upsample_initial_channel // (2 ** (i + 1))
            self.ups.append(weight_norm(nn.ConvTranspose1d(upsample_initial_channel // (2**i), channels, kernel, rate,
                                                           padding=rate // 2 + rate % 2, output_padding=rate % 2)))
            if i + 1 < len(upsample_rates):  # the source, strided down to this stage's rate
                stride = math.prod(upsample_rates[i + 1:])
                self.noise_convs.append(nn.Conv1d(1, channels, kernel_size=stride * 2, stride=stride,
                                                  padding=(stride + 1) // 2))
                self.noise_res.append(AdaINResBlock1(channels, SOURCE_KERNEL, SOURCE_DILATIONS, style_dim))
            else:
                self.noise_convs.append(nn.Conv1d(1, channels, kernel_size=1))
                self.noise_res.append(AdaINResBlock1(channels, LAST_SOURCE_KERNEL, SOURCE_DILATIONS, style_dim))
        self.resblocks = nn.ModuleList()
        self.alphas = nn.ParameterList([nn.Parameter(torch.ones(1, upsample_initial_channel, 1))])
        for i in range(self.num_upsamples):
            channels = upsample_initial_channel // (2 ** (i + 1))
            self.alphas.append(nn.Parameter(torch.ones(1, channels, 1)))
            for kernel, dilations in zip(resblock_kernel_sizes, resblock_dilation_sizes):
                self.resblocks.append(AdaINResBlock1(channels, kernel, dilations, style_dim))
        self.conv_post = weight_norm(nn.Conv1d(channels, 1, POST_KERNEL, 1, padding=POST_KERNEL // 2))
        self.ups.apply(_official_init)
        self.conv_post.apply(_official_init)

    def forward(self, x: torch.Tensor, style: torch.Tensor, f0: torch.Tensor) -> torch.Tensor:
        """x (B, C, frames), style (B, S), f0 (B, frames) in Hz -> waveform (B, 1, frames * f0_scale)."""
        source = self.m_source(_upsample_f0(f0, self.f0_scale)).transpose(1, 2)  # (B, 1, samples)
        for i in range(self.num_upsamples):
            x = _snake(x, self.alphas[i])
            x_source = self.noise_res[i](self.noise_convs[i](source), style)
            x = self.ups[i](x) + x_source
            x = _mean_of_resblocks(self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels], x, style)
        return torch.tanh(self.conv_post(_snake(x, self.alphas[self.num_upsamples])))


class ISTFTNetGenerator(nn.Module):
    """iSTFTNet with an NSF source: upsampling convolutions predict a magnitude and phase
    spectrogram, which an inverse STFT turns into (B, 1, samples)."""

    def __init__(self, style_dim: int, resblock_kernel_sizes: list[int], upsample_rates: list[int],
                 upsample_initial_channel: int, resblock_dilation_sizes: list[list[int]],
                 upsample_kernel_sizes: list[int], gen_istft_n_fft: int, gen_istft_hop_size: int):
        super().__init__()
        self.num_kernels = len(resblock_kernel_sizes)
        self.num_upsamples = len(upsample_rates)
        self.f0_scale = math.prod(upsample_rates) * gen_istft_hop_size
        self.n_fft, self.hop = gen_istft_n_fft, gen_istft_hop_size
        spectrum = gen_istft_n_fft + 2  # magnitude and phase channels, n_fft // 2 + 1 each
        self.m_source = SourceModuleHnNSF(upsample_scale=self.f0_scale)
        self.noise_convs = nn.ModuleList()
        self.noise_res = nn.ModuleList()
        self.ups = nn.ModuleList(
            weight_norm(nn.ConvTranspose1d(upsample_initial_channel // (2**i), upsample_initial_channel // (2 ** (i + 1)),
                                           kernel, rate, padding=(kernel - rate) // 2))
            for i, (rate, kernel) in enumerate(zip(upsample_rates, upsample_kernel_sizes)))
        self.resblocks = nn.ModuleList()
        for i in range(self.num_upsamples):
            channels = upsample_initial_channel // (2 ** (i + 1))
            for kernel, dilations in zip(resblock_kernel_sizes, resblock_dilation_sizes):
                self.resblocks.append(AdaINResBlock1(channels, kernel, dilations, style_dim))
            if i + 1 < len(upsample_rates):  # the source spectrum, strided down to this stage's rate
                stride = math.prod(upsample_rates[i + 1:])
                self.noise_convs.append(nn.Conv1d(spectrum, channels, kernel_size=stride * 2, stride=stride,
                                                  padding=(stride + 1) // 2))
                self.noise_res.append(AdaINResBlock1(channels, SOURCE_KERNEL, SOURCE_DILATIONS, style_dim))
            else:
                self.noise_convs.append(nn.Conv1d(spectrum, channels, kernel_size=1))
                self.noise_res.append(AdaINResBlock1(channels, LAST_SOURCE_KERNEL, SOURCE_DILATIONS, style_dim))
        self.conv_post = weight_norm(nn.Conv1d(channels, spectrum, POST_KERNEL, 1, padding=POST_KERNEL // 2))
        self.ups.apply(_official_init)
        self.conv_post.apply(_official_init)
        self.reflection_pad = nn.ReflectionPad1d((1, 0))
        # scipy's periodic Hann window, as the package builds it (float64, then float32)
        self.register_buffer("window", torch.hann_window(gen_istft_n_fft, dtype=torch.float64).float(),
                             persistent=False)

    def forward(self, x: torch.Tensor, style: torch.Tensor, f0: torch.Tensor) -> torch.Tensor:
        """x (B, C, frames), style (B, S), f0 (B, frames) in Hz -> waveform (B, 1, samples)."""
        source = self.m_source(_upsample_f0(f0, self.f0_scale)).transpose(1, 2).squeeze(1)  # (B, samples)
        spectrum = torch.stft(source, self.n_fft, self.hop, self.n_fft, window=self.window, return_complex=True)
        source = torch.cat([spectrum.abs(), spectrum.angle()], dim=1)  # (B, n_fft + 2, STFT frames)
        for i in range(self.num_upsamples):
            x = F.leaky_relu(x, GENERATOR_LEAKY_SLOPE)
            x_source = self.noise_res[i](self.noise_convs[i](source), style)
            x = self.ups[i](x)
            if i == self.num_upsamples - 1:
                x = self.reflection_pad(x)
            x = x + x_source
            x = _mean_of_resblocks(self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels], x, style)
        x = self.conv_post(F.leaky_relu(x, ISTFT_FINAL_LEAKY_SLOPE))
        bins = self.n_fft // 2 + 1
        magnitude, phase = torch.exp(x[:, :bins, :]), torch.sin(x[:, bins:, :])
        waveform = torch.istft(magnitude * torch.exp(phase * 1j), self.n_fft, self.hop, self.n_fft, window=self.window)
        return waveform.unsqueeze(-2)
