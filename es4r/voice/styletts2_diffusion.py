"""StyleTTS2's style diffusion at inference (paper Sec. 3.3): the denoiser, a transformer over the
PL-BERT embedding conditioned on the noise level and the reference style; its Karras (EDM)
preconditioning; and the LibriTTS demo's sampler, ADPM2 over a Karras noise schedule.

Copied from the PyPI `styletts2` package 0.1.6 (licence text: es4r/voice/LICENSE-styletts2), `Modules/diffusion/modules.py`, `sampler.py`
and `diffusion.py` (MIT; Copyright (c) 2023 Sidharth Rajaram; from StyleTTS2: Copyright (c)
2023 Aaron (Yinghao) Li), which StyleTTS2 adapted from archinetai/audio-diffusion-pytorch.
Changed: only what inference reaches is kept (no training losses or sigma distributions, other
diffusion types, samplers or schedules, inpainting, relative position bias, cross-attention,
random embedding masking or output clamping); einops is written as torch operations;
AudioDiffusionConditional is reduced to the two attributes the checkpoint's keys need
(StyleDiffusion); AdaLayerNorm, which models.py defines too, lives here once. Kept as in the
package: parameter names, construction order and arithmetic, so a seed gives its weights and its
sampled styles."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

FIXED_EMBEDDING_LENGTH = 512  # StyleTransformer1d's embedding_max_length; the official build keeps the default
C_NOISE_SCALE = 0.25  # EDM: the denoiser sees log(sigma) / 4


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


def _feed_forward(features: int, multiplier: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(features, features * multiplier), nn.GELU(),
                         nn.Linear(features * multiplier, features))


class AttentionBase(nn.Module):
    """Multi-head scaled dot-product attention over given q, k, v, then the output projection."""

    def __init__(self, features: int, head_features: int, num_heads: int):
        super().__init__()
        self.scale = head_features**-0.5
        self.num_heads = num_heads
        self.to_out = nn.Linear(head_features * num_heads, features)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k, v (B, T, heads * head_features) -> (B, T, features)."""
        batch, frames, width = q.shape
        q, k, v = (t.reshape(batch, frames, self.num_heads, -1).permute(0, 2, 1, 3) for t in (q, k, v))  # (B, h, T, d)
        attention = (torch.einsum("... n d, ... m d -> ... n m", q, k) * self.scale).softmax(dim=-1)  # (B, h, T, T)
        out = torch.einsum("... n m, ... m d -> ... n d", attention, v)  # (B, h, T, d)
        return self.to_out(out.permute(0, 2, 1, 3).reshape(batch, frames, width))


class StyleAttention(nn.Module):
    """Self-attention with style-conditioned layer norms. `norm_context` normalises the keys'
    and values' input, which here is the same sequence (the official modules always self-attend)."""

    def __init__(self, features: int, style_dim: int, head_features: int, num_heads: int):
        super().__init__()
        mid_features = head_features * num_heads
        self.norm = AdaLayerNorm(style_dim, features)
        self.norm_context = AdaLayerNorm(style_dim, features)
        self.to_q = nn.Linear(features, mid_features, bias=False)
        self.to_kv = nn.Linear(features, mid_features * 2, bias=False)
        self.attention = AttentionBase(features, head_features=head_features, num_heads=num_heads)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """x (B, T, C), style (B, S) -> (B, T, C)."""
        k, v = self.to_kv(self.norm_context(x, style)).chunk(2, dim=-1)
        return self.attention(self.to_q(self.norm(x, style)), k, v)


class StyleTransformerBlock(nn.Module):
    def __init__(self, features: int, num_heads: int, head_features: int, style_dim: int, multiplier: int):
        super().__init__()
        self.attention = StyleAttention(features, style_dim=style_dim, head_features=head_features,
                                        num_heads=num_heads)
        self.feed_forward = _feed_forward(features, multiplier)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, style) + x
        return self.feed_forward(x) + x


class LearnedPositionalEmbedding(nn.Module):
    """Noise level (B,) -> [level, sin(2 pi f level), cos(2 pi f level)] (B, dim + 1), f learnt."""

    def __init__(self, dim: int):
        super().__init__()
        self.weights = nn.Parameter(torch.randn(dim // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, None]  # (B, 1)
        freqs = x * self.weights[None] * 2 * math.pi  # (B, dim / 2)
        return torch.cat((x, torch.cat((freqs.sin(), freqs.cos()), dim=-1)), dim=-1)


class FixedEmbedding(nn.Module):
    """A learnt embedding per position: the unconditional stand-in for the text embedding."""

    def __init__(self, max_length: int, features: int):
        super().__init__()
        self.max_length = max_length
        self.embedding = nn.Embedding(max_length, features)

    def forward(self, like: torch.Tensor) -> torch.Tensor:
        """like (B, T, features) -> (B, T, features)."""
        batch, length = like.shape[:2]
        if length > self.max_length:
            raise ValueError(f"text embedding has {length} positions; the diffusion takes at most {self.max_length}")
        return self.embedding(torch.arange(length, device=like.device)).expand(batch, -1, -1)


class _ChannelsFirst(nn.Module):
    """(B, T, C) -> (B, C, T); the official `Rearrange` at index 0 of `to_out`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class StyleTransformer1d(nn.Module):
    """The multi-speaker denoiser: a noisy style (B, 1, channels) is broadcast over the text
    embedding (B, T, E), mixed by style-conditioned transformer blocks with a noise-level +
    reference-style mapping added before each, averaged over T and projected back."""

    def __init__(self, num_layers: int, channels: int, num_heads: int, head_features: int, multiplier: int,
                 context_features: int, context_embedding_features: int,
                 embedding_max_length: int = FIXED_EMBEDDING_LENGTH):
        super().__init__()
        width = channels + context_embedding_features
        self.blocks = nn.ModuleList(
            StyleTransformerBlock(width, num_heads=num_heads, head_features=head_features,
                                  style_dim=context_features, multiplier=multiplier)
            for _ in range(num_layers))
        self.to_out = nn.Sequential(_ChannelsFirst(), nn.Conv1d(width, channels, kernel_size=1))
        self.to_mapping = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width), nn.GELU())
        self.to_time = nn.Sequential(
            nn.Sequential(LearnedPositionalEmbedding(channels), nn.Linear(channels + 1, width)), nn.GELU())
        self.to_features = nn.Sequential(nn.Linear(context_features, width), nn.GELU())
        self.fixed_embedding = FixedEmbedding(max_length=embedding_max_length, features=context_embedding_features)

    def run(self, x: torch.Tensor, time: torch.Tensor, embedding: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """x (B, 1, channels), time (B,), embedding (B, T, E), features (B, context) -> (B, 1, channels)."""
        mapping = self.to_mapping(torch.stack([self.to_time(time), self.to_features(features)]).sum(dim=0))  # (B, W)
        x = torch.cat([x.expand(-1, embedding.size(1), -1), embedding], dim=-1)  # (B, T, W)
        mapping = mapping.unsqueeze(1).expand(-1, embedding.size(1), -1)
        for block in self.blocks:
            x = block(x + mapping, features)
        return self.to_out(x.mean(dim=1).unsqueeze(1)).transpose(-1, -2)

    def forward(self, x: torch.Tensor, time: torch.Tensor, embedding: torch.Tensor, features: torch.Tensor,
                embedding_scale: float = 1.0) -> torch.Tensor:
        """Denoiser output (B, 1, channels); embedding_scale != 1 applies classifier-free guidance
        against the fixed (text-free) embedding."""
        if embedding_scale == 1.0:
            return self.run(x, time, embedding=embedding, features=features)
        out = self.run(x, time, embedding=embedding, features=features)
        out_masked = self.run(x, time, embedding=self.fixed_embedding(embedding), features=features)
        return out_masked + (out - out_masked) * embedding_scale


class KDiffusion(nn.Module):
    """Elucidated diffusion (Karras et al. 2022, arXiv:2206.00364) preconditioning of `net`."""

    def __init__(self, net: nn.Module, sigma_data: float):
        super().__init__()
        self.net = net
        self.sigma_data = sigma_data  # data standard deviation, from config.yml

    def get_scale_weights(self, sigmas: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """sigmas (B,) -> c_skip, c_out, c_in (B, 1, 1) and c_noise (B,) (EDM Table 1)."""
        sigma_data = self.sigma_data
        c_noise = torch.log(sigmas) * C_NOISE_SCALE
        sigmas = sigmas[:, None, None]
        c_skip = (sigma_data**2) / (sigmas**2 + sigma_data**2)
        c_out = sigmas * sigma_data * (sigma_data**2 + sigmas**2) ** -0.5
        c_in = (sigmas**2 + sigma_data**2) ** -0.5
        return c_skip, c_out, c_in, c_noise

    def denoise_fn(self, x_noisy: torch.Tensor, sigma: torch.Tensor | float, **kwargs: Any) -> torch.Tensor:
        """x_noisy (B, 1, C) at noise level sigma -> denoised (B, 1, C); kwargs go to `net`."""
        sigmas = torch.full(size=(x_noisy.shape[0],), fill_value=sigma).to(x_noisy.device)
        c_skip, c_out, c_in, c_noise = self.get_scale_weights(sigmas)
        x_pred = self.net(c_in * x_noisy, c_noise, **kwargs)
        return c_skip * x_noisy + c_out * x_pred


class StyleDiffusion(nn.Module):
    """The checkpoint's `diffusion` network: the denoiser held twice, as `unet` and as the
    preconditioned `diffusion.net` (the official AudioDiffusionConditional after build_model)."""

    def __init__(self, denoiser: StyleTransformer1d, sigma_data: float):
        super().__init__()
        self.diffusion = KDiffusion(denoiser, sigma_data=sigma_data)
        self.unet = denoiser


class KarrasSchedule:
    """Noise levels of EDM eq. 5, from sigma_max down to sigma_min, then 0: (num_steps + 1,)."""

    def __init__(self, sigma_min: float, sigma_max: float, rho: float):
        self.sigma_min, self.sigma_max, self.rho = sigma_min, sigma_max, rho

    def __call__(self, num_steps: int, device: torch.device) -> torch.Tensor:
        rho_inv = 1.0 / self.rho
        steps = torch.arange(num_steps, device=device, dtype=torch.float32)
        sigmas = (self.sigma_max**rho_inv
                  + (steps / (num_steps - 1)) * (self.sigma_min**rho_inv - self.sigma_max**rho_inv)) ** self.rho
        return F.pad(sigmas, pad=(0, 1), value=0.0)


class ADPM2Sampler:
    """Ancestral DPM-Solver-2: a midpoint step to each lower noise level, plus fresh noise."""

    @staticmethod
    def get_sigmas(sigma: torch.Tensor, sigma_next: torch.Tensor) -> tuple[float, float, torch.Tensor]:
        """(sigma_up, sigma_down, sigma_mid): noise to add back, deterministic target, midpoint."""
        sigma_up = math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2)
        sigma_down = math.sqrt(sigma_next**2 - sigma_up**2)
        sigma_mid = (sigma + sigma_down) / 2  # the package's rho = 1
        return sigma_up, sigma_down, sigma_mid

    def step(self, x: torch.Tensor, fn: Callable[..., torch.Tensor], sigma: torch.Tensor,
             sigma_next: torch.Tensor) -> torch.Tensor:
        sigma_up, sigma_down, sigma_mid = self.get_sigmas(sigma, sigma_next)
        d = (x - fn(x, sigma=sigma)) / sigma  # dx/dsigma at sigma
        x_mid = x + d * (sigma_mid - sigma)
        d_mid = (x_mid - fn(x_mid, sigma=sigma_mid)) / sigma_mid  # dx/dsigma at the midpoint
        x = x + d_mid * (sigma_down - sigma)
        return x + torch.randn_like(x) * sigma_up

    def __call__(self, noise: torch.Tensor, fn: Callable[..., torch.Tensor], sigmas: torch.Tensor,
                 num_steps: int) -> torch.Tensor:
        x = sigmas[0] * noise
        for i in range(num_steps - 1):
            x = self.step(x, fn=fn, sigma=sigmas[i], sigma_next=sigmas[i + 1])
        return x


class DiffusionSampler:
    """Sample from a KDiffusion with a sampler over a schedule; keyword arguments of the call
    (embedding, features, embedding_scale) condition every denoising step."""

    def __init__(self, diffusion: KDiffusion, sampler: ADPM2Sampler, sigma_schedule: KarrasSchedule):
        self.denoise_fn = diffusion.denoise_fn
        self.sampler = sampler
        self.sigma_schedule = sigma_schedule

    def __call__(self, noise: torch.Tensor, num_steps: int, **kwargs: Any) -> torch.Tensor:
        """noise (B, 1, C) -> sampled (B, 1, C) after num_steps noise levels."""
        sigmas = self.sigma_schedule(num_steps, noise.device)

        def fn(x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
            return self.denoise_fn(x, sigma=sigma, **kwargs)

        return self.sampler(noise, fn=fn, sigmas=sigmas, num_steps=num_steps)
