"""Presets become complete configs here, and configs become models: the one resolution the
app, every CLI command, training and the scripts share (so `--checkpoint none`, the shipped
checkpoint and the environment mean the same everywhere). `component_statuses` says what
each loaded part is, as the page and the logs show it."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from es4r.config import FALLBACK, RANDOM, TRAINED, UNTRAINED, ES4RConfig, SettingError, preset_config
from es4r.conversation import ComponentStatus
from es4r.embedded.setup import build_once, usable_cache_root
from es4r.modeling.backbones import is_random, load_llm, load_whisper, make_tiny_llm, make_tiny_whisper
from es4r.modeling.model import ES4RModel
from es4r.modeling.reply_adapter import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from es4r.training.checkpoint import CONFIG_FILE, WEIGHTS_FILE

logger = logging.getLogger(__name__)

TEXT_PATH_NOTE = "text path — no trained ES4R speech checkpoint loaded"
STYLETTS2_ENV = "ES4R_STYLETTS2"  # folder or hub id of a StyleTTS2 checkpoint
# A trained ES4R checkpoint folder, or "none" for the text path; overrides the preset's choice.
CHECKPOINT_ENV = "ES4R_CHECKPOINT"
# The reply-tuning LoRA merged into the LLM (es4r/training/reply_tuning.py), or "none" for the LLM as packaged.
REPLY_ADAPTER_ENV = "ES4R_REPLY_ADAPTER"

TINY_BACKBONES_VERSION = 2  # bump when make_tiny_* change, so stale caches are not reused


def _tiny_paths() -> dict[str, str]:
    """Tiny random backbones, built once per cache dir (they are deterministic), each into a
    staging folder renamed under a lock, so processes starting together never read half of one."""
    from es4r.voice.styletts2 import make_tiny_styletts2_checkpoint

    root = usable_cache_root() / f"tiny-v{TINY_BACKBONES_VERSION}"
    builders = {"whisper": ("whisper", make_tiny_whisper), "llm": ("llm", make_tiny_llm),
                "tts": ("styletts2", make_tiny_styletts2_checkpoint)}
    for key, (folder, build) in builders.items():
        build_once(root / folder, {"kind": "tiny", "name": key, "version": TINY_BACKBONES_VERSION}, build)
    return {key: str(root / folder) for key, (folder, _) in builders.items()}


_ROOT = Path(__file__).resolve().parent.parent
# A checkpoint here is the embedded preset's default: the speech path switches on by itself.
SHIPPED_CHECKPOINT = _ROOT / "assets" / "es4r_embedded"
# A reply adapter here is merged into the embedded preset's LLM by default.
SHIPPED_REPLY_ADAPTER = _ROOT / "assets" / "reply_lora"


def resolve_checkpoint(value: str) -> str | None:
    """`none` = the text path even when a checkpoint ships; anything else is a folder."""
    return None if value.strip().lower() == "none" else value


@dataclass(frozen=True)
class FolderSetting:
    """A setting that names a folder: where it goes, where it comes from, what it must hold."""

    field: str  # in BackboneConfig
    variable: str  # the ES4R_* variable
    flag: str  # how an override is named on the command line
    needs: tuple[str, ...]  # files the folder must hold
    what: str  # for the message
    none_means: str  # what the value "none" gives


FOLDER_SETTINGS = (
    FolderSetting("es4r_checkpoint", CHECKPOINT_ENV, "--checkpoint", (CONFIG_FILE, WEIGHTS_FILE),
                  "a trained ES4R checkpoint folder", "the text path"),
    FolderSetting("reply_adapter", REPLY_ADAPTER_ENV, "reply adapter", (ADAPTER_CONFIG, ADAPTER_WEIGHTS),
                  "a reply adapter folder", "the LLM as packaged"),
)


def check_settings(name: str, **backbone_overrides) -> None:
    """Refuse a setting that names nothing — $ES4R_CHECKPOINT, $ES4R_REPLY_ADAPTER, the flags over
    them, a path in $ES4R_STYLETTS2 or --styletts2 — with one SettingError naming it and the fix,
    before any weights are prepared (a typo then costs no minutes)."""
    for setting in FOLDER_SETTINGS:
        given = setting.field in backbone_overrides
        value = backbone_overrides[setting.field] if given else os.environ.get(setting.variable)
        if not value or resolve_checkpoint(value) is None:
            continue
        folder = Path(value)
        if not folder.is_dir():
            problem = "no such folder"
        elif missing := [file for file in setting.needs if not (folder / file).is_file()]:
            problem = f"the folder holds no {' and no '.join(missing)}"
        else:
            continue
        named = f"{setting.flag} {value}" if given else f"{setting.variable}={value}"
        raise SettingError(f"{named}: {problem}; give {setting.what} (with {' and '.join(setting.needs)}), "
                           f"or 'none' for {setting.none_means}")
    given = backbone_overrides.get("tts")
    styletts2 = given or (os.environ.get(STYLETTS2_ENV) if name != "tiny" else None)
    if styletts2 and styletts2.startswith((".", "/", "~")) and not Path(styletts2).expanduser().exists():
        named = f"--styletts2 {styletts2}" if given else f"{STYLETTS2_ENV}={styletts2}"
        raise SettingError(f"{named}: no such folder; give a folder holding config.yml and its .pth, or a hub id "
                           f"such as yl4579/StyleTTS2-LibriTTS (without it the offline voice speaks)")


def resolve_config(name: str = "embedded", **backbone_overrides) -> ES4RConfig:
    """The one place a preset becomes a complete config, for the app, every CLI command and
    training: the preset's defaults, its backbone paths (embedded weights unpacked, tiny ones
    built), the shipped checkpoint, then $ES4R_STYLETTS2 and $ES4R_CHECKPOINT, then explicit
    overrides (flags) last. An `es4r_checkpoint` of "none" means the text path; a checkpoint's
    stored architecture is restored, or a mismatch refused (es4r.training.checkpoint.restore_architecture)."""
    config = preset_config(name)
    check_settings(name, **backbone_overrides)
    backbones = config.backbones
    if name == "tiny":
        backbones = replace(backbones, **_tiny_paths())
    elif name == "embedded":
        from es4r.embedded.setup import prepare_embedded

        paths = prepare_embedded()
        shipped = SHIPPED_CHECKPOINT if (SHIPPED_CHECKPOINT / "es4r_config.json").exists() else None
        adapter = SHIPPED_REPLY_ADAPTER if (SHIPPED_REPLY_ADAPTER / "adapter_config.json").exists() else None
        backbones = replace(backbones, whisper=str(paths.whisper), llm=str(paths.llm),
                            es4r_checkpoint=str(shipped) if shipped else None,
                            reply_adapter=str(adapter) if adapter else None,
                            tts=os.environ.get(STYLETTS2_ENV) or None)
    if name == "paper" and os.environ.get(STYLETTS2_ENV):
        backbones = replace(backbones, tts=os.environ[STYLETTS2_ENV])
    if os.environ.get(CHECKPOINT_ENV):
        backbones = replace(backbones, es4r_checkpoint=os.environ[CHECKPOINT_ENV])
    if os.environ.get(REPLY_ADAPTER_ENV):
        backbones = replace(backbones, reply_adapter=os.environ[REPLY_ADAPTER_ENV])
    backbones = replace(backbones, **backbone_overrides)
    if backbones.reply_adapter:
        backbones = replace(backbones, reply_adapter=resolve_checkpoint(backbones.reply_adapter))
    if backbones.es4r_checkpoint:
        backbones = replace(backbones, es4r_checkpoint=resolve_checkpoint(backbones.es4r_checkpoint))
    config = replace(config, backbones=backbones)
    if backbones.es4r_checkpoint:
        from es4r.training.checkpoint import restore_architecture

        config = restore_architecture(config, backbones.es4r_checkpoint)
    return config


def untrained_model(preset: str) -> ES4RModel:
    """The preset's backbones with the ES4R parts at initialisation, for training. Neither the
    shipped checkpoint nor $ES4R_CHECKPOINT is loaded: a run starts from scratch, and a later
    stage says what it continues from (`init_from`)."""
    return load_model(resolve_config(preset, es4r_checkpoint="none"), for_replies=False)


def load_model(config: ES4RConfig, for_replies: bool = True) -> ES4RModel:
    """Whisper + LLM + the ES4R parts of a resolved config, in eval mode; the trained parts are
    loaded when the config names a checkpoint. Training builds its model here too, with
    `for_replies=False`: it writes no replies, so the decode runtime is left unbuilt."""
    torch.manual_seed(config.seed)
    b = config.backbones
    whisper = load_whisper(b.whisper, b.device, b.dtype)  # first: a missing backbone is named in this order
    model = ES4RModel(whisper, load_llm(b.llm, b.device, b.dtype, reply_adapter=b.reply_adapter), config).eval()
    if b.es4r_checkpoint:
        from es4r.training.checkpoint import load_es4r_parts

        load_es4r_parts(model, b.es4r_checkpoint)
    if for_replies and config.generation.decode_runtime == "onnxruntime":
        model.use_onnx_decoder()
    return model


def component_statuses(config: ES4RConfig, voice) -> dict[str, ComponentStatus]:
    """What each part of a pipeline loaded from `config` is (trained, untrained, random,
    fallback), logged — a warning for anything not trained — and shown on the page."""
    b = config.backbones
    components = {
        "asr": _status_of(b.whisper, f"Whisper ASR ({shown_source(b.whisper)})"),
        "speech_encoder": _status_of(b.whisper, f"Whisper encoder, frozen ({shown_source(b.whisper)})"),
        "llm": _status_of(b.llm, f"LLM ({shown_source(b.llm)})" + (
            f", reply-tuned with {shown_source(b.reply_adapter)} (a LoRA trained on the empathy corpus)"
            if b.reply_adapter else "")),
        "es4r_modules": ComponentStatus(TRAINED, f"trained ES4R checkpoint ({shown_source(b.es4r_checkpoint)})")
        if b.es4r_checkpoint
        else ComponentStatus(UNTRAINED, "dual-level attention, adapter, cross-modal attention and PLoRA at "
                             "initialisation; heatmaps illustrate the mechanism only; " + TEXT_PATH_NOTE),
        "voice": ComponentStatus(voice.status, voice.name),
    }
    logger.info("loaded from: whisper %s, llm %s, es4r checkpoint %s", b.whisper, b.llm, b.es4r_checkpoint)
    for key, value in components.items():
        log = logger.warning if value.status in (FALLBACK, RANDOM, UNTRAINED) else logger.info
        log("%s: %s — %s", key, value.status, value.description)
    return components


def shown_source(path_or_id: str) -> str:
    """How a model's source is named on the page: a hub id as it is, a local folder by its own
    name only (the server's paths stay in the server's log)."""
    path = Path(path_or_id)
    if path.is_absolute() or path.exists():
        return f"local folder {path.name}"
    return path_or_id


def public_settings(config: ES4RConfig) -> str:
    """The run's config as JSON for the page and the visitor's export: every setting and seed,
    local folders named by their own name only (`shown_source`), so no server path leaves."""
    import json

    settings = config.to_dict()
    settings["backbones"] = {key: shown_source(value) if isinstance(value, str) and value else value
                             for key, value in settings["backbones"].items()}
    return json.dumps(settings, indent=2, sort_keys=True)


def _status_of(path_or_id: str, description: str) -> ComponentStatus:
    if is_random(path_or_id):
        return ComponentStatus(RANDOM, description + " — random weights, output not meaningful")
    return ComponentStatus(TRAINED, description)
