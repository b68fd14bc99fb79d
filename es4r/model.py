"""ES4RModel: stages 1 and 2 composed — dual-level attention, frozen Whisper encoder,
modality adapter, speech-guided cross-modal attention, and the LLM with PLoRA.

Read top to bottom: window fitting, speech encoding, prompt layout, two-path inputs,
generation. Only the ES4R modules (dual, adapter, cross, PLoRA) are trainable."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from torch import nn

from es4r.adapter import ModalityAdapter
from es4r.audio import ENCODER_STRIDE
from es4r.backbones import LLMBackbone, WhisperBackbone
from es4r.config import ES4RConfig, GenerationConfig
from es4r.cross_modal import CrossModalAttention
from es4r.dual_attention import DualAttentionOutput, DualLevelAttention
from es4r.plora import apply_plora, speech_positions

logger = logging.getLogger(__name__)

SPEECH_PLACEHOLDER = "<<ES4R_SPEECH>>"  # stands where the speech sequence goes in the prompt
LOG_MEL_FLOOR_BELOW_MAX = 2.0  # Whisper's log-mel of silence sits 8 dB/4 = 2.0 below the clip maximum
IGNORE_INDEX = -100


@dataclass(frozen=True)
class SpeechEncoding:
    embeddings: torch.Tensor  # (B, S, W_llm) adapter output (before cross-modal attention)
    lengths: torch.Tensor  # (B,) valid speech positions
    dual: DualAttentionOutput
    dropped_turns: list[int]  # oldest turns left out to fit the encoder window, per dialogue


@dataclass(frozen=True)
class PromptParts:
    prefix_ids: list[int]  # chat template up to where the history goes
    history_ids: list[int]  # the transcribed history (text path; keys of cross-modal attention)
    suffix_ids: list[int]  # end of the user message + assistant header


@dataclass(frozen=True)
class PathBatch:
    """One path's model inputs. speech_mask marks where PLoRA applies (all False on the text path)."""

    inputs_embeds: torch.Tensor  # (B, L, W)
    attention_mask: torch.Tensor  # (B, L)
    speech_mask: torch.Tensor  # (B, L) bool
    labels: torch.Tensor | None  # (B, L) response token ids, IGNORE_INDEX elsewhere


@dataclass(frozen=True)
class GenerationOutput:
    text: str
    token_ids: list[int]
    cross_weights: torch.Tensor | None  # (S, T_history) speech segments x history tokens
    history_tokens: list[str]
    speech_path: bool


def embedding_rms(llm: nn.Module) -> float:
    """Root-mean-square of the LLM's input word embeddings: the scale speech vectors should have."""
    weight = llm.get_input_embeddings().weight.detach().float()
    return float(weight.pow(2).mean().sqrt())


def generation_kwargs(generation: GenerationConfig, tokenizer) -> dict:
    """`generate()` arguments from the config: one place for ES4R and the cascade baseline."""
    kwargs = dict(
        max_new_tokens=generation.max_new_tokens, do_sample=generation.do_sample,
        repetition_penalty=generation.repetition_penalty, no_repeat_ngram_size=generation.no_repeat_ngram_size,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    if generation.do_sample:
        kwargs.update(temperature=generation.temperature, top_p=generation.top_p)
    return kwargs


class _StageClock:
    """Adds elapsed seconds per named stage into a dict (no-op without one)."""

    def __init__(self, timings: dict[str, float] | None):
        self.timings, self.last = timings, time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        if self.timings is not None:
            self.timings[stage] = self.timings.get(stage, 0.0) + now - self.last
        self.last = now


class ES4RModel(nn.Module):
    def __init__(self, whisper: WhisperBackbone, llm: LLMBackbone, config: ES4RConfig):
        super().__init__()
        self.config = config
        self.whisper = whisper
        self.tokenizer = llm.tokenizer
        self.max_frames = whisper.max_frames
        self.dual = DualLevelAttention(whisper.n_mels, config.dual)
        self.adapter = ModalityAdapter(whisper.width, llm.width, config.adapter, embedding_rms(llm.model))
        self.cross = CrossModalAttention(llm.width, config.cross)
        self.llm = apply_plora(llm.model, config.plora)
        device = next(llm.model.parameters()).device
        for module in (self.dual, self.adapter, self.cross):
            module.to(device)

    # -------------------------------------------------------------- parameters
    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"dual": self.dual, "adapter": self.adapter, "cross": self.cross}

    @property
    def device(self) -> torch.device:
        return next(self.dual.parameters()).device

    # -------------------------------------------------------------- stage 1
    def fit_window(self, turn_features: list[torch.Tensor]) -> tuple[list[torch.Tensor], int]:
        """Keep the most recent turns whose downsampled frames fit one encoder window.
        Whisper takes a fixed 30 s of frames; older turns are dropped (and counted), never a crash."""
        k = self.config.dual.downsample
        kept, total = [], 0
        for features in reversed(turn_features):
            frames = -(-features.shape[1] // k)
            if total + frames > self.max_frames:
                break
            kept.insert(0, features)
            total += frames
        if not kept:
            raise ValueError(f"the latest turn alone exceeds the encoder window of {self.max_frames} frames")
        return kept, len(turn_features) - len(kept)

    def encode_speech(self, dialogues: list[list[torch.Tensor]], timings: dict[str, float] | None = None) -> SpeechEncoding:
        """dialogues: per dialogue, per turn, log-mel (n_mels, frames). Returns S (B, S, W_llm).
        `timings`, when given, receives seconds per sub-stage (for the benchmark)."""
        clock = _StageClock(timings)
        fitted = [self.fit_window(turns) for turns in dialogues]
        dual = self.dual([turns for turns, _ in fitted])
        clock.lap("dual_attention")
        encoder = self.whisper.model.get_encoder()
        dtype = next(encoder.parameters()).dtype
        batch, n_mels, length = dual.features.shape
        window = dual.features.new_empty(batch, n_mels, self.max_frames)
        for b in range(batch):
            valid = int(dual.lengths[b])
            floor = dual.features[b, :, :valid].max() - LOG_MEL_FLOOR_BELOW_MAX
            window[b] = floor
            window[b, :, :valid] = dual.features[b, :, :valid]
        encoded = encoder(window.to(dtype)).last_hidden_state  # (B, max_frames / 2, W_enc)
        clock.lap("whisper_encoder")
        encoded_lengths = (dual.lengths + ENCODER_STRIDE - 1) // ENCODER_STRIDE
        encoded = encoded[:, : int(encoded_lengths.max())].to(self.adapter.layers[0].weight.dtype)
        speech = self.adapter(encoded)  # (B, ~S/8, W_llm)
        lengths = self.adapter.output_length(encoded_lengths)
        clock.lap("adapter")
        return SpeechEncoding(speech, lengths, dual, [dropped for _, dropped in fitted])

    # -------------------------------------------------------------- prompt layout
    def prompt_parts(self, history_text: str, generation: GenerationConfig | None = None) -> PromptParts:
        """Chat template with the system prompt and one user message holding the history;
        split around a placeholder so either text or speech can fill it."""
        generation = generation or self.config.generation
        messages = [
            {"role": "system", "content": generation.system_prompt},
            {"role": "user", "content": SPEECH_PLACEHOLDER},
        ]
        rendered = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if isinstance(rendered, list):
            rendered = rendered[0]
        before, after = rendered.split(SPEECH_PLACEHOLDER)
        encode = lambda text: self.tokenizer(text, add_special_tokens=False).input_ids  # noqa: E731
        return PromptParts(encode(before), encode(history_text), encode(after))

    def embed(self, ids: list[int] | torch.Tensor) -> torch.Tensor:
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        return self.llm.get_input_embeddings()(ids)

    def speech_with_context(
        self, speech: torch.Tensor, history_ids: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 8 for one dialogue: speech (S, W) attends to the history embeddings (T, W).
        Returns S' (S, W) and weights (S, T)."""
        text = self.embed(history_ids).to(speech.dtype)
        attended, weights = self.cross(speech[None], text[None])
        return attended[0], weights[0]

    def build_path(
        self,
        parts: list[PromptParts],
        middles: list[torch.Tensor],
        responses: list[list[int]] | None,
        speech: bool,
        pad_left: bool,
    ) -> PathBatch:
        """Step 9: [prefix][middle][suffix][response] per sample, padded into one batch.
        The middle is the text history embeddings (text path) or S' (speech path)."""
        rows, masks, labels = [], [], []
        for index, (part, middle) in enumerate(zip(parts, middles)):
            response = responses[index] if responses is not None else []
            prefix, suffix = self.embed(part.prefix_ids), self.embed(part.suffix_ids)
            tail = self.embed(response) if response else prefix[:0]
            middle = middle.to(prefix.dtype)
            rows.append(torch.cat([prefix, middle, suffix, tail]))
            speech_flags = torch.zeros(rows[-1].shape[0], dtype=torch.bool, device=self.device)
            if speech:
                speech_flags[len(part.prefix_ids) : len(part.prefix_ids) + middle.shape[0]] = True
            masks.append(speech_flags)
            label = torch.full((rows[-1].shape[0],), IGNORE_INDEX, dtype=torch.long, device=self.device)
            if response:
                label[-len(response):] = torch.as_tensor(response, device=self.device)
            labels.append(label)
        longest = max(r.shape[0] for r in rows)
        width = rows[0].shape[1]
        embeds = rows[0].new_zeros(len(rows), longest, width)
        attention = torch.zeros(len(rows), longest, dtype=torch.long, device=self.device)
        speech_mask = torch.zeros(len(rows), longest, dtype=torch.bool, device=self.device)
        label_batch = torch.full((len(rows), longest), IGNORE_INDEX, dtype=torch.long, device=self.device)
        for b, row in enumerate(rows):
            span = slice(longest - row.shape[0], longest) if pad_left else slice(0, row.shape[0])
            embeds[b, span], attention[b, span] = row, 1
            speech_mask[b, span], label_batch[b, span] = masks[b], labels[b]
        return PathBatch(embeds, attention, speech_mask, label_batch if responses is not None else None)

    def path_logits(self, batch: PathBatch) -> torch.Tensor:
        """Forward one path; PLoRA active exactly at batch.speech_mask. Returns (B, L, vocab)."""
        with speech_positions(batch.speech_mask if batch.speech_mask.any() else None):
            return self.llm(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask).logits

    # -------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(
        self,
        history_text: str,
        turn_features: list[torch.Tensor] | None,
        generation: GenerationConfig | None = None,
    ) -> tuple[GenerationOutput, SpeechEncoding | None]:
        """Reply to one dialogue: speech path when turn_features are given, else text path."""
        generation = generation or self.config.generation
        parts = self.prompt_parts(history_text, generation)
        encoding, cross_weights = None, None
        if turn_features is not None:
            encoding = self.encode_speech([turn_features])
            speech = encoding.embeddings[0, : int(encoding.lengths[0])]
            middle, cross_weights = self.speech_with_context(speech, parts.history_ids)
        else:
            middle = self.embed(parts.history_ids)
        batch = self.build_path([parts], [middle], None, speech=turn_features is not None, pad_left=True)
        kwargs = generation_kwargs(generation, self.tokenizer)
        with speech_positions(batch.speech_mask if batch.speech_mask.any() else None):
            output = self.llm.generate(
                inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask, **kwargs
            )
        ids = output[0].tolist()
        text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        words = self.tokenizer.convert_ids_to_tokens(parts.history_ids)
        history_tokens = [self.tokenizer.convert_tokens_to_string([w]).strip() or w for w in words]
        return GenerationOutput(
            text, ids, cross_weights.detach().cpu() if cross_weights is not None else None,
            history_tokens, turn_features is not None,
        ), encoding
