"""The two-path loss of ES4R training (paper, Sec. 3.2): CE on the speech path's response
tokens plus KL(text ‖ speech) at temperature T over response positions, the text path (the
teacher) frozen; with the optional auxiliary affect loss (a linear read-out of each turn's
loudness and rate from the speech vectors)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from es4r.data.manifest import PreparedSample
from es4r.modeling.model import IGNORE_INDEX


@dataclass(frozen=True)
class TwoPathLoss:
    loss: torch.Tensor  # ce + kl (+ affect_weight x affect)
    ce: torch.Tensor
    kl: torch.Tensor
    response_tokens: int
    speech: list[torch.Tensor]  # per dialogue, the adapter's speech vectors (S, W) the loss was computed on
    affect: torch.Tensor | None = None  # auxiliary per-turn affect regression loss, when on
    pair_margin: torch.Tensor | None = None  # affect pair margin (es4r/training/affect_pairs.py), when on
    anchor: torch.Tensor | None = None  # change of the between-dialogue cosines (SpeechAnchor), when on


# Per speaker turn: log energy (es4r.audio.turn_energy) and log frames per character (pace),
# centred and scaled by typical values of the spoken corpus so both count alike.
AFFECT_CENTRE = (-2.4, 1.9)
AFFECT_SCALE = (0.5, 0.2)


class AffectHead(torch.nn.Module):
    """Auxiliary, training only (not saved in checkpoints): predicts each speaker turn's
    energy and pace from the mean of its speech vectors S. A constant S cannot predict
    them, so the loss keeps the adapter's output tied to how the turn was spoken — without
    it the adapter's output turned constant (assets/TRAINING_CPU.md, "the adapter still collapses")."""

    def __init__(self, width: int):
        super().__init__()
        self.linear = torch.nn.Linear(width, len(AFFECT_CENTRE))

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.linear(vectors)


def affect_loss(head: AffectHead, batch: list[PreparedSample], speech: list[torch.Tensor],
                spans: list[list[tuple[int, int] | None]]) -> torch.Tensor:
    """MSE of the head's per-turn predictions against the measured, standardised targets."""
    predictions, targets = [], []
    for item, vectors, sample_spans in zip(batch, speech, spans):
        energies = iter(item.energies)
        for turn, features, span in zip(item.sample.history, item.features, sample_spans):
            if turn.role != "speaker":
                continue
            energy = next(energies)
            if span is None or features is None:
                continue
            measured = (math.log(max(energy, 1e-6)), math.log(features.shape[1] / max(len(turn.utterance), 1)))
            targets.append([(m - c) / s for m, c, s in zip(measured, AFFECT_CENTRE, AFFECT_SCALE)])
            predictions.append(head(vectors[span[0]:span[1]].mean(0)))
    if not predictions:
        return speech[0].new_zeros(())
    return F.mse_loss(torch.stack(predictions).float(), torch.tensor(targets, device=speech[0].device))


class SpeechAnchor:
    """Training only: keeps the geometry of the dialogues' speech prompts where the run began.
    Each dialogue's mean speech vector (the adapter's output averaged over its positions) is
    compared by cosine with every other dialogue's in the batch; the loss is the mean squared
    change of those cosines from what the run's starting parts make of the same audio — a
    relational distillation (Park et al., 2019, "Relational Knowledge Distillation") with the
    starting parts as teacher. A collapse to one prompt (cosines -> 1) and a spread (cosines
    fall) both cost; a rotation or rescaling of the whole speech space, and every position's
    deviation from its dialogue's mean, are free. Why: without it, every CPU run that heard affect
    spread the dialogue means, further than the speech-cosine ship gate allows on fresh
    conversations (assets/TRAINING_CPU.md, "The speech anchor"). This trains toward the quantity that
    gate measures, so a checkpoint trained with it is judged on conversations it never saw.
    The reference is a frozen copy of the dual-level attention and adapter taken when the
    anchor is made; it is not a module of the trainer, so it is neither trained nor saved."""

    def __init__(self, model) -> None:
        frozen = {name: copy.deepcopy(getattr(model, name)).eval().requires_grad_(False)
                  for name in ("dual", "adapter")}
        self.view = model.with_parts(**frozen)

    @staticmethod
    def cosines(means: torch.Tensor) -> torch.Tensor:
        """Cosines between the rows of (B, W), the pairs above the diagonal."""
        unit = F.normalize(means.float(), dim=-1)
        upper = torch.triu_indices(len(means), len(means), offset=1, device=means.device)
        return (unit @ unit.T)[upper[0], upper[1]]

    def __call__(self, batch: list[PreparedSample], speech: list[torch.Tensor]) -> torch.Tensor:
        if len(speech) < 2:
            return speech[0].new_zeros((), dtype=torch.float32)
        with torch.no_grad():
            start = self.view.encode_speech([item.features for item in batch])
            reference = torch.stack([start.embeddings[b, : int(start.lengths[b])].float().mean(0)
                                     for b in range(len(batch))])
        now = torch.stack([vectors.float().mean(0) for vectors in speech])
        return (self.cosines(now) - self.cosines(reference)).pow(2).mean()


def response_logits(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits that predict each response token (position p-1 predicts label p), flattened in
    (batch, position) order so the two paths line up token by token. -> (N, V), (N,)"""
    shifted_logits, shifted_labels = logits[:, :-1], labels[:, 1:]
    keep = shifted_labels != IGNORE_INDEX
    return shifted_logits[keep], shifted_labels[keep]


def kl_text_speech(speech_logits: torch.Tensor, text_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(P_text ‖ P_speech), both softened by `temperature`, mean over response tokens."""
    log_p_speech = F.log_softmax(speech_logits.float() / temperature, dim=-1)
    log_p_text = F.log_softmax(text_logits.float() / temperature, dim=-1)
    return (log_p_text.exp() * (log_p_text - log_p_speech)).sum(-1).mean()


class TeacherCache:
    """The teacher's response logits per sample key. The text path runs the frozen base LLM
    (PLoRA is off at text positions, dropout off), so its logits never change: computed once,
    reused every later epoch. Kept in memory as float16 (~0.1 MB per response token for a
    49k vocabulary)."""

    def __init__(self) -> None:
        self.logits: dict[str, torch.Tensor] = {}

    def get(self, keys: list[str]) -> list[torch.Tensor] | None:
        found = [self.logits.get(k) for k in keys]
        return None if any(f is None for f in found) else found

    def put(self, keys: list[str], per_sample: list[torch.Tensor]) -> None:
        for key, logits in zip(keys, per_sample):
            self.logits[key] = logits.detach().to(torch.float16).cpu()


def teacher_logits(model, batch: list[PreparedSample], responses: list[list[int]],
                   cache: TeacherCache | None) -> torch.Tensor:
    """The text path's response logits (N, V), each sample's affect hint closing its prompt."""
    keys = [item.sample.key for item in batch]
    cached = cache.get(keys) if cache is not None else None
    if cached is None:
        with torch.no_grad():
            text = model([item.sample.history_turns() for item in batch], None, responses,
                         hints=[item.sample.affect_hint for item in batch])
        cached = [response_logits(text.logits[b : b + 1], text.inputs.labels[b : b + 1])[0] for b in range(len(batch))]
        if cache is not None:
            cache.put(keys, cached)
    return torch.cat([c.to(model.device, torch.float32) for c in cached])


def two_path_loss(model, batch: list[PreparedSample], temperature: float, kl_t2_scale: bool = False,
                  cache: TeacherCache | None = None, affect_head: AffectHead | None = None,
                  affect_weight: float = 0.0) -> TwoPathLoss:
    """Run (or look up) the teacher on the text path and the student on the speech path, both
    teacher-forced on the response; return CE + KL."""
    tokenizer = model.tokenizer
    responses = [tokenizer(item.sample.response, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
                 for item in batch]
    text_logits = teacher_logits(model, batch, responses, cache)
    student = model([item.sample.history_turns() for item in batch], [item.features for item in batch], responses)
    speech, spans = student.speech, student.spans
    speech_logits, labels = response_logits(student.logits, student.inputs.labels)
    ce = F.cross_entropy(speech_logits.float(), labels)
    kl = kl_text_speech(speech_logits, text_logits, temperature)
    if kl_t2_scale:  # Hinton et al.'s T^2 keeps the soft-target gradients on the CE scale
        kl = kl * temperature**2
    loss, affect = ce + kl, None
    if affect_head is not None and affect_weight > 0:
        affect = affect_loss(affect_head, batch, speech, spans)
        loss = loss + affect_weight * affect
    return TwoPathLoss(loss, ce.detach(), kl.detach(), int(labels.numel()), speech,
                       affect.detach() if affect is not None else None)
