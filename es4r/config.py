"""Every setting of ES4R in one place: frozen dataclasses, one per component, composed
into `ES4RConfig`, saved with every checkpoint and printable in the UI."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

# Component status words used throughout results and the UI.
TRAINED = "trained"  # real pretrained / trained weights
FALLBACK = "fallback"  # a substitute for the paper's component (said in words)
RANDOM = "random"  # random weights: output is not meaningful
UNTRAINED = "untrained"  # ES4R-specific modules at initialisation (identity paths)


@dataclass(frozen=True)
class AudioConfig:
    sample_rate: int = 16_000  # Whisper's input rate (es4r.audio.SAMPLE_RATE reads it); every input is resampled to it
    min_seconds: float = 0.3  # shorter turns are refused
    max_seconds: float = 30.0  # longer turns are refused (one Whisper window)
    silence_rms: float = 1e-3  # below this RMS a turn is "silent"
    clip_fraction: float = 0.05  # fraction of samples at full scale that counts as clipped
    max_upload_bytes: int = 50 * 1024 * 1024
    min_speech_seconds: float = 0.15  # less detected speech (es4r/vad.py) and the turn is refused
    voice_activity_check: bool = True


@dataclass(frozen=True)
class TurnTakingConfig:
    """Hands-free turns (es4r/turn_detector.py): the microphone streams and a turn ends when the
    person stops. Silero VAD gives each 32 ms window a speech probability; a pause inside a
    sentence (a breath, ~0.2-0.4 s) must not end the turn, nor may a click or a cough start one."""

    end_pause_s: float = 0.6  # this much non-speech after speech ends the turn
    min_speech_s: float = 0.25  # a burst with less speech than this starts no turn (a click, a cough)
    threshold: float = 0.5  # Silero's speech probability at or above which a window is speech
    hysteresis: float = 0.15  # below threshold - hysteresis a window is silence; between, it continues what was
    pad_s: float = 0.1  # audio kept before the first and after the last speech window
    # this much quiet in a turn announces the turn as it would end (SpeechPaused), so its transcript
    # and log-mel are made during the rest of the pause; at least pad_s, below end_pause_s
    early_work_s: float = 0.2
    max_turn_s: float = 30.0  # a turn this long ends here (one Whisper window)


@dataclass(frozen=True)
class DualAttentionConfig:
    """Stage 1 (paper Sec. 3.1): downsampling and intra-/inter-turn self-attention."""

    downsample: int = 2  # keep every k-th mel frame (official code subsamples frames)
    intra_heads: int = 8
    inter_heads: int = 8
    dropout: float = 0.1
    enabled: bool = True  # ablation switch: "without dual-level attention"


@dataclass(frozen=True)
class WindowConfig:
    """How much of Whisper's 30 s window its encoder reads on the speech path
    (es4r/modeling/whisper_window.py). None: the whole window, as Whisper was trained and as
    a checkpoint trained before this setting heard it; a number: the frames present (after the
    dual-level downsampling) plus that many frames of the padding after them — faster, with
    outputs that move a little (measured before a preset uses it). The ASR always reads the
    whole window: over less, tiny.en changed 2-5 of 9 bundled transcripts, or looped."""

    speech_tail_frames: int | None = None


@dataclass(frozen=True)
class AdapterConfig:
    """Stage 1 (paper Sec. 3.1), the modality adapter: 3 x Conv1d(kernel 5, stride 2) -> x8 shorter, hidden 512."""

    hidden: int = 512
    kernel: int = 5
    stride: int = 2
    layers: int = 3


HISTORY_LAYOUTS = ("speech", "text_and_speech")


@dataclass(frozen=True)
class CrossModalConfig:
    """Stage 2 (paper Sec. 3.2, es4r/modeling/cross_modal.py): turn-block mask + monotonic position prior."""

    heads: int = 8
    dropout: float = 0.1  # on the gated speech term (never on the attention weights: it would blur the prior)
    prior_sigma: float = 0.5  # width of the in-turn position prior at initialisation, in tokens
    enabled: bool = True  # ablation switch: "without cross-modal attention"
    prosody: bool = True  # gated per-turn loudness and rate beside S' (es4r/modeling/prosody.py)
    prosody_level_scale: float = 0.15  # log-mel level change that counts as one unit (~6 dB)
    prosody_rate_scale: float = 0.12  # log speaking-rate change that counts as one unit (~12 %)
    prosody_cue: bool = True  # the last heard turn's loudness/rate also at the reply cue (zero at start)
    # the speech path hears the trend of the user's loudness/rate and tells the LLM in words
    # (es4r/modeling/affect_reader.py); gives no note until the reader is fitted in training
    affect_note: bool = True
    # what the LLM reads for a heard turn: "speech" = S' replaces the turn's words (the paper,
    # Sec. 3.2, and the authors' training); "text_and_speech" = the turn's words, then its S'
    # (the authors' inference code puts both in the prompt; S' reads those same words as keys)
    history_layout: str = "speech"

    def __post_init__(self) -> None:
        if self.history_layout not in HISTORY_LAYOUTS:
            raise ValueError(f"cross.history_layout must be one of {HISTORY_LAYOUTS}, not {self.history_layout!r}")


@dataclass(frozen=True)
class PLoRAConfig:
    r: int = 16
    alpha: int = 16
    dropout: float = 0.1
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class ReplyTuningConfig:
    """Teaching the LLM what a good reply is: LoRA on its own reply behaviour, trained on the
    empathy corpus (es4r/training/reply_tuning.py) and kept beside its weights (es4r/modeling/reply_adapter.py)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    # LoRA on the top layers only: backward then stops there (on 2 AVX2 cores a step of 8 examples
    # took 19 s on one thread with all 30 layers; wording is mostly decided near the output)
    first_layer: int = 12
    lr: float = 3e-4
    weight_decay: float = 0.0
    epochs: int = 2
    batch_size: int = 8
    warmup_steps: int = 10
    grad_clip: float = 1.0
    heldout_situations: int = 20  # situations of the corpus kept out of training for the validation loss
    # share of examples whose prompt closes with an affect note (es4r.modeling.affect_reader), as the
    # speech path's does: the reply stays the written one, so the LLM learns not to recite the note
    note_share: float = 0.0
    # train on the replies written for how the person sounds (assets/empathy_corpus/affect_*.jsonl):
    # each closes its prompt with its own affect note, and the note_share examples get only the
    # calm note, so the note decides between replies instead of being ignored
    affect_replies: bool = False
    init_from: str | None = None  # continue this adapter folder instead of starting a new LoRA
    seed: int = 42


DECODE_RUNTIMES = ("torch", "onnxruntime")
DECODE_WEIGHTS = ("blocks", "fp32")


@dataclass(frozen=True)
class GenerationConfig:
    system_prompt: str = (
        "You are a warm, empathetic listener. Reply to the user in one or two short "
        "sentences: acknowledge how they feel, then offer support or a gentle question."
    )
    max_new_tokens: int = 48
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.2
    no_repeat_ngram_size: int = 3
    # no run of this many tokens of an earlier reply in the conversation (es4r/modeling/repeats.py); 0 = off
    earlier_reply_ngram: int = 4
    max_sentences: int = 2  # reply is cut at a sentence end after this many
    # the first sentence does not apologise to good news nor celebrate bad news, read from the
    # last transcript (es4r/modeling/openings.py); unsure readings keep both out
    opening_check: bool = True
    valence_margin: float = 0.03  # |good - bad similarity to the nearest prototypes| a reading needs to be sure
    # words of mourning ("loss", "condolences", "grief") only when a death or loss was said
    # (es4r/modeling/condolences.py)
    condolence_check: bool = True
    # no reply opens with the first three words of an earlier reply (es4r/modeling/repeats.py)
    fresh_openings: bool = True
    max_context_tokens: int = 2048  # LLM context budget for history + reply
    # text path: start each reply from the key/value cache of the last one where the prompts
    # agree, so the LLM reads only the new turns (es4r/modeling/prefix_cache.py)
    reuse_prefix: bool = True
    # greedy decode steps on a CPU: "torch" (transformers' generate) or "onnxruntime" (the same
    # steps as one ONNX graph with its cache in place, ~1.6x faster in fp32, ~2.5x reading 4-bit
    # blocks; es4r/modeling/onnx_decode.py)
    decode_runtime: str = "torch"
    # what those ONNX Runtime steps read: "blocks" reads a linear layer whose weights lie exactly
    # on 4-bit blocks of 32 (the embedded LLM: dequantised Q4_1) as those blocks, ~1.5x faster
    # with the same weights (es4r/modeling/weight_blocks.py); "fp32" reads every weight in fp32
    decode_weights: str = "blocks"

    def __post_init__(self) -> None:
        if self.decode_runtime not in DECODE_RUNTIMES:  # a typo would otherwise quietly keep torch
            raise ValueError(f"unknown decode_runtime {self.decode_runtime!r}; choose one of {', '.join(DECODE_RUNTIMES)}")
        if self.decode_weights not in DECODE_WEIGHTS:
            raise ValueError(f"unknown decode_weights {self.decode_weights!r}; choose one of {', '.join(DECODE_WEIGHTS)}")


class Strategy(str, Enum):
    """The speaking strategy of stage 3 (paper Sec. 3.3). The value is what settings, JSON,
    exports and logs hold."""

    COMFORT = "comfort"
    ENCOURAGE = "encourage"
    NEUTRAL = "neutral"

    __str__ = str.__str__  # "comfort", as before it was an enum
    __format__ = str.__format__


@dataclass(frozen=True)
class StrategyParams:
    """Voice settings of one speaking strategy (paper Sec. 3.3).

    alpha/beta/diffusion_steps/embedding_scale are StyleTTS2's sampler settings
    (alpha: acoustic-style mix, which the paper reads as duration/pace, smaller = slower;
    beta: prosody expressiveness). `speed` and `gain_db` are engine-neutral equivalents
    that voices without a diffusion sampler (Piper, espeak-ng) map onto their own knobs.
    """

    name: str
    alpha: float
    beta: float
    speed: float  # speaking-rate multiplier, 1.0 = the voice's usual pace
    expressiveness: float  # 0..1, prosody variability for voices that take it
    gain_db: float  # loudness relative to neutral
    diffusion_steps: int = 5
    embedding_scale: float = 1.0


def default_strategy_table() -> dict[Strategy, StrategyParams]:
    """Comfort: slower and softer. Encourage: brighter, a little faster.
    Neutral: StyleTTS2's usual alpha=0.3, beta=0.7."""
    return {
        Strategy.COMFORT: StrategyParams("comfort", alpha=0.2, beta=0.5, speed=0.85, expressiveness=0.35, gain_db=-4.0),
        Strategy.NEUTRAL: StrategyParams("neutral", alpha=0.3, beta=0.7, speed=1.0, expressiveness=0.6, gain_db=0.0),
        Strategy.ENCOURAGE: StrategyParams("encourage", alpha=0.4, beta=0.9, speed=1.12, expressiveness=0.9,
                                           gain_db=2.0),
    }


@dataclass(frozen=True)
class StrategyConfig:
    """Stage 3 (paper Sec. 3.3): energy trend -> strategy."""

    tolerance: float = 0.05  # a relative change up to this (inclusive) counts as "no change"
    table: dict[Strategy, StrategyParams] = field(default_factory=default_strategy_table)
    fusion_eps: float = 1e-3  # epsilon of w_i ~ 1 / (E_i + eps)
    empathetic_tts: bool = True  # ablation switch: False = neutral params, no fusion


@dataclass(frozen=True)
class BackboneConfig:
    """Which pretrained parts to load: hub ids or local folders, through one code path."""

    whisper: str = "openai/whisper-large-v3"
    llm: str = "Qwen/Qwen3-8B"
    tts: str | None = "yl4579/StyleTTS2-LibriTTS"  # None = offline voice
    voice: str = "auto"  # auto | styletts2 | piper | espeak
    es4r_checkpoint: str | None = None  # trained ES4R parts; None = text path
    # LoRA of the LLM's reply behaviour (es4r/training/reply_tuning.py), applied beside its weights at
    # load time; None = the LLM as packaged
    reply_adapter: str | None = None
    dtype: str = "auto"  # auto = bf16 on GPU, fp32 on CPU
    device: str = "auto"


@dataclass(frozen=True)
class ES4RConfig:
    preset: str = "paper"
    audio: AudioConfig = field(default_factory=AudioConfig)
    turns: TurnTakingConfig = field(default_factory=TurnTakingConfig)
    dual: DualAttentionConfig = field(default_factory=DualAttentionConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    cross: CrossModalConfig = field(default_factory=CrossModalConfig)
    plora: PLoRAConfig = field(default_factory=PLoRAConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    backbones: BackboneConfig = field(default_factory=BackboneConfig)
    seed: int = 42

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ES4RConfig":
        """Rebuild from `to_dict` output (e.g. a checkpoint's saved config)."""
        kinds = {f.name: f.type for f in dataclasses.fields(cls)}
        sub = {
            "audio": AudioConfig, "turns": TurnTakingConfig, "dual": DualAttentionConfig, "window": WindowConfig, "adapter": AdapterConfig,
            "cross": CrossModalConfig, "plora": PLoRAConfig, "generation": GenerationConfig,
            "backbones": BackboneConfig,
        }
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            if name not in kinds:
                raise ValueError(f"unknown ES4R config field {name!r}; expected one of {sorted(kinds)}")
            if name in sub:
                if name == "cross" and "affect_note" not in value:  # a checkpoint from before the affect reader
                    value = {**value, "affect_note": False}
                if "target_modules" in value:
                    value = {**value, "target_modules": tuple(value["target_modules"])}
                kwargs[name] = sub[name](**value)
            elif name == "strategy":
                table = {Strategy(k): StrategyParams(**v) for k, v in value.get("table", {}).items()}
                kwargs[name] = StrategyConfig(**{**value, "table": table or default_strategy_table()})
            else:
                kwargs[name] = value
        return cls(**kwargs)

    def replace(self, **changes: Any) -> "ES4RConfig":
        return dataclasses.replace(self, **changes)


PRESETS = ("paper", "embedded", "tiny")


class SettingError(ValueError):
    """A setting — a preset name, an ES4R_* variable or the flag over it — that names nothing
    usable; the message names the setting, its value and the fix (es4r/startup_errors.py)."""


def preset_config(name: str) -> ES4RConfig:
    """The config of a named preset. Backbone paths of `embedded` and `tiny` are filled in
    by es4r.presets.resolve_config (es4r.embedded, es4r.modeling.backbones.make_tiny_*)."""
    if name == "paper":
        return ES4RConfig(preset="paper")
    if name == "embedded":
        return ES4RConfig(
            preset="embedded",
            # the speech path's encoder reads the turns plus 6 s of padding, not all 30 s
            # (docs/BENCHMARKS.md; scripts/check_same_replies.py speech-window and the gates)
            window=WindowConfig(speech_tail_frames=600),
            generation=GenerationConfig(decode_runtime="onnxruntime"),
            backbones=BackboneConfig(whisper="", llm="", tts=None, voice="auto"),
        )
    if name == "tiny":
        return ES4RConfig(
            preset="tiny",
            dual=DualAttentionConfig(intra_heads=2, inter_heads=2),
            adapter=AdapterConfig(hidden=32),
            cross=CrossModalConfig(heads=2),
            plora=PLoRAConfig(r=4, alpha=4),
            generation=GenerationConfig(max_new_tokens=8, max_context_tokens=512),
            backbones=BackboneConfig(whisper="", llm="", tts="", voice="styletts2"),
        )
    raise SettingError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")


@dataclass(frozen=True)
class TrainConfig:
    """Two-path training (paper Sec. 3.2). Defaults are the paper's where it gives them."""

    manifest: str = ""  # training JSONL
    val_manifest: str | None = None  # held-out JSONL: speech-path CE/KL logged at each snapshot, never trained on
    val_limit: int | None = None  # validate on the first rows only (a manifest's variants are adjacent)
    output_dir: str = "runs/es4r"
    preset: str = "paper"  # backbones to train on (paper | embedded | tiny)
    epochs: int = 2
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    kl_temperature: float = 2.0
    kl_t2_scale: bool = False  # multiply KL by T^2 (Hinton et al.); the authors' code does not
    warmup_steps: int = 0  # linear warmup of the learning rate
    lr_schedule: str = "cosine"  # cosine (to min_lr_ratio x lr) | constant, after warmup
    min_lr_ratio: float = 0.1
    plora_start_step: int = 0  # staged training: PLoRA frozen before this optimizer step
    cache_teacher: bool = True  # the frozen teacher's logits computed once per sample, reused
    affect_loss_weight: float = 0.0  # auxiliary per-turn energy/pace regression from S (training.AffectHead)
    gate_lr_scale: float = 1.0  # learning-rate multiplier (no weight decay) for the closed-at-start gates of the cross-modal block
    affect_head_lr_scale: float = 1.0  # learning-rate multiplier for the training-only AffectHead (trainer.parameter_groups)
    speech_anchor_weight: float = 0.0  # keeps the cosines between dialogues' mean speech vectors where the run began (training.SpeechAnchor)
    init_from: str | None = None  # start from this checkpoint's parts (a second stage); parts it lacks keep their init
    history_layout: str | None = None  # cross.history_layout of the model trained (None: the preset's, "speech")
    train_only: tuple[str, ...] = ()  # train only parameters whose names start with these (e.g. "cross.cue")
    two_path_weight: float = 1.0  # weight of CE + KL on the batch; 0 skips it (a stage of affect pairs only)
    affect_pair_weight: float = 0.0  # falling/rising pairs with swapped audio (es4r/training/affect_pairs.py)
    seed: int = 42
    max_steps: int | None = None  # stop early (smoke runs, time-boxed CPU runs)
    log_every: int = 1
    save_every: int = 100  # optimizer steps between resumable checkpoints (last/)
    keep_every: int | None = None  # optimizer steps between kept snapshots (step-000050/ ...) + validation
    num_workers: int = 0
    # bf16 autocast on a CPU too (the paper trains in bf16 on GPUs): worth it where the CPU has
    # bf16 matrix units (AMX, AVX512-BF16); off, a CPU trains in fp32 as every run so far did
    cpu_bf16: bool = False

    @classmethod
    def from_file(cls, path: str) -> "TrainConfig":
        """Read a YAML or JSON file; unknown keys are an error that lists the valid ones."""
        import yaml

        with open(path) as handle:
            data = yaml.safe_load(handle) or {}
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ValueError(f"{path}: unknown training settings {unknown}; valid: {sorted(valid)}")
        if "train_only" in data:
            data["train_only"] = tuple(data["train_only"] or ())
        return cls(**data)
