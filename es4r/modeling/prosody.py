"""How each heard turn was spoken, as two numbers beside its S' (our addition to the paper's Sec. 3.2).

Why: the frozen Whisper encoder keeps how fast a turn was spoken (a linear probe on its
outputs reaches R² 0.70 for pace) but not how loud (R² −0.02), and a modality adapter
trained on an hour of speech cannot recover it — yet the paper's premise is that the reply
depends on how the person sounds, and stage 3 (Section 3.3, steps 12–13) already reads the
turns' energy. So each heard turn's loudness and speaking rate, measured from the same
log-mel features stage 1 reads, are centred over the dialogue (the trend across turns is
what matters, not the microphone's level) and reach the LLM through a gated projection in
es4r/modeling/cross_modal.py that starts closed. `CrossModalConfig.prosody` turns it off."""

from __future__ import annotations

import math

import torch

PROSODY_FEATURES = ("level", "rate")
LOUD_FRAME_SHARE = 0.5  # the level is read on the louder half of the frames (speech, not pauses)


def turn_level(features: torch.Tensor) -> float:
    """Loudness of one turn from its Whisper log-mel (n_mels, frames): the mean of the louder
    half of its frames' mean log-mel. Whisper's log-mel keeps absolute level (log10 power,
    shifted and scaled), so +6 dB moves this by about 0.15."""
    frames = features.float().mean(0)
    count = max(1, int(math.ceil(frames.numel() * LOUD_FRAME_SHARE)))
    return float(frames.topk(count).values.mean())


def prosody_features(levels: list[float], frames: list[int], tokens: list[int],
                     level_scale: float, rate_scale: float) -> torch.Tensor:
    """(turns, 2) per heard turn: loudness and log speaking rate (tokens per frame), each
    minus its mean over the dialogue's heard turns and divided by its scale. One heard turn
    gives zeros: a trend needs two."""
    level = torch.tensor(levels, dtype=torch.float32)
    rate = torch.log(torch.tensor(tokens, dtype=torch.float32).clamp(min=1)
                     / torch.tensor(frames, dtype=torch.float32).clamp(min=1))
    return torch.stack([(level - level.mean()) / level_scale, (rate - rate.mean()) / rate_scale], dim=1)
