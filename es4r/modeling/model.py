"""ES4RModel: stages 1 and 2 composed — dual-level attention, frozen Whisper encoder,
modality adapter, speech-guided cross-modal attention, and the LLM with PLoRA.

Read top to bottom: window fitting, speech encoding, prompt layout, two-path inputs, the
forward pass that wires them (the only one: training, generation and the pipeline call it),
generation. Only the ES4R modules (dual, adapter, cross, PLoRA) are trainable."""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from transformers import LogitsProcessorList, StoppingCriteriaList

from es4r.audio import ENCODER_STRIDE
from es4r.config import ES4RConfig, GenerationConfig
from es4r.conversation import USER, history_lines
from es4r.modeling.adapter import ModalityAdapter
from es4r.modeling.affect_reader import AffectReading, heard_user_turns
from es4r.modeling.backbones import LLMBackbone, WhisperBackbone
from es4r.modeling.cross_modal import NO_TURN, CrossModalAttention
from es4r.modeling.dual_attention import DualLevelAttention
from es4r.modeling.outputs import ES4ROutput, GenerationOutput, PathBatch, PromptParts, SpeechContext, SpeechEncoding
from es4r.modeling.plora import apply_plora, speech_positions
from es4r.modeling.prefix_cache import PrefixCache
from es4r.modeling.prosody import prosody_features, turn_level
from es4r.modeling.openings import OpeningBan
from es4r.modeling.condolences import CondolenceBan, heard_loss
from es4r.modeling.repeats import earlier_openings_ban, earlier_replies_ban
from es4r.modeling.token_ids import TokenIds
from es4r.modeling.whisper_window import encode, window_frames
from es4r.reply_text import sentences_done
from es4r.timing import timed

logger = logging.getLogger(__name__)

SPEECH_PLACEHOLDER = "<<ES4R_SPEECH>>"  # stands where the speech sequence goes in the prompt
LOG_MEL_FLOOR_BELOW_MAX = 2.0  # Whisper's log-mel of silence sits 8 dB/4 = 2.0 below the clip maximum
IGNORE_INDEX = -100
FRAMES_PER_POSITION = ENCODER_STRIDE * 8  # downsampled frames per speech position (encoder x2, adapter x8)


def heard_turns(turn_features: list[torch.Tensor | None]) -> list[torch.Tensor]:
    """The turns with audio, in order (None marks a turn without)."""
    return [features for features in turn_features if features is not None]


def embedding_rms(llm: nn.Module) -> float:
    """Root-mean-square of the LLM's input word embeddings: the scale speech vectors should have."""
    weight = llm.get_input_embeddings().weight.detach().float()
    return float(weight.pow(2).mean().sqrt())


def text_before_speech(parts: PromptParts, spans: list[tuple[int, int] | None], words_too: bool = False) -> int:
    """How many history tokens the speech path's prompt reads as text before its first heard
    turn (`spans`: each turn's speech positions, None when it is read as text): those turns'
    positions in S' are their word embeddings, as on the text path. `words_too` (the
    "text_and_speech" layout): the first heard turn's own words come before its S' as well."""
    for (start, end), span in zip(parts.turn_spans, spans):
        if span is not None and end > start:
            return end if words_too else start
    return len(parts.history_ids)


def generation_kwargs(generation: GenerationConfig, tokenizer, prompt_length: int = 0) -> dict:
    """`generate()` arguments from the config: one place for ES4R, the teacher and the cascade
    baseline. Generation stops once the reply holds `max_sentences` sentences (the reply is
    cut there anyway); `prompt_length` is the prompt's tokens at the start of each output row."""
    kwargs = dict(
        max_new_tokens=generation.max_new_tokens, do_sample=generation.do_sample,
        repetition_penalty=generation.repetition_penalty, no_repeat_ngram_size=generation.no_repeat_ngram_size,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        stopping_criteria=StoppingCriteriaList([sentences_done(tokenizer, generation.max_sentences, prompt_length)]),
    )
    if generation.do_sample:
        kwargs.update(temperature=generation.temperature, top_p=generation.top_p)
    return kwargs


class ES4RModel(nn.Module):
    def __init__(self, whisper: WhisperBackbone, llm: LLMBackbone, config: ES4RConfig):
        super().__init__()
        self.config = config
        self.whisper = whisper  # processor, sizes and the model (for ASR too)
        self.whisper_model = whisper.model  # registered, so .to()/casting moves the encoder with the rest
        self.tokenizer = llm.tokenizer
        self.max_frames = whisper.max_frames
        self.dual = DualLevelAttention(whisper.n_mels, config.dual)
        self.adapter = ModalityAdapter(whisper.width, llm.width, config.adapter, embedding_rms(llm.model))
        self.cross = CrossModalAttention(llm.width, config.cross, embedding_rms(llm.model))
        self.llm = apply_plora(llm.model, config.plora)
        self.prefix_cache = PrefixCache()  # shared by every view (with_config) of this model
        self.token_ids = TokenIds(self.tokenizer)  # each history line tokenised once; shared by every view
        self.condolence_ban = CondolenceBan(self.tokenizer)  # its token ids, found once
        self.decoder = None  # greedy decode steps in ONNX Runtime (use_onnx_decoder), else generate's
        device = next(llm.model.parameters()).device
        for module in (self.dual, self.adapter, self.cross):
            module.to(device)

    def with_config(self, config: ES4RConfig) -> "ES4RModel":
        """This model's weights under another config (an ablation such as no_dual): a view that
        shares every parameter and gives the ES4R parts the new config's sections; this model
        itself is left as it is."""
        parts = {}
        for name, section in (("dual", config.dual), ("adapter", config.adapter), ("cross", config.cross)):
            parts[name] = copy.copy(self._modules[name])
            parts[name].config = section
        view = self.with_parts(**parts)
        view.config = config
        return view

    def with_parts(self, **parts: nn.Module) -> "ES4RModel":
        """A view of this model with some ES4R parts (dual, adapter, cross) replaced and every
        other module shared; this model itself is left as it is."""
        view = copy.copy(self)
        view._modules = {**self._modules, **parts}
        return view

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

    def encode_speech(self, dialogues: list[list[torch.Tensor | None]], timings: dict[str, float] | None = None,
                      need_weights: bool = True) -> SpeechEncoding:
        """dialogues: per dialogue, per turn, log-mel (n_mels, frames), None for a turn without
        audio (not heard). Returns S (B, S, W_llm). `timings`, when given, receives seconds per
        sub-stage (for the benchmark). Without `need_weights` the dual-level attention keeps no
        weights (the heatmaps ask for them: `ES4RPipeline.attention_maps`)."""
        fitted = [self.fit_window(heard_turns(turns)) for turns in dialogues]
        with timed(timings, "dual_attention"):
            dual = self.dual([turns for turns, _ in fitted], need_weights)
        with timed(timings, "whisper_encoder"):
            encoder = self.whisper.model.get_encoder()
            dtype = next(encoder.parameters()).dtype
            batch, n_mels, length = dual.features.shape
            frames = window_frames(int(dual.lengths.max()), self.config.window.speech_tail_frames, self.max_frames)
            window = dual.features.new_empty(batch, n_mels, frames)
            for b in range(batch):
                valid = int(dual.lengths[b])
                floor = dual.features[b, :, :valid].max() - LOG_MEL_FLOOR_BELOW_MAX
                window[b] = floor
                window[b, :, :valid] = dual.features[b, :, :valid]
            encoded = encode(encoder, window.to(dtype), self.whisper.runtime)  # (B, frames / 2, W_enc)
        with timed(timings, "adapter"):
            encoded_lengths = (dual.lengths + ENCODER_STRIDE - 1) // ENCODER_STRIDE
            encoded = encoded[:, : int(encoded_lengths.max())].to(self.adapter.layers[0].weight.dtype)
            speech = self.adapter(encoded)  # (B, ~S/8, W_llm)
            lengths = self.adapter.output_length(encoded_lengths)
        spans = [self._turn_spans(turn_lengths, int(n)) for turn_lengths, n in zip(dual.turn_lengths, lengths)]
        levels = [[turn_level(features) for features in turns] for turns, _ in fitted]
        return SpeechEncoding(speech, lengths, dual, [dropped for _, dropped in fitted], spans, levels)

    @staticmethod
    def _turn_spans(turn_lengths: list[int], positions: int) -> list[tuple[int, int]]:
        """Which speech positions belong to which turn: each position covers
        FRAMES_PER_POSITION downsampled frames; turn boundaries are rounded to the nearest
        position (a turn shorter than half a position can get none: it is then read as text)."""
        bounds = [0]
        for frames in np.cumsum(turn_lengths)[:-1]:
            bounds.append(min(max(int(round(frames / FRAMES_PER_POSITION)), bounds[-1]), positions))
        bounds.append(positions)
        return list(zip(bounds[:-1], bounds[1:]))

    def heard_spans(self, turn_features: list[torch.Tensor | None], encoding: SpeechEncoding,
                    index: int = 0) -> list[tuple[int, int] | None]:
        """Per history turn, its speech positions in dialogue `index` of `encoding`, or None
        for a turn that is not heard (no audio, outside the speech window, or too short)."""
        spans: list[tuple[int, int] | None] = [None] * len(turn_features)
        for turn, encoded in self._encoded_turns(turn_features, encoding, index).items():
            span = encoding.turn_spans[index][encoded]
            spans[turn] = span if span[1] > span[0] else None
        return spans

    def heard_prosody(self, turn_features: list[torch.Tensor | None], encoding: SpeechEncoding,
                      index: int = 0) -> list[tuple[float, int] | None]:
        """Per history turn, (loudness, downsampled frames) of an encoded turn, else None."""
        prosody: list[tuple[float, int] | None] = [None] * len(turn_features)
        for turn, encoded in self._encoded_turns(turn_features, encoding, index).items():
            prosody[turn] = (encoding.turn_levels[index][encoded], encoding.dual.turn_lengths[index][encoded])
        return prosody

    @staticmethod
    def _encoded_turns(turn_features: list[torch.Tensor | None], encoding: SpeechEncoding,
                       index: int) -> dict[int, int]:
        """History turn -> its index among dialogue `index`'s encoded turns."""
        audio_turns = [i for i, features in enumerate(turn_features) if features is not None]
        return {turn: k for k, turn in enumerate(audio_turns[encoding.dropped_turns[index]:])}

    # -------------------------------------------------------------- prompt layout
    def prompt_parts(self, history: list[tuple[str, str]], generation: GenerationConfig | None = None,
                     hint: str | None = None) -> PromptParts:
        """The prompt layout of both paths (`prompt_parts` below) with this model's tokenizer."""
        return prompt_parts(self.tokenizer, history, (generation or self.config.generation).system_prompt, hint,
                            encode=self.token_ids)

    def read_affect(self, history: list[tuple[str, str]],
                    turn_features: list[torch.Tensor | None]) -> AffectReading | None:
        """What the speech path hears of how the user sounds across their heard turns
        (es4r/modeling/affect_reader.py); None when the model has no affect reader."""
        reader = getattr(self.cross, "reader", None)
        if reader is None or not self.config.cross.affect_note:  # none built, or the no_note ablation
            return None
        return reader.read(heard_user_turns(history, turn_features))

    def speech_prompt_parts(self, history: list[tuple[str, str]], turn_features: list[torch.Tensor | None],
                            generation: GenerationConfig | None = None) -> tuple[PromptParts, AffectReading | None]:
        """The speech path's prompt layout: the text path's, with the note of what the affect
        reader heard closing the user message where the training teacher reads its hint."""
        reading = self.read_affect(history, turn_features)
        return self.prompt_parts(history, generation, hint=reading.note if reading else None), reading

    def embed(self, ids: list[int] | torch.Tensor) -> torch.Tensor:
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        return self.llm.get_input_embeddings()(ids)

    def speech_context(self, speech: torch.Tensor, spans: list[tuple[int, int] | None],
                       parts: PromptParts, prosody: list[tuple[float, int] | None] | None = None) -> SpeechContext:
        """Step 8 for one dialogue. speech (S, W) is the adapter output; spans gives each
        history turn's speech positions (None = unheard). Heard turns become S' (their speech
        reads their own tokens); unheard turns keep their word embeddings, explicitly. With
        `cross.history_layout` "text_and_speech" a heard turn keeps its words too, S' after them.
        `prosody` (from `heard_prosody`) adds each heard turn's loudness and rate to its S'."""
        text = self.embed(parts.history_ids).to(speech.dtype)
        speech_turn = torch.full((speech.shape[0],), NO_TURN, dtype=torch.long, device=speech.device)
        text_turn = torch.full((text.shape[0],), NO_TURN, dtype=torch.long, device=speech.device)
        for turn, (token_span, speech_span) in enumerate(zip(parts.turn_spans, spans)):
            text_turn[token_span[0]:token_span[1]] = turn
            if speech_span is not None:
                speech_turn[speech_span[0]:speech_span[1]] = turn
        turn_prosody, position_prosody = self._position_prosody(speech, spans, parts, prosody)
        attended, weights = self.cross(speech[None], text[None], speech_turn[None], text_turn[None],
                                       None if position_prosody is None else position_prosody[None])
        pieces, flags, unheard = [], [], []
        both = self.config.cross.history_layout == "text_and_speech"
        for turn, (token_span, speech_span) in enumerate(zip(parts.turn_spans, spans)):
            if speech_span is None or token_span[1] == token_span[0]:
                pieces.append(text[token_span[0]:token_span[1]])
                flags.append(torch.zeros(token_span[1] - token_span[0], dtype=torch.bool, device=speech.device))
                unheard.append(turn)
            else:
                if both:  # the turn's words first, then what its speech made of them
                    pieces.append(text[token_span[0]:token_span[1]])
                    flags.append(torch.zeros(token_span[1] - token_span[0], dtype=torch.bool, device=speech.device))
                pieces.append(attended[0, speech_span[0]:speech_span[1]])
                flags.append(torch.ones(speech_span[1] - speech_span[0], dtype=torch.bool, device=speech.device))
        return SpeechContext(torch.cat(pieces), torch.cat(flags), weights[0], unheard, turn_prosody,
                             self.cross.reply_cue(turn_prosody))

    def _position_prosody(self, speech: torch.Tensor, spans: list[tuple[int, int] | None], parts: PromptParts,
                          prosody: list[tuple[float, int] | None] | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Centred loudness and rate per heard turn (turns, 2), spread over its speech positions (S, 2)."""
        if prosody is None or not self.config.cross.prosody:
            return None, None
        heard = [turn for turn, (span, measured) in enumerate(zip(spans, prosody))
                 if span is not None and measured is not None and parts.turn_spans[turn][1] > parts.turn_spans[turn][0]]
        if not heard:
            return None, None
        values = prosody_features([prosody[t][0] for t in heard], [prosody[t][1] for t in heard],
                                  [parts.turn_spans[t][1] - parts.turn_spans[t][0] for t in heard],
                                  self.config.cross.prosody_level_scale, self.config.cross.prosody_rate_scale)
        values = values.to(speech.device)
        positions = speech.new_zeros(speech.shape[0], values.shape[1], dtype=torch.float32)
        for turn, value in zip(heard, values):
            positions[spans[turn][0]:spans[turn][1]] = value
        return values, positions

    def build_path(
        self,
        parts: list[PromptParts],
        middles: list[torch.Tensor],
        responses: list[list[int]] | None,
        speech_flags: list[torch.Tensor] | None,
        pad_left: bool,
        cues: list[torch.Tensor | None] | None = None,
    ) -> PathBatch:
        """Step 9: [prefix][middle][suffix][response] per sample, padded into one batch.
        The middle is the text history embeddings (text path, speech_flags None) or the
        speech context (speech path, its flags marking the S' positions). `cues` (speech
        path, `SpeechContext.cue`) are added to the suffix: the reply cue."""
        rows, masks, labels = [], [], []
        for index, (part, middle) in enumerate(zip(parts, middles)):
            response = responses[index] if responses is not None else []
            prefix, suffix = self.embed(part.prefix_ids), self.embed(part.suffix_ids)
            if cues is not None and cues[index] is not None:
                suffix = suffix + cues[index].to(suffix.dtype)
            tail = self.embed(response) if response else prefix[:0]
            middle = middle.to(prefix.dtype)
            rows.append(torch.cat([prefix, middle, suffix, tail]))
            flags = torch.zeros(rows[-1].shape[0], dtype=torch.bool, device=self.device)
            if speech_flags is not None:
                flags[len(part.prefix_ids) : len(part.prefix_ids) + middle.shape[0]] = speech_flags[index]
            masks.append(flags)
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

    # -------------------------------------------------------------- forward
    def forward(
        self,
        histories: list[list[tuple[str, str]]],
        turn_features: list[list[torch.Tensor | None]] | None = None,
        responses: list[list[int]] | None = None,
        *,
        hints: list[str | None] | None = None,
        generation: GenerationConfig | None = None,
        encoding: SpeechEncoding | None = None,
        need_weights: bool = True,
        pad_left: bool = False,
        prompt_only: bool = False,
    ) -> ES4ROutput:
        """Stages 1-2 for a batch of dialogues (paper Sec. 3.1-3.2): each history ((role, text)
        per turn) read on the speech path when `turn_features` are given — per dialogue, one
        log-mel (n_mels, frames) per history turn, None for a turn without audio — else on the
        text path. Speech path: the affect reader's note closes the prompt, the heard turns are
        encoded (or `encoding` of those features is reused: speech is encoded once per turn)
        and cross-modal attention makes S' with PLoRA at its positions. Text path: the
        history's word embeddings, `hints` closing each prompt (the training teacher's).
        `responses` (token ids per dialogue) follow the prompt as labels (teacher forcing);
        `need_weights`: the dual-level attention keeps its weights (the heatmaps);
        `pad_left`: pad the batch on the left (for generation); `prompt_only`: stop at the
        LLM's inputs (generate's decode loop reads them itself) — logits are then None."""
        generation = generation or self.config.generation
        if turn_features is None:
            hints = hints or [None] * len(histories)
            parts = [self.prompt_parts(history, generation, hint) for history, hint in zip(histories, hints)]
            batch = self.build_path(parts, [self.embed(p.history_ids) for p in parts], responses, None, pad_left)
            contexts, spans, readings = None, None, None
        else:
            for history, features in zip(histories, turn_features):
                if len(features) != len(history):
                    raise ValueError(f"expected one feature entry per history turn ({len(history)}), "
                                     f"found {len(features)}")
            prompts = [self.speech_prompt_parts(h, f, generation) for h, f in zip(histories, turn_features)]
            parts, readings = [p for p, _ in prompts], [r for _, r in prompts]
            if encoding is None:
                encoding = self.encode_speech(turn_features, need_weights=need_weights)
            spans = [self.heard_spans(features, encoding, b) for b, features in enumerate(turn_features)]
            contexts = [self.speech_context(encoding.embeddings[b, : int(encoding.lengths[b])], spans[b], parts[b],
                                            self.heard_prosody(features, encoding, b))
                        for b, features in enumerate(turn_features)]
            batch = self.build_path(parts, [c.middle for c in contexts], responses, [c.speech_flags for c in contexts],
                                    pad_left, cues=[c.cue for c in contexts])
        logits = None if prompt_only else self.path_logits(batch)
        return ES4ROutput(logits, batch, parts, encoding, contexts, spans, readings)

    # -------------------------------------------------------------- generation
    def use_onnx_decoder(self) -> None:
        """Run the LLM's greedy replies (es4r/modeling/onnx_decode.py), and Whisper's encoder
        where no gradient is wanted and an English-only Whisper's transcript decode
        (es4r/modeling/whisper_onnx.py), in ONNX Runtime, from the weights as they are now.
        CPU and fp32 only; otherwise it says why and keeps torch's."""
        from es4r.modeling.onnx_decode import decoder_for
        from es4r.modeling.whisper_onnx import whisper_runtime_for

        self.decoder = decoder_for(self.llm, self.config.generation)
        self.whisper.runtime = whisper_runtime_for(self.whisper.model)

    @torch.no_grad()
    def generate(
        self,
        history: list[tuple[str, str]],
        turn_features: list[torch.Tensor | None] | None,
        generation: GenerationConfig | None = None,
        encoding: SpeechEncoding | None = None,
        streamer=None,
        avoid_in_opening: tuple[str, ...] = (),
    ) -> tuple[GenerationOutput, SpeechEncoding | None]:
        """Reply to one dialogue: speech path when turn_features (one per history turn, None
        for a turn without audio) are given, else text path. Pass the `encoding` of those
        features when the caller already has it: speech is encoded once per turn. A
        transformers streamer (e.g. `TextIteratorStreamer`) receives the tokens as they come.
        `avoid_in_opening`: words the reply's first sentence must not use (es4r.modeling.openings)."""
        generation = generation or self.config.generation
        spoken = turn_features is not None
        prompt = self([history], [turn_features] if spoken else None, generation=generation, encoding=encoding,
                      pad_left=True, prompt_only=True)
        batch, parts, encoding = prompt.inputs, prompt.parts[0], prompt.encoding
        spans = prompt.spans[0] if spoken else None
        kwargs = generation_kwargs(generation, self.tokenizer)
        if streamer is not None:
            kwargs["streamer"] = streamer
        processors = [earlier_replies_ban(history, self.token_ids, generation.earlier_reply_ngram),
                      OpeningBan(self.tokenizer, avoid_in_opening, self.token_ids) if avoid_in_opening else None,
                      earlier_openings_ban(history, self.token_ids) if generation.fresh_openings else None,
                      self.condolence_ban if generation.condolence_check and not heard_loss(
                          [text for role, text in history if role == USER]) else None]
        if any(processors):
            kwargs["logits_processor"] = LogitsProcessorList([p for p in processors if p is not None])
        # The text path's prompt is token ids through and through: the last reply's cache serves
        # where the prompts agree. The speech path's middle is S', not ids: only what comes
        # before its first heard turn — the system prompt and the oldest turns, read as text
        # once they fall outside the speech window — is served from the cache (prefix_cache.py).
        prompt_ids = (parts.prefix_ids + parts.history_ids[:text_before_speech(
            parts, spans, self.config.cross.history_layout == "text_and_speech")] if spoken
                      else parts.prefix_ids + parts.history_ids + parts.suffix_ids)
        cache, reused, made_by = None, 0, (batch.inputs_embeds.device, batch.inputs_embeds.dtype)
        if generation.reuse_prefix:
            cache, reused = self.prefix_cache.take(prompt_ids, made_by, whole=spoken)
        if self.decoder is not None and not generation.do_sample:
            ids, kept = self._onnx_generate(batch, cache, reused, generation, kwargs, processors, streamer)
        else:
            # generate reads only the positions after the cache: PLoRA's mask must say which
            # of those are S' (a mask of another length would leave them to the base weights).
            mask = batch.speech_mask[:, reused:]
            with speech_positions(mask if mask.any() else None):
                output = self.llm.generate(
                    inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask, past_key_values=cache,
                    return_dict_in_generate=True, **kwargs
                )
            ids, kept = output.sequences[0].tolist(), output.past_key_values
        if generation.reuse_prefix and kept is not None:
            self.prefix_cache.keep(prompt_ids if spoken else prompt_ids + ids, kept, made_by)
        text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        return GenerationOutput(
            text, ids, prompt.contexts[0].weights.detach().cpu() if spoken else None,
            self.token_labels(parts.history_ids), spoken, int(batch.inputs_embeds.shape[1]), reused,
            prompt.affect[0] if spoken else None,
        ), encoding

    def _onnx_generate(self, batch: PathBatch, cache, reused: int, generation: GenerationConfig, kwargs: dict,
                       processors: list, streamer) -> tuple[list[int], object]:
        """What `generate` does greedily, in ONNX Runtime: the prompt's positions after the
        `reused` ones in `cache` are read with PLoRA at their speech positions, then the same
        processors — repetition penalty, n-gram ban, then the caller's — and the same stopping
        criteria pick each token."""
        from es4r.modeling.onnx_decode import greedy_processors

        if not bool(batch.attention_mask.all()):
            raise ValueError("ONNX Runtime decoding reads one unpadded prompt")
        generated, kept = self.decoder.greedy(
            batch.inputs_embeds[:, reused:], batch.speech_mask[:, reused:], cache,
            greedy_processors(generation, processors), StoppingCriteriaList(kwargs.get("stopping_criteria", [])),
            streamer, generation.max_new_tokens, self.tokenizer.eos_token_id)
        return generated[0].tolist(), kept

    def token_labels(self, ids: list[int]) -> list[str]:
        """Readable tick labels for token ids (the cross-modal heatmap's columns)."""
        words = self.tokenizer.convert_ids_to_tokens(ids)
        return [self.tokenizer.convert_tokens_to_string([w]).strip() or w for w in words]


def prompt_parts(tokenizer, history: list[tuple[str, str]], system_prompt: str, hint: str | None = None,
                 encode: Callable[[str], list[int]] | None = None) -> PromptParts:
    """Chat template with the system prompt and one user message holding the history ((role,
    text) per turn); split around a placeholder so either text or speech can fill it. Each turn
    is tokenised on its own, so its token span is exact. `hint` (the training teacher's note on
    how the user sounds) closes the user message, after the history, where a small LLM heeds it
    most. `encode` tokenises one piece of text (a model passes its `TokenIds`, which tokenises
    each line once). The reply tuning (es4r/training/reply_tuning.py) trains on this same layout."""
    before, after = _template_halves(tokenizer, system_prompt)
    if hint:
        after = f"\n\n({hint.strip()})" + after
    encode = encode or (lambda text: tokenizer(text, add_special_tokens=False).input_ids)
    history_ids, spans = [], []
    for line in history_lines(list(history)):
        ids = encode(line)
        spans.append((len(history_ids), len(history_ids) + len(ids)))
        history_ids += ids
    return PromptParts(encode(before), history_ids, encode(after), spans)


@functools.lru_cache(maxsize=16)
def _template_halves(tokenizer, system_prompt: str) -> tuple[str, str]:
    """The chat template rendered around the history's placeholder (once per tokenizer and prompt)."""
    messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": SPEECH_PLACEHOLDER}]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if isinstance(rendered, list):
        rendered = rendered[0]
    before, after = rendered.split(SPEECH_PLACEHOLDER)
    return before, after
