"""What ES4RModel's steps hand each other and return: the speech encoding (stage 1), the
prompt's parts and the speech path's middle of the prompt (stage 2), one path's model inputs,
the forward pass's output, and a generated reply."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from es4r.modeling.affect_reader import AffectReading
from es4r.modeling.dual_attention import DualAttentionOutput


@dataclass(frozen=True)
class SpeechEncoding:
    embeddings: torch.Tensor  # (B, S, W_llm) adapter output (before cross-modal attention)
    lengths: torch.Tensor  # (B,) valid speech positions
    dual: DualAttentionOutput
    dropped_turns: list[int]  # oldest turns left out to fit the encoder window, per dialogue
    turn_spans: list[list[tuple[int, int]]]  # per dialogue, per encoded turn: [start, end) speech positions
    turn_levels: list[list[float]]  # per dialogue, per encoded turn: loudness (es4r/modeling/prosody.py)


@dataclass(frozen=True)
class PromptParts:
    prefix_ids: list[int]  # chat template up to where the history goes
    history_ids: list[int]  # the transcribed history (text path; keys of cross-modal attention)
    suffix_ids: list[int]  # end of the user message + assistant header
    turn_spans: list[tuple[int, int]]  # per history turn: [start, end) in history_ids


@dataclass(frozen=True)
class SpeechContext:
    """The speech path's middle of the prompt for one dialogue (paper Sec. 3.2, applied per turn)."""

    middle: torch.Tensor  # (L, W): S' for heard turns, the turn's word embeddings for unheard ones
    speech_flags: torch.Tensor  # (L,) bool: True at S' positions (where PLoRA applies)
    weights: torch.Tensor  # (S, T) cross-modal weights, speech positions x history tokens
    unheard_turns: list[int]  # history turns read as text (no audio, or outside the speech window)
    prosody: torch.Tensor | None = None  # (heard turns, 2) centred loudness and rate, when used
    cue: torch.Tensor | None = None  # (W,) added to the reply cue's embeddings (CrossModalAttention.reply_cue)


@dataclass(frozen=True)
class PathBatch:
    """One path's model inputs. speech_mask marks where PLoRA applies (all False on the text path)."""

    inputs_embeds: torch.Tensor  # (B, L, W)
    attention_mask: torch.Tensor  # (B, L)
    speech_mask: torch.Tensor  # (B, L) bool
    labels: torch.Tensor | None  # (B, L) response token ids, IGNORE_INDEX elsewhere


@dataclass(frozen=True)
class ES4ROutput:
    """What `ES4RModel.forward` returns for a batch of dialogues on one path."""

    logits: torch.Tensor | None  # (B, L, vocab); None when only the prompt was asked for (generate)
    inputs: PathBatch  # what the LLM reads: (B, L, W) embeddings, masks, response labels
    parts: list[PromptParts]  # per dialogue: the prompt's layout (on the speech path with the affect note)
    encoding: SpeechEncoding | None = None  # stage 1 (speech path); dual-level weights when asked for
    contexts: list[SpeechContext] | None = None  # per dialogue: S', its flags, cross-modal weights (S, T)
    spans: list[list[tuple[int, int] | None]] | None = None  # per dialogue, per history turn: speech positions
    affect: list[AffectReading | None] | None = None  # per dialogue: how the user sounded (speech path)

    @property
    def speech(self) -> list[torch.Tensor]:
        """Per dialogue, the adapter's speech vectors S (S, W_llm)."""
        encoding = self.encoding
        return [encoding.embeddings[b, : int(encoding.lengths[b])] for b in range(len(self.parts))]


@dataclass(frozen=True)
class GenerationOutput:
    text: str
    token_ids: list[int]
    cross_weights: torch.Tensor | None  # (S, T_history) speech segments x history tokens
    history_tokens: list[str]
    speech_path: bool
    prompt_tokens: int = 0  # positions of the prompt the LLM read
    reused_tokens: int = 0  # of those, how many came from the last reply's cache (text path)
    affect: AffectReading | None = None  # speech path: how the user sounded, and the note the LLM got
