"""Start-up failures a person can fix — a weights package or system program missing, the hub
out of reach, a setting that names nothing — told as one line with the fix and a non-zero
exit, the same in app.py and every CLI command. Any other exception is a bug and keeps its
traceback, so nothing here catches Exception."""

from __future__ import annotations

import sys

EXIT_STATUS = 2  # argparse's status for a command that cannot run as it was set up

# Each error ES4R raises on purpose when it cannot start, by (module, class); its message
# already says what is wrong and how to fix it.
STARTUP_ERRORS = (
    ("es4r.config", "SettingError"),  # a preset, an ES4R_* variable or a flag naming nothing usable
    ("es4r.embedded.locate", "MissingWeightsPackage"),  # a weights package is not pip-installed
    ("es4r.modeling.backbones", "BackboneError"),  # hub out of reach or gated, no such folder, unfit adapter
    ("es4r.modeling.reply_adapter", "ReplyAdapterError"),  # $ES4R_REPLY_ADAPTER is not this LLM's LoRA
    ("es4r.training.checkpoint", "CheckpointError"),  # $ES4R_CHECKPOINT is not a checkpoint for these backbones
    ("es4r.data.manifest", "ManifestError"),  # a manifest named on the command line is missing or malformed
    ("es4r.voice.errors", "TTSError"),  # espeak-ng or the Piper voice missing
    ("es4r.voice.kokoro_english", "KokoroMissing"),  # the set builders' second voice is not installed
    ("es4r.voice.styletts2_checkpoint", "StyleTTS2CheckpointError"),  # --styletts2 names no checkpoint
    ("es4r.voice.styletts2_networks", "StyleTTS2ConfigError"),  # its config.yml does not fit
)


def startup_errors() -> tuple[type[Exception], ...]:
    """The types above whose modules are loaded. An error of a type means its module is loaded,
    so `except startup_errors()` imports nothing and cannot fail on its own."""
    return tuple(getattr(sys.modules[module], name) for module, name in STARTUP_ERRORS if module in sys.modules)


def startup_line(error: BaseException) -> str:
    """`error: <message>` as one line (a hub's message can span several)."""
    return "error: " + (" ".join(str(error).split()) or type(error).__name__)
