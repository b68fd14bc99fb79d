"""Loading the pretrained backbones — Whisper and the LLM — through one code path for hub
ids and local folders, and building tiny random ones (saved in the same formats) for tests."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from es4r.build_lock import BUILD_LOCK

logger = logging.getLogger(__name__)

# A chat template in the ChatML layout (Qwen's, SmolLM2's), used by the tiny tokenizer.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """auto = bf16 on a GPU that supports it, fp32 on CPU (bf16 matmuls are slow there)."""
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    choices = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
               "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in choices:
        raise ValueError(f"unknown dtype {dtype!r}; choose auto or one of {sorted(choices)}")
    if device.type == "cpu" and choices[dtype] is torch.float16:
        warnings.warn("FP16 is not supported on CPU; using FP32 instead")
        return torch.float32
    return choices[dtype]


class BackboneError(RuntimeError):
    """A pretrained backbone could not be loaded; the message names it and the ways out."""


def _load(what: str, path_or_id: str, loader, *args, **kwargs):
    """`loader.from_pretrained` with one clear message instead of a hub traceback."""
    try:
        with BUILD_LOCK:
            return loader.from_pretrained(path_or_id, *args, **kwargs)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BackboneError(
            f"could not load the {what} {path_or_id!r} ({reason[:200]}). Ways out: connect to the network "
            "(and log in with a Hugging Face token for a gated model), pass a local folder that holds it, "
            "or use the offline embedded preset (--preset embedded)") from error


def _check_source(path_or_id: str, what: str) -> None:
    if not path_or_id:
        raise ValueError(f"no {what} given: pass a hub id (e.g. openai/whisper-large-v3) or a local folder")
    path = Path(path_or_id)
    if (path_or_id.startswith((".", "/", "~")) or path.exists()) and not path.expanduser().is_dir():
        raise BackboneError(f"the {what} folder {path_or_id} does not exist. Ways out: pass a folder that "
                            "holds the model, a hub id (with network), or use the offline embedded preset "
                            "(--preset embedded)")


@dataclass
class WhisperBackbone:
    model: torch.nn.Module  # WhisperForConditionalGeneration (encoder used by ES4R, decoder for ASR)
    processor: object  # WhisperProcessor
    source: str
    runtime: object | None = None  # its encoder and ASR decode steps in ONNX Runtime (es4r/modeling/whisper_onnx.py)

    @property
    def n_mels(self) -> int:
        return int(self.model.config.num_mel_bins)

    @property
    def width(self) -> int:
        return int(self.model.config.d_model)

    @property
    def max_frames(self) -> int:
        """Mel frames the encoder takes: max_source_positions x conv strides (3000 for 30 s)."""
        encoder = self.model.get_encoder()
        return int(self.model.config.max_source_positions * encoder.conv1.stride[0] * encoder.conv2.stride[0])


@dataclass
class LLMBackbone:
    model: torch.nn.Module  # AutoModelForCausalLM
    tokenizer: object
    source: str

    @property
    def width(self) -> int:
        return int(self.model.get_input_embeddings().embedding_dim)


def load_whisper(path_or_id: str, device: str = "auto", dtype: str = "auto") -> WhisperBackbone:
    """Whisper model + processor from a hub id or a local folder (same call for both)."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    _check_source(path_or_id, "Whisper")
    target = resolve_device(device)
    model = _load("Whisper model", path_or_id, WhisperForConditionalGeneration, dtype=resolve_dtype(dtype, target))
    model.to(target).eval().requires_grad_(False)
    processor = _load("Whisper processor", path_or_id, WhisperProcessor)
    logger.info("loaded Whisper from %s (%d mel bins, width %d)", path_or_id, model.config.num_mel_bins, model.config.d_model)
    return WhisperBackbone(model, processor, path_or_id)


def load_llm(path_or_id: str, device: str = "auto", dtype: str = "auto", reply_adapter: str | None = None) -> LLMBackbone:
    """Causal LM + tokenizer (with chat template) from a hub id or a local folder.
    On several GPUs, device="auto" shards the model with a device map. `reply_adapter`: a LoRA
    folder of the reply tuning (es4r/training/reply_tuning.py), kept beside the weights
    (es4r/modeling/reply_adapter.py), so both paths and every decode runtime read the tuned LLM."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _check_source(path_or_id, "LLM")
    target = resolve_device(device)
    kwargs: dict = {"dtype": resolve_dtype(dtype, target)}
    if device == "auto" and target.type == "cuda" and torch.cuda.device_count() > 1:
        kwargs["device_map"] = "auto"
    model = _load("LLM", path_or_id, AutoModelForCausalLM, **kwargs)
    if "device_map" not in kwargs:
        model.to(target)
    if reply_adapter:
        from es4r.modeling.reply_adapter import ReplyAdapterError, apply_reply_adapter

        try:
            apply_reply_adapter(model, reply_adapter)
        except ReplyAdapterError as error:
            raise BackboneError(str(error)) from None
    model.eval().requires_grad_(False)
    tokenizer = _load("LLM tokenizer", path_or_id, AutoTokenizer)
    if tokenizer.chat_template is None:
        raise BackboneError(f"the tokenizer of {path_or_id} has no chat template; ES4R needs an instruct/chat "
                            "LLM (e.g. Qwen/Qwen3-8B, or the embedded preset's SmolLM2-135M-Instruct)")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    logger.info("loaded LLM from %s (width %d)", path_or_id, model.get_input_embeddings().embedding_dim)
    return LLMBackbone(model, tokenizer, path_or_id)


# ----------------------------------------------------------------------------- tiny models

_TINY_CORPUS = (
    "i feel sad today . my dog died and i miss him . that sounds really hard , i am sorry . "
    "i got the job ! congratulations , you must be so happy . i am worried about my exam . "
    "it is okay to feel nervous , you prepared well . thank you for listening to me ."
)


def _tiny_bpe(vocab_size: int, specials: list[str]):
    """A byte-level BPE trained in-process on a few sentences: real tokenizer code, no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    # Printable ASCII only (byte-level symbols for 33..126, space "Ġ", newline "Ċ"): random
    # weights then decode to readable fragments instead of broken UTF-8.
    ascii_alphabet = [chr(c) for c in range(33, 127)] + ["\u0120", "\u010a"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=ascii_alphabet,
        limit_alphabet=len(ascii_alphabet), show_progress=False,
    )
    tokenizer.train_from_iterator([_TINY_CORPUS] * 4, trainer=trainer)
    return tokenizer


def make_tiny_llm(folder: str | Path, seed: int = 0) -> Path:
    """A tiny random Qwen3 causal LM + ChatML tokenizer saved like a hub checkpoint."""
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    folder = Path(folder)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_tiny_bpe(400, specials), eos_token="<|im_end|>", pad_token="<|endoftext|>",
        bos_token=None, unk_token=None,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    with BUILD_LOCK:
        model = Qwen3ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "ES4R_RANDOM_WEIGHTS").write_text("tiny random model for tests; outputs are meaningless\n")
    return folder


WHISPER_SPECIALS = [
    "<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
    "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>",
]


def make_tiny_whisper(folder: str | Path, seed: int = 0, n_mels: int = 80) -> Path:
    """A tiny random English-only Whisper (+ processor) saved like a hub checkpoint."""
    from transformers import (WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperProcessor, WhisperTokenizerFast)

    from es4r.audio import CHUNK_LENGTH, HOP_LENGTH, N_FFT, N_FRAMES, SAMPLE_RATE

    folder = Path(folder)
    bpe = _tiny_bpe(300, WHISPER_SPECIALS)
    tokenizer = WhisperTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                     unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    ids = {t: bpe.token_to_id(t) for t in WHISPER_SPECIALS}
    torch.manual_seed(seed)
    config = WhisperConfig(
        vocab_size=bpe.get_vocab_size(), num_mel_bins=n_mels, d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
        max_source_positions=N_FRAMES // 2, max_target_positions=64,
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"],
        begin_suppress_tokens=None, suppress_tokens=None,
    )
    with BUILD_LOCK:
        model = WhisperForConditionalGeneration(config)
    generation = model.generation_config
    generation.decoder_start_token_id = ids["<|startoftranscript|>"]
    generation.eos_token_id = ids["<|endoftext|>"]
    generation.pad_token_id = ids["<|endoftext|>"]
    generation.no_timestamps_token_id = ids["<|notimestamps|>"]
    generation.is_multilingual = False
    generation.forced_decoder_ids = None
    generation.max_length = 32
    model.save_pretrained(folder)
    extractor = WhisperFeatureExtractor(feature_size=n_mels, sampling_rate=SAMPLE_RATE, hop_length=HOP_LENGTH,
                                        chunk_length=CHUNK_LENGTH, n_fft=N_FFT)
    WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    (folder / "ES4R_RANDOM_WEIGHTS").write_text("tiny random model for tests; outputs are meaningless\n")
    return folder


def is_random(path_or_id: str) -> bool:
    """True for folders written by make_tiny_* (their outputs must never be shown as meaningful)."""
    return (Path(path_or_id) / "ES4R_RANDOM_WEIGHTS").exists()
