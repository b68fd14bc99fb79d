"""Stage 2, step 8: speech-guided cross-modal attention.

Query = the speech sequence S, key = value = the LLM's embeddings of the transcribed text
history: each speech segment gathers the history words its affect points at. Residual with
a zero-initialised output projection, so an untrained block passes S through unchanged."""

from __future__ import annotations

import torch
from torch import nn

from es4r.config import CrossModalConfig


class CrossModalAttention(nn.Module):
    def __init__(self, width: int, config: CrossModalConfig):
        super().__init__()
        if width % config.heads:
            raise ValueError(f"LLM width {width} is not divisible by {config.heads} cross-modal heads")
        self.config = config
        self.query_norm = nn.LayerNorm(width)
        self.key_norm = nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, config.heads, dropout=config.dropout, batch_first=True)
        nn.init.zeros_(self.attention.out_proj.weight)
        nn.init.zeros_(self.attention.out_proj.bias)

    def forward(
        self,
        speech: torch.Tensor,
        text_embeddings: torch.Tensor,
        text_padding_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """speech (B, S, W), text_embeddings (B, T, W), mask (B, T) True = padding.
        Returns S' (B, S, W) and weights (B, S, T) averaged over heads; rows sum to 1."""
        if not self.config.enabled:
            empty = speech.new_zeros(speech.shape[0], speech.shape[1], text_embeddings.shape[1])
            return speech, empty
        attended, weights = self.attention(
            self.query_norm(speech), self.key_norm(text_embeddings), text_embeddings,
            key_padding_mask=text_padding_mask, need_weights=True, average_attn_weights=True,
        )
        return speech + attended, weights
