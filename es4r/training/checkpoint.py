"""ES4R checkpoints: only the trained parts (dual-level attention, adapter, cross-modal
attention, PLoRA) plus the config and a fingerprint of the backbones they belong to.

Loading is strict and refuses a checkpoint trained for other backbones."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch

from es4r.config import ES4RConfig
from es4r.modeling.plora import load_plora_state_dict, plora_state_dict

logger = logging.getLogger(__name__)

CONFIG_FILE = "es4r_config.json"
WEIGHTS_FILE = "es4r_parts.safetensors"


class CheckpointError(ValueError):
    """A folder that is not an ES4R checkpoint, or one trained for other backbones or module
    settings; the message says which and what to do."""


def backbone_fingerprint(model) -> dict:
    """What must match for trained parts to fit: architecture and sizes, not paths."""
    whisper = model.whisper.model.config
    llm = model.llm.get_base_model().config
    return {
        "whisper_type": whisper.model_type, "whisper_width": whisper.d_model,
        "whisper_layers": whisper.encoder_layers, "n_mels": whisper.num_mel_bins,
        "llm_type": llm.model_type, "llm_width": llm.hidden_size,
        "llm_layers": llm.num_hidden_layers, "llm_vocab": llm.vocab_size,
    }


def es4r_state_dict(model) -> dict[str, torch.Tensor]:
    state = {}
    for prefix, module in model.trainable_modules().items():
        state.update({f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()})
    state.update({f"plora.{k}": v.contiguous() for k, v in plora_state_dict(model.llm).items()})
    return state


def portable(meta):
    """The checkpoint's metadata with every absolute path cut to its last part (a model folder's
    own name): a checkpoint that travels — shipped in assets/, shared — names no machine's
    folders. Loading never reads these paths (the fingerprint decides what fits)."""
    if isinstance(meta, dict):
        return {k: portable(v) for k, v in meta.items()}
    if isinstance(meta, list):
        return [portable(v) for v in meta]
    if isinstance(meta, str) and Path(meta).is_absolute():
        return Path(meta).name
    return meta


def save_es4r_parts(model, folder: str | Path, extra: dict | None = None) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(es4r_state_dict(model), str(folder / WEIGHTS_FILE))
    meta = {"config": model.config.to_dict(), "backbones": backbone_fingerprint(model),
            "whisper_source": model.whisper.source, **(extra or {})}
    (folder / CONFIG_FILE).write_text(json.dumps(portable(meta), indent=2, sort_keys=True))
    return folder


def ship(folder: str | Path, destination: str | Path, extra: dict | None = None) -> Path:
    """Copy a checkpoint (its weights and portable metadata, plus `extra`) to `destination`."""
    import shutil

    folder, destination = Path(folder), Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / WEIGHTS_FILE, destination / WEIGHTS_FILE)
    meta = json.loads((folder / CONFIG_FILE).read_text())
    (destination / CONFIG_FILE).write_text(json.dumps(portable({**meta, **(extra or {})}), indent=2, sort_keys=True))
    return destination


# The config sections that shape the trained parts' weights and how they are used.
ARCHITECTURE_SECTIONS = ("dual", "adapter", "cross", "plora")


def read_checkpoint_config(folder: str | Path) -> ES4RConfig:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} is not an ES4R checkpoint: expected {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        return ES4RConfig.from_dict(json.loads(path.read_text())["config"])
    except (ValueError, KeyError, TypeError) as error:  # bad JSON, or a config this version cannot rebuild
        raise CheckpointError(f"the ES4R checkpoint {folder} has an unreadable {CONFIG_FILE} ({error}); "
                              "train or ship it again with this version") from error


def restore_architecture(config: ES4RConfig, folder: str | Path) -> ES4RConfig:
    """`config` with the ES4R module sections of the checkpoint's own config, so a model built
    from it is the one the parts were trained in (ablation `enabled` switches stay the caller's)."""
    saved = read_checkpoint_config(folder)
    changes = {}
    for section in ARCHITECTURE_SECTIONS:
        mine, theirs = getattr(config, section), getattr(saved, section)
        if hasattr(mine, "enabled"):
            theirs = dataclasses.replace(theirs, enabled=mine.enabled)
        if mine != theirs:
            logger.info("ES4R checkpoint %s: %s settings restored from its config", folder, section)
        changes[section] = theirs
    return config.replace(**changes)


# settings that change what the LLM reads but no weight: a later training stage may change them
LAYOUT_SETTINGS = ("history_layout",)


def architecture_mismatch(model_config: ES4RConfig, saved: ES4RConfig, ignore: tuple[str, ...] = ()) -> list[str]:
    """The module settings where a model and a checkpoint's config disagree (ignoring `enabled`
    and the keys in `ignore`)."""
    found = []
    for section in ARCHITECTURE_SECTIONS:
        mine, theirs = dataclasses.asdict(getattr(model_config, section)), dataclasses.asdict(getattr(saved, section))
        for key in sorted(set(mine) | set(theirs)):
            if key != "enabled" and key not in ignore and mine.get(key) != theirs.get(key):
                found.append(f"{section}.{key}: checkpoint {theirs.get(key)!r} vs model {mine.get(key)!r}")
    return found


def load_es4r_parts(model, folder: str | Path, strict: bool = True) -> None:
    """Load trained parts. `strict=False` (a training stage's `init_from`) lets the model keep
    its initialisation for parts the checkpoint predates (e.g. the reply cue); anything the
    checkpoint has that the model lacks is still an error, and so is any other module setting
    than the prompt layout (`LAYOUT_SETTINGS`), which a later stage may change."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / CONFIG_FILE).exists() or not (folder / WEIGHTS_FILE).exists():
        raise CheckpointError(f"{folder} is not an ES4R checkpoint: expected {CONFIG_FILE} and {WEIGHTS_FILE}")
    meta = json.loads((folder / CONFIG_FILE).read_text())
    expected, found = backbone_fingerprint(model), meta.get("backbones", {})
    mismatched = {k: (found.get(k), v) for k, v in expected.items() if found.get(k) != v}
    if mismatched:
        details = ", ".join(f"{k}: checkpoint {a} vs loaded {b}" for k, (a, b) in mismatched.items())
        raise CheckpointError(f"the ES4R checkpoint {folder} was trained for other backbones ({details}); "
                              "load the backbones it names or train a checkpoint for these")
    mismatch = architecture_mismatch(model.config, ES4RConfig.from_dict(meta["config"]),
                                     ignore=() if strict else LAYOUT_SETTINGS)
    if mismatch:
        raise CheckpointError(f"the ES4R checkpoint {folder} was trained with other module settings "
                              f"({'; '.join(mismatch)}); build the model with `restore_architecture` "
                              "(the pipeline does) or retrain")
    state = load_file(str(folder / WEIGHTS_FILE))
    for prefix, module in model.trainable_modules().items():
        part = {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}
        result = module.load_state_dict(part, strict=strict)
        if result.unexpected_keys:
            raise CheckpointError(f"the ES4R checkpoint {folder} has {prefix} weights this model lacks: "
                                  f"{result.unexpected_keys}")
        if result.missing_keys:
            logger.info("ES4R checkpoint %s has no %s weights for %s: kept at initialisation", folder, prefix,
                        result.missing_keys)
    load_plora_state_dict(model.llm, {k[len("plora."):]: v for k, v in state.items() if k.startswith("plora.")})
    logger.info("loaded trained ES4R parts from %s", folder)
