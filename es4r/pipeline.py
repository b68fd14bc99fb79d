"""ES4RPipeline: one object that hears a spoken conversation and answers it in speech.

`add_user_turn` validates and transcribes audio; `respond` runs stages 1-3 on the whole
history and returns a typed TurnResult; `turn_events` does both and reports each step as it
happens (the app draws them); `converse` does both and returns the new conversation only when
the whole turn succeeded. Presets are resolved in es4r.presets."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from es4r.audio import (FRAMES_PER_SECOND, AudioError, TurnMels, Waveform, load_audio, prepare_waveform,
                        turn_energy)
from es4r.config import ES4RConfig
from es4r.conversation import (ASSISTANT, USER, WALL, AttentionMaps, ComponentStatus, ContextUsage, Conversation,
                               ReplyPath, Turn, TurnResult, turn_labels)
from es4r.modeling.affect_reader import AffectReading
from es4r.modeling.asr import transcribe
from es4r.modeling.model import ES4RModel, GenerationOutput
from es4r.presets import TEXT_PATH_NOTE, component_statuses, load_model, resolve_config
from es4r.reply_text import reply_streamer, trim_reply
from es4r.timing import timed
from es4r.turn_events import Answered, Heard, Progress, Spoken, TurnEvent, Writing, Written
from es4r.vad import speech_seconds
from es4r.voice.base import TTSError
from es4r.voice.plan import VoicePlan, plan_voice
from es4r.voice.sentence_speaker import SentenceSpeaker
from es4r.voice.strategy import COMFORT, ENCOURAGE, NEUTRAL, StrategyDecision

logger = logging.getLogger(__name__)

FALLBACK_REPLY = "I'm here with you. Could you tell me a little more?"
KEPT_MAPS = 4  # the attention maps of the last few turns a view asked for
ProgressFn = Callable[[float, str], None]


class PipelineError(RuntimeError):
    """A turn could not be answered; the message is for the user, the conversation is intact."""


class ES4RPipeline:
    def __init__(self, config: ES4RConfig, model: ES4RModel, voice, components: dict[str, ComponentStatus],
                 speech_path: bool, mels: TurnMels | None = None):
        self.config = config
        self.model = model
        self.voice = voice
        self.components = components
        self.speech_path = speech_path
        self.mels = mels or TurnMels(model.whisper.n_mels)  # each turn's log-mel, made once
        self._maps: OrderedDict[tuple[int, ...], tuple[tuple[Turn, ...], AttentionMaps]] = OrderedDict()
        self._maps_lock = threading.Lock()

    @property
    def path(self) -> ReplyPath:
        """Which path writes the replies: speech (a trained ES4R checkpoint) or text."""
        return ReplyPath.SPEECH if self.speech_path else ReplyPath.TEXT

    # ---------------------------------------------------------------- building
    @classmethod
    def from_preset(cls, name: str = "embedded", **backbone_overrides) -> "ES4RPipeline":
        """tiny (random, tests), embedded (offline packaged weights), paper (hub backbones)."""
        return cls.from_config(resolve_config(name, **backbone_overrides))

    @classmethod
    def from_config(cls, config: ES4RConfig) -> "ES4RPipeline":
        """The pipeline of a complete config (`resolve_config` has filled its paths and
        restored a checkpoint's architecture)."""
        from es4r.voice.voices import load_voice

        model = load_model(config)
        b = config.backbones
        voice = load_voice(b.voice, styletts2_path=b.tts or None)
        return cls(config, model, voice, component_statuses(config, voice), bool(b.es4r_checkpoint))

    def variant(self, config: ES4RConfig | None = None, speech_path: bool | None = None) -> "ES4RPipeline":
        """This pipeline's weights and voice under another config (an ablation: the model's
        `with_config` view) and/or on the other path; this pipeline is left as it is."""
        config = config or self.config
        model = self.model if config is self.config else self.model.with_config(config)
        return ES4RPipeline(config, model, self.voice, self.components,
                            self.speech_path if speech_path is None else speech_path,
                            self.mels if model.whisper is self.model.whisper else None)

    def warm_up(self, clip: str | Path) -> float:
        """Answer one spoken turn (`clip`) and forget it, so that the first turn a person sends
        runs as fast as the later ones: every stage's first run (ONNX Runtime's and torch's
        buffers and plans, the voice's first sentence) happens here. The LLM's cache of the
        system prompt is kept — every reply starts with it. Returns the seconds it took."""
        started = time.perf_counter()
        self.converse(Conversation(), clip)
        seconds = time.perf_counter() - started
        logger.info("warmed up in %.1f s: one turn answered and forgotten", seconds)
        return seconds

    # ---------------------------------------------------------------- turns
    def add_user_turn(self, conversation: Conversation, audio: str | Path | bytes | Waveform | tuple,
                      transcript: str | None = None) -> Conversation:
        """Validate + transcribe one recording; returns a new conversation. AudioError on bad input.
        audio: a path, file bytes, a Waveform, or (sample_rate, samples) as Gradio gives it."""
        if isinstance(audio, tuple):
            rate, samples = audio
            waveform = prepare_waveform(samples, rate, self.config.audio)
        elif isinstance(audio, Waveform):
            waveform = audio
        else:
            waveform = load_audio(audio, self.config.audio)
        if self.config.audio.voice_activity_check:
            heard = speech_seconds(waveform.samples, self.config.audio.sample_rate)
            if heard < self.config.audio.min_speech_seconds:
                logger.info("turn refused: %.2f s of speech detected", heard)
                raise AudioError("No speech was detected in this recording (only noise, hum or a tone?). "
                                 "Please speak into the microphone and send it again.")
        # The log-mel the speech path hears, made now: after the ASR, ONNX Runtime's threads
        # still spin for a while and torch's would wait on them.
        self.mels(waveform.samples, self.config.audio.sample_rate)
        text = transcript if transcript is not None else self.transcribe(waveform.samples)
        if not text.strip():
            raise AudioError("No speech was recognised in this recording. Please try again, a little closer to the microphone.")
        energy = turn_energy(waveform.samples, self.model.whisper.n_mels)
        return conversation.with_turn(Turn(USER, text.strip(), waveform.samples, self.config.audio.sample_rate,
                                           energy, waveform.notes, waveform.conversions))

    def transcribe_early(self, audio: str | Path) -> str:
        """A hands-free turn's transcript made in its pause, before the turn is sure to end
        (es4r/turn_detector.py, SpeechPaused): the recording read, its log-mel made and kept,
        and its transcript, exactly as `add_user_turn` would make them from the same file."""
        waveform = load_audio(audio, self.config.audio)
        self.mels(waveform.samples, self.config.audio.sample_rate)
        return self.transcribe(waveform.samples)

    def transcribe(self, samples: np.ndarray) -> str:
        """Whisper's greedy transcript of one recording (es4r/modeling/asr.py)."""
        return transcribe(self.model.whisper, samples, self.config.audio.sample_rate)

    def converse(self, conversation: Conversation, audio, transcript: str | None = None,
                 progress: ProgressFn | None = None) -> tuple[Conversation, TurnResult]:
        """Add a user turn and answer it. On any failure the given conversation is unchanged."""
        for event in self.turn_events(conversation, audio, transcript):
            match event:
                case Progress(fraction, message):
                    _report(progress, fraction, message)
                case Answered(answered, result):
                    return answered, result
        raise PipelineError("The turn ended without an answer.")  # turn_events always answers or raises

    def turn_events(self, conversation: Conversation, audio, transcript: str | None = None) -> Iterator[TurnEvent]:
        """One whole turn as it happens, for a page that shows it while it is made
        (es4r/turn_events.py): Progress, Heard (the transcribed user turn), Writing (the reply
        so far), Spoken (each sentence's audio as soon as it is spoken — the first while the
        LLM still writes the next), Written (the final reply text), Answered (the new
        conversation and its TurnResult). Stages 1-3 run in a worker thread so the caller's
        thread stays free to draw each event; an error there is raised here, and the given
        conversation is never changed."""
        started = time.perf_counter()
        yield Progress(0.05, "transcribing")
        extended = self.add_user_turn(conversation, audio, transcript)
        asr_seconds = time.perf_counter() - started
        yield Heard(extended)
        events: queue.Queue[TurnEvent | _Failed] = queue.Queue()

        def work() -> None:
            try:
                result = self.respond(extended, lambda f, m: events.put(Progress(f, m)),
                                      on_text=lambda text: events.put(Writing(text)),
                                      on_written=lambda text: events.put(Written(text)),
                                      on_audio=lambda rate, audio: events.put(Spoken(rate, audio)))
                events.put(Answered(extended, with_asr_time(result, asr_seconds)))
            except BaseException as error:  # handed to the caller's thread
                events.put(_Failed(error))

        threading.Thread(target=work, name="es4r-turn", daemon=True).start()
        moments: dict[str, float] = {}
        while True:
            event = events.get()
            match event:
                case _Failed(error):
                    raise error
                case Writing():
                    moments.setdefault("first_words", time.perf_counter() - started)
                case Written():
                    moments.setdefault("first_words", time.perf_counter() - started)
                    moments["reply_text"] = time.perf_counter() - started
                case Spoken():
                    moments.setdefault("first_audio", time.perf_counter() - started)
                case Answered(_, result):
                    result = replace(result, timings={**result.timings, **moments})
                    reply = Turn(ASSISTANT, result.reply_text, result.reply_audio, result.sample_rate)
                    yield Answered(extended.with_turn(reply), result)
                    return
            yield event

    def respond(self, conversation: Conversation, progress: ProgressFn | None = None,
                on_text: Callable[[str], None] | None = None, on_written: Callable[[str], None] | None = None,
                on_audio: Callable[[int, np.ndarray], None] | None = None) -> TurnResult:
        """Answer a conversation whose last turn is the user's (stages 1-3). `on_text`: the
        reply as it is written; `on_written`: the final text, before the rest is spoken;
        `on_audio`: (rate, samples) of each sentence as soon as it is spoken, while the LLM
        writes the next (the result's audio is the same file either way)."""
        plan = self.plan_voice(conversation)
        speaker = self.sentence_speaker(plan, on_audio) if on_audio is not None else None

        def written_so_far(text: str) -> None:
            if on_text is not None:
                on_text(text)
            if speaker is not None:
                speaker.offer(text)

        def written(text: str) -> None:  # the final text, as soon as it is settled
            if on_written is not None:
                on_written(text)
            if speaker is not None:
                speaker.offer_final(text)

        streaming = on_text is not None or speaker is not None
        draft = self.think(conversation, progress, on_text=written_so_far if streaming else None, plan=plan,
                           on_written=written)
        return self.speak(draft, progress, speaker=speaker)

    def plan_voice(self, conversation: Conversation) -> VoicePlan:
        """Stage 3's choices for the reply to `conversation` (es4r.voice.plan), made before
        the LLM writes so the reply can be spoken as it is written."""
        if not conversation.turns or conversation.turns[-1].role != USER:
            raise PipelineError("There is no new user turn to answer.")
        return plan_voice(conversation.user_turns, self.config.strategy, self.voice)

    def sentence_speaker(self, plan: VoicePlan, on_audio: Callable[[int, np.ndarray], None]) -> SentenceSpeaker:
        """A speaker for this plan's voice settings that speaks each sentence as it is written
        (a voice that fails to start fails the turn's `speak`, as one that fails to render)."""
        return SentenceSpeaker(lambda: self.voice.start(plan.style, plan.decision.params, seed=self.config.seed),
                               on_audio)

    def think(self, conversation: Conversation, progress: ProgressFn | None = None,
              on_text: Callable[[str], None] | None = None, plan: VoicePlan | None = None,
              on_written: Callable[[str], None] | None = None) -> Draft:
        """Stages 1-2 and the strategy: everything up to the reply text (shown before audio).
        `on_text`, when given, receives the reply as it grows, word by word (`growing_reply`:
        the sentence being written included; the last call is the final text), so a page can
        show it and a voice can speak it while the LLM is still writing. `on_written` receives
        the final reply text as soon as it is settled. The heatmaps are not made here: a view
        asks for them (`attention_maps`)."""
        plan = plan or self.plan_voice(conversation)
        started = time.perf_counter()
        timings: dict[str, float] = {"strategy_fusion": plan.seconds}
        notes: list[str] = [f"your recording: {note}" for note in conversation.turns[-1].notes]
        config = self.config

        history, dropped_text = self._fit_context(conversation)
        if dropped_text:
            notes.append(f"{dropped_text} oldest turn(s) were left out of the text history to fit the LLM context "
                         f"of {config.generation.max_context_tokens} tokens")
        with timed(timings, "features"):
            # Every turn with audio is heard: the user's recordings and the assistant's own
            # spoken replies (a turn of the paper is a speaker-listener exchange).
            features = [self._features(t) for t in history.turns]

        # The speech path reads the encoding; it is made without the attention weights, which
        # only the heatmaps show (`attention_maps`, when a view asks). The text path encodes nothing.
        encoding = None
        if self.speech_path:
            _report(progress, 0.2, "listening (dual-level attention, Whisper encoder)")
            with timed(timings, "es4r_encoder"), torch.no_grad():  # no autograd graph: ~0.1 s less per turn
                encoding = self.model.encode_speech([features], timings, need_weights=False)
        dropped = encoding.dropped_turns[0] if encoding is not None else self._outside_window(features)
        if dropped:
            notes.append(f"{dropped} oldest turn(s) fell outside the speech window (about "
                         f"{self.model.max_frames * config.dual.downsample // 100} s) and are read as text")
        silent = [i for i, f in enumerate(features) if f is None]
        if silent and self.speech_path:
            notes.append(f"{len(silent)} turn(s) have no audio and are read as text on the speech path")

        avoid: tuple[str, ...] = ()
        if config.generation.opening_check and (reader := self.valence_reader()) is not None:
            with timed(timings, "valence"):
                reading = reader.read(conversation.turns[-1].text)
            notes.append(reading.note())
            avoid = reading.avoided
        _report(progress, 0.4, "thinking (LLM)")
        with timed(timings, "llm"):
            generated = self._generate(history.history(), features if self.speech_path else None, encoding, on_text,
                                       avoid)
        timings["llm_tokens_per_s"] = len(generated.token_ids) / max(timings["llm"], 1e-9)
        if (heard := generated.affect) is not None:  # speech path: what the affect reader heard, in words
            notes.append(f"how you sound: {heard.reason}" + (f"; the LLM was told \"{heard.note}\"" if heard.note else ""))
            if config.strategy.empathetic_tts and (why := strategy_versus_affect(plan.decision, heard)):
                notes.append(why)
        reply_text = trim_reply(generated.text, config.generation.max_sentences)
        if not any(ch.isalpha() for ch in reply_text):
            notes.append(f"the LLM produced no speakable text ({reply_text[:40]!r}); a fixed acknowledgement "
                         "was used instead")
            reply_text = FALLBACK_REPLY
        if on_written is not None:
            on_written(reply_text)
        if not self.speech_path:
            notes.append(TEXT_PATH_NOTE)
        timings[WALL] = plan.seconds + time.perf_counter() - started  # the stages plus the work between them
        return Draft(conversation, reply_text, plan, timings, notes, dropped)

    def attention_maps(self, conversation: Conversation) -> AttentionMaps:
        """The heatmaps of the reply to `conversation` (which ends with the user turn it
        answered): the dual-level attention's weights over the heard turns (paper Sec. 3.1) and
        the cross-modal weights of each turn's speech over the history's words (Sec. 3.2). Made
        when a view asks, never on the way to a reply, from the same history, speech window and
        prompt the reply read, so the same weights. The last few asked for are kept (a view's
        head or turn selector redraws without recomputing)."""
        key = tuple(id(turn) for turn in conversation.turns)
        with self._maps_lock:
            if key in self._maps:
                self._maps.move_to_end(key)
                return self._maps[key][1]
        started = time.perf_counter()
        history, _ = self._fit_context(conversation)
        features = [self._features(t) for t in history.turns]
        with torch.no_grad():
            encoding = self.model.encode_speech([features], need_weights=True)
            shown = self.model([history.history()], [features], generation=self.config.generation,
                               encoding=encoding, prompt_only=True)
        parts, dual, dropped = shown.parts[0], encoding.dual, encoding.dropped_turns[0]
        cross = shown.contexts[0].weights.detach().cpu()
        labels = turn_labels(history.turns)
        heard_labels = [label for label, f in zip(labels, features) if f is not None][dropped:]
        maps = AttentionMaps(
            intra=[w.float().cpu().numpy() for w in dual.intra_weights[0]],
            inter=dual.inter_weights[0].float().cpu().numpy() if dual.inter_weights else None,
            turn_boundaries=[int(b) for b in np.cumsum([0] + dual.turn_lengths[0][:-1])],
            cross=cross.float().numpy() if cross.numel() else None,
            history_tokens=self.model.token_labels(parts.history_ids),
            meaningful=self.speech_path,
            cross_blocks=list(zip(parts.turn_spans, self.model.heard_spans(features, encoding))),
            window_labels=heard_labels[: len(dual.intra_weights[0])],
            cross_labels=labels[len(labels) - len(parts.turn_spans):],
        )
        logger.info("attention maps made in %.2f s", time.perf_counter() - started)
        with self._maps_lock:
            self._maps[key] = (conversation.turns, maps)  # the turns kept: their ids stay theirs
            while len(self._maps) > KEPT_MAPS:
                self._maps.popitem(last=False)
        return maps

    def _outside_window(self, features: list[torch.Tensor | None]) -> int:
        """How many of the oldest heard turns the speech window leaves out (`fit_window`)."""
        heard = [f for f in features if f is not None]
        return self.model.fit_window(heard)[1] if heard else 0

    def valence_reader(self):
        """The reader of good / bad news for reply openings (es4r.modeling.openings; loaded on
        the first turn that needs it, once per process; None when its packaged sentence
        encoder is missing, which is logged)."""
        from es4r.modeling.openings import ValenceReader

        return ValenceReader.packaged(self.config.generation.valence_margin)

    def _generate(self, history, features, encoding, on_text: Callable[[str], None] | None,
                  avoid: tuple[str, ...] = ()) -> GenerationOutput:
        """model.generate; with `on_text`, each finished piece of text is passed on as it comes."""
        generation = self.config.generation
        streamer = reply_streamer(self.model.tokenizer, generation.max_sentences, on_text) if on_text else None
        return self.model.generate(history, features, generation, encoding=encoding, streamer=streamer,
                                   avoid_in_opening=avoid)[0]

    def speak(self, draft: Draft, progress: ProgressFn | None = None,
              speaker: SentenceSpeaker | None = None) -> TurnResult:
        """Stage 3 synthesis with the draft's voice plan. With a `speaker` that already spoke
        the sentences settled while the LLM wrote, only the rest is spoken here ("tts" is then
        the time after the text was done). TTS failures become PipelineError."""
        started = time.perf_counter()
        plan = draft.plan
        timings, notes = dict(draft.timings), [*plan.notes, *draft.notes]
        _report(progress, 0.8, "speaking (TTS)")
        try:
            with timed(timings, "tts"):
                if speaker is not None:
                    synthesis = speaker.finish(draft.reply_text)
                else:
                    synthesis = self.voice.synthesize(draft.reply_text, plan.style, plan.decision.params,
                                                      seed=self.config.seed)
        except TTSError as error:
            raise unspoken(error) from error
        self.voice.prepare(self.config.seed)  # the conversation's next reply: its voice readied while this one plays
        notes.extend(synthesis.notes)
        rendered = speaker.render_seconds if speaker is not None else timings["tts"]
        timings["tts_rtf"] = rendered / max(synthesis.seconds, 1e-6)
        timings[WALL] = timings.get(WALL, 0.0) + time.perf_counter() - started
        _report(progress, 1.0, "done")
        decision = plan.decision
        return TurnResult(
            transcripts=[t.text for t in draft.conversation.user_turns], reply_text=draft.reply_text,
            reply_audio=synthesis.waveform.astype(np.float32), sample_rate=synthesis.sample_rate,
            energies=plan.energies, strategy=decision.name, strategy_reason=decision.reason,
            strategy_params={**decision.params.__dict__, "engine": synthesis.params},
            fusion_weights=[float(w) for w in plan.fusion_weights] if plan.fusion_weights is not None else [],
            timings=timings, components=self.components,
            path=self.path, voice=synthesis.engine, seed=synthesis.seed,
            dropped_turns=draft.dropped_turns, notes=tuple(notes),
        )

    def context_usage(self, conversation: Conversation) -> ContextUsage:
        """What the next turn will hear and read of `conversation`: its spoken turns (the
        user's and the assistant's replies) through the model's own `fit_window`, and its
        history tokens as the prompt holds them."""
        config = self.config
        heard = [t for t in conversation.turns if t.audio is not None and len(t.audio)]
        seconds = [len(t.audio) / (t.sample_rate or config.audio.sample_rate) for t in heard]
        kept, dropped = self.model.fit_window([self._features(t) for t in heard]) if heard else ([], 0)
        tokens = len(self.model.prompt_parts(conversation.history(), config.generation).history_ids) if heard else 0
        return ContextUsage(turn_seconds=seconds, turns_in_window=len(kept),
                            window_seconds=self.model.max_frames * config.dual.downsample / FRAMES_PER_SECOND,
                            history_tokens=tokens, max_tokens=config.generation.max_context_tokens,
                            reply_tokens=config.generation.max_new_tokens, dropped_turns=dropped)

    def _features(self, turn: Turn) -> torch.Tensor | None:
        """Log-mel of a turn's audio at Whisper's rate (assistant replies come at the voice's)."""
        if turn.audio is None or not len(turn.audio):
            return None
        return torch.from_numpy(self.mels(turn.audio, turn.sample_rate or self.config.audio.sample_rate))

    def _fit_context(self, conversation: Conversation) -> tuple[Conversation, int]:
        """The conversation without its oldest turns until prompt + reply fit the LLM context."""
        budget = self.config.generation.max_context_tokens - self.config.generation.max_new_tokens
        turns = list(conversation.turns)
        for dropped in range(len(turns)):
            kept = Conversation(tuple(turns[dropped:]))
            parts = self.model.prompt_parts(kept.history(), self.config.generation)
            if len(parts.prefix_ids) + len(parts.history_ids) + len(parts.suffix_ids) <= budget or dropped == len(turns) - 1:
                return kept, dropped
        return conversation, 0


# The strategy each affect reading goes with: the pairs `strategy_versus_affect` leaves unexplained.
STRATEGY_FOR_AFFECT = {"rising": ENCOURAGE, "falling": COMFORT, "flat": NEUTRAL}


def strategy_versus_affect(decision: StrategyDecision, reading: AffectReading) -> str | None:
    """Why the voice's strategy and the affect reading differ, in plain words, or None when they
    go together (rising with encourage, falling with comfort, flat with neutral) or there is no
    reading. They differ because they read different things: the strategy (paper Sec. 3.3) the
    energy of the last turn or two, the reading the loudness and pace over every heard turn.
    Every other pair is explained, not only the opposite ones (rising with comfort, falling
    with encourage): beside "calm and steady" an encouraging voice, or beside a rising reading
    a neutral voice, reads as the page contradicting itself too."""
    if reading.affect is None or STRATEGY_FOR_AFFECT[reading.affect] == decision.name:
        return None
    voice = {ENCOURAGE: "encourages", COMFORT: "comforts", NEUTRAL: "stays neutral"}[decision.name]
    sound = {"rising": "livelier", "falling": "more subdued", "flat": "calm and steady"}[reading.affect]
    span = ("the energy of your last 3 turns" if decision.name == COMFORT
            else "how the energy of your last turn compares with the one before")
    return (f"why the voice {voice} while you sound {sound}: the voice follows {span}; how you sound follows "
            f"your loudness and pace over all {reading.turns} heard turns, so the two can differ")


@dataclass(frozen=True)
class _Failed:
    """The worker thread of `turn_events` failed: raised in the caller's thread."""

    error: BaseException


@dataclass(frozen=True)
class Draft:
    """The reply before it is spoken: what `think` hands to `speak`."""

    conversation: Conversation
    reply_text: str
    plan: VoicePlan
    timings: dict[str, float]
    notes: list[str]
    dropped_turns: int


def with_asr_time(result: TurnResult, asr_seconds: float) -> TurnResult:
    """The result with the transcription time as a stage and in the turn's wall time."""
    timings = {"asr": asr_seconds, **result.timings}
    timings[WALL] = timings.get(WALL, 0.0) + asr_seconds
    return replace(result, timings=timings)


def unspoken(error: TTSError) -> PipelineError:
    """What the user reads when the voice failed."""
    return PipelineError(f"The reply could not be spoken ({error}). Please try the turn again.")


def _report(progress: ProgressFn | None, fraction: float, message: str) -> None:
    logger.debug("progress %.0f%%: %s", 100 * fraction, message)
    if progress is not None:
        progress(fraction, message)
