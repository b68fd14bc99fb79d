"""Stage 1 (paper Sec. 3.1, second half): the modality adapter from Whisper width to LLM width.

Three Conv1d layers, kernel 5, stride 2: the speech sequence becomes 8x shorter, so a
30 s window (1500 encoder positions) costs the LLM about 188 tokens."""

from __future__ import annotations

import torch
from torch import nn

from es4r.config import AdapterConfig


class ModalityAdapter(nn.Module):
    """Conv stack, then a LayerNorm whose gain starts at the LLM's own embedding RMS: the LLM
    must receive speech vectors on the scale of its word embeddings (unnormalised conv
    outputs were measured ~37x larger for SmolLM2 and drove the speech path to one reply)."""

    def __init__(self, encoder_width: int, llm_width: int, config: AdapterConfig, output_rms: float = 1.0):
        super().__init__()
        self.config = config
        widths = [encoder_width] + [config.hidden] * (config.layers - 1) + [llm_width]
        layers: list[nn.Module] = []
        for index, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Conv1d(w_in, w_out, config.kernel, stride=config.stride, padding=config.kernel // 2))
            if index < config.layers - 1:
                layers.append(nn.GELU())
        self.layers = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(llm_width)
        nn.init.constant_(self.norm.weight, output_rms)

    def output_length(self, length: torch.Tensor | int) -> torch.Tensor | int:
        """Length arithmetic of the conv stack, in one place."""
        pad = self.config.kernel // 2
        for _ in range(self.config.layers):
            length = (length + 2 * pad - self.config.kernel) // self.config.stride + 1
        return length

    def forward(self, encoded: torch.Tensor) -> torch.Tensor:
        """encoded (B, T, encoder_width) -> (B, T', llm_width), T' = output_length(T) ~ T/8."""
        return self.norm(self.layers(encoded.transpose(1, 2)).transpose(1, 2))
