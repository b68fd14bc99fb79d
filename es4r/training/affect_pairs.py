"""Affect pairs: one conversation rendered falling and rising (same words), each variant with
its own affect-aware teacher reply (es4r/data/teacher.py), and the speech path asked to prefer the
reply that matches what it heard.

Why a pair loss: in the two-path loss the affect is a few tokens of each reply ("I'm so sorry…"
vs "I'm so glad…") among many that depend on the words alone, and a speech path trained with
it did not prefer the matching reply at all (held-out margin −0.06 nats, positive in 11 of 20;
assets/TRAINING_CPU.md, "The reply cue and affect pairs"). Swapping the audio between the two
targets isolates exactly what hearing must add:

    margin = [log p(t_f | a_f) − log p(t_r | a_f)] − [log p(t_f | a_r) − log p(t_r | a_r)]

(t = teacher reply, a = audio, f/r = falling/rising). The words and the targets cancel; only how
the audio changes the speech path's preferences remains. Loss = CE of the matching targets +
softplus(−margin). The same margin, on held-out pairs, is the training log's affect measure."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from es4r.data.manifest import PreparedSample, Sample, prepare_sample

PAIR = ("falling", "rising")


@dataclass(frozen=True)
class AffectPairLoss:
    loss: torch.Tensor  # ce + softplus(-margin)
    ce: torch.Tensor  # per-token CE of the two matching (audio, teacher reply) rows
    margin: torch.Tensor  # nats; > 0 when the speech path prefers the matching replies
    response_tokens: int


def affect_pairs(samples: list[Sample]) -> list[tuple[Sample, Sample]]:
    """(falling, rising) rows of each conversation that has both, in manifest order."""
    groups: dict[tuple, dict[str, Sample]] = defaultdict(dict)
    for sample in samples:
        if sample.variant in PAIR:
            groups[(sample.conversation_id, sample.turn_id)][sample.variant] = sample
    return [(g["falling"], g["rising"]) for g in groups.values() if all(v in g for v in PAIR)]


def response_logprobs(model, items: list[PreparedSample], responses: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Speech path, teacher forcing: each row's summed log-probability of its response (B,)
    and its token count (B,). Rows may repeat an item with different responses."""
    from es4r.training.losses import response_logits

    tokenizer = model.tokenizer
    ids = [tokenizer(r, add_special_tokens=False).input_ids + [tokenizer.eos_token_id] for r in responses]
    output = model([item.sample.history_turns() for item in items], [item.features for item in items], ids)
    logits, labels_batch = output.logits, output.inputs.labels
    sums, counts = [], []
    for b in range(len(items)):
        row_logits, labels = response_logits(logits[b : b + 1], labels_batch[b : b + 1])
        sums.append(-F.cross_entropy(row_logits.float(), labels, reduction="sum"))
        counts.append(labels.numel())
    return torch.stack(sums), torch.tensor(counts, device=logits.device)


def affect_pair_loss(model, falling: PreparedSample, rising: PreparedSample) -> AffectPairLoss:
    """The four teacher-forced rows of one pair in one batch (module docstring)."""
    t_f, t_r = falling.sample.response, rising.sample.response
    logp, counts = response_logprobs(model, [falling, falling, rising, rising], [t_f, t_r, t_f, t_r])
    margin = (logp[0] - logp[1]) - (logp[2] - logp[3])
    ce = -(logp[0] + logp[3]) / (counts[0] + counts[3])
    return AffectPairLoss(ce + F.softplus(-margin), ce.detach(), margin.detach(), int(counts[0] + counts[3]))


class PairSampler:
    """Draws training pairs in a seeded order, prepared (log-mels) when drawn."""

    def __init__(self, samples: list[Sample], n_mels: int, seed: int):
        self.pairs = affect_pairs(samples)
        if not self.pairs:
            raise ValueError("affect_pair_weight > 0 but the manifest has no conversation with both a "
                             "falling and a rising variant (build it with `python -m es4r corpus`)")
        self.n_mels, self.random = n_mels, random.Random(seed)

    def draw(self) -> tuple[PreparedSample, PreparedSample]:
        falling, rising = self.random.choice(self.pairs)
        return prepare_sample(falling, self.n_mels), prepare_sample(rising, self.n_mels)


@torch.no_grad()
def held_out_margin(model, samples: list[Sample], n_mels: int, limit: int | None = None) -> dict[str, float]:
    """Mean margin over held-out pairs and the share of pairs where it is positive."""
    pairs = affect_pairs(samples)[:limit]
    if not pairs:
        return {}
    margins = [float(affect_pair_loss(model, prepare_sample(f, n_mels), prepare_sample(r, n_mels)).margin)
               for f, r in pairs]
    return {"affect_margin": sum(margins) / len(margins),
            "affect_margin_positive": sum(m > 0 for m in margins) / len(margins), "affect_pairs": len(margins)}
