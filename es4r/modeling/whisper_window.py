"""Whisper's encoder over fewer frames than its 30 s window.

Whisper was trained on 30 s windows and transformers' `WhisperEncoder` takes nothing else, so
a 4 s turn is encoded with 26 s of padding and the encoder costs the same for any turn (four
layers of attention over 1,500 positions: ~0.5 s on a 2-core CPU, as much as the rest of the
speech path before the first word). `encode` runs the same encoder's own layers over the frames
that are present plus `tail` frames of the padding after them — the silence that ends the speech
stays in view — which is what `window_frames` works out. The outputs at the kept positions are
not bit for bit the full window's (Whisper's attention also reads the padding): how close, and
whether replies and transcripts change, is measured by `scripts/check_same_replies.py`
(`speech-window`) before a tail becomes a preset's default (`WindowConfig`)."""

from __future__ import annotations

import torch
from torch import nn


def window_frames(present: int, tail: int | None, max_frames: int) -> int:
    """Frames the encoder reads for `present` frames of input: all `max_frames` when `tail` is
    None (Whisper's own window), else present + tail, even (the second convolution halves it)."""
    if tail is None:
        return max_frames
    return min(max_frames, 2 * -(-(present + tail) // 2))


def encode(encoder: nn.Module, features: torch.Tensor, runtime=None) -> torch.Tensor:
    """`encoder`'s last hidden state for (B, n_mels, frames) with any even `frames` up to its
    window: transformers' forward for the whole window, its layers in the same order otherwise;
    the same graph in ONNX Runtime when a `runtime` (es4r/modeling/whisper_onnx.py) is given and
    no gradient is wanted (training runs torch's)."""
    if runtime is not None and not torch.is_grad_enabled():
        return runtime.encode(features)
    convolutions = encoder.conv1.stride[0] * encoder.conv2.stride[0]
    if features.shape[-1] == encoder.config.max_source_positions * convolutions:
        return encoder(features).last_hidden_state
    return encoder_layers(encoder, features)


def encoder_layers(encoder: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """What `WhisperEncoder.forward` computes, without its check that the input is 30 s long:
    the two convolutions, the first positions' embeddings, the layers, the final norm."""
    hidden = nn.functional.gelu(encoder.conv1(features))
    hidden = nn.functional.gelu(encoder.conv2(hidden)).permute(0, 2, 1)
    hidden = hidden + encoder.embed_positions.weight[: hidden.shape[1]]
    hidden = nn.functional.dropout(hidden, p=encoder.dropout, training=encoder.training)
    for layer in encoder.layers:
        out = layer(hidden, None)
        hidden = out[0] if isinstance(out, tuple) else out
    return encoder.layer_norm(hidden)
