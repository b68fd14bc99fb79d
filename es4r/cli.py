"""Command line: `python -m es4r respond|train|evaluate|bench|gates|corpus|teacher-targets|study ...`
(`python -m es4r --help` lists them all). Each command module adds its parsers and imports
its heavy parts inside its handlers, so `--help` stays fast."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from es4r.config import PRESETS
from es4r.startup_errors import EXIT_STATUS, startup_errors, startup_line

logger = logging.getLogger("es4r")


def _add_respond(subparsers) -> None:
    parser = subparsers.add_parser(
        "respond", help="answer a spoken conversation with an empathetic spoken reply",
        description="Each WAV is one user turn, oldest first; ES4R answers the last one. "
                    "Prints the result as JSON (no arrays) and writes the reply audio.",
    )
    parser.add_argument("turns", nargs="+", type=Path, help="audio files of the user's turns, oldest first")
    parser.add_argument("--preset", choices=PRESETS, default="embedded",
                        help="embedded: offline packaged weights (default); paper: hub backbones (GPU); tiny: random test models")
    parser.add_argument("--out", type=Path, default=Path("reply.wav"), help="where to write the reply audio (WAV)")
    parser.add_argument("--transcripts", nargs="*", default=None,
                        help="known transcripts, one per turn, instead of running ASR")
    parser.add_argument("--styletts2", default=None,
                        help="StyleTTS2 checkpoint folder or hub id (config.yml + .pth); default: $ES4R_STYLETTS2 or the best offline voice")
    parser.add_argument("--checkpoint", default=None, help="trained ES4R checkpoint folder (enables the speech path), or 'none' for the text path; default: $ES4R_CHECKPOINT, else assets/es4r_embedded when present")
    parser.set_defaults(handler=_respond)


def _unwritable_audio_path(path: Path) -> str | None:
    """Why the reply audio cannot be written to `path` (checked before the models load, so a
    typo costs no minutes), or None. Its folder is created when missing."""
    import soundfile as sf

    if path.is_dir():
        return "is a directory; give a file name such as reply.wav"
    extension = path.suffix.lstrip(".").upper()
    if extension not in sf.available_formats():
        return "needs an audio file extension: .wav (or .flac, .ogg)"
    return None


def _respond(args: argparse.Namespace) -> int:
    import soundfile as sf

    from es4r.audio import AudioError, load_audio
    from es4r.conversation import Conversation
    from es4r.pipeline import ES4RPipeline, PipelineError

    if args.transcripts is not None and len(args.transcripts) != len(args.turns):
        print(f"error: {len(args.turns)} turns but {len(args.transcripts)} transcripts", file=sys.stderr)
        return 2
    if problem := _unwritable_audio_path(args.out):
        print(f"error: --out {args.out} {problem}", file=sys.stderr)
        return 2
    waveforms = []
    for index, path in enumerate(args.turns, start=1):  # every input checked before any model loads
        where = f"turn {index} ({path})"
        if path.is_dir() or not path.exists():
            what = "is a directory, not an audio file" if path.is_dir() else "does not exist"
            print(f"error: {where} {what}", file=sys.stderr)
            return 2
        try:
            waveforms.append(load_audio(path))
        except AudioError as error:
            print(f"error: {where}: {error}", file=sys.stderr)
            return 2
    overrides = {}
    if args.styletts2:
        overrides.update(tts=args.styletts2, voice="styletts2")
    if args.checkpoint:
        overrides["es4r_checkpoint"] = args.checkpoint  # "none" = the text path (pipeline.resolve_config)
    pipeline = ES4RPipeline.from_preset(args.preset, **overrides)  # start-up errors: main()
    conversation = Conversation()
    try:
        for index, waveform in enumerate(waveforms):
            transcript = args.transcripts[index] if args.transcripts else None
            conversation = pipeline.add_user_turn(conversation, waveform, transcript)
        result = pipeline.respond(conversation)
    except (AudioError, PipelineError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(args.out), result.reply_audio, result.sample_rate)
    except (OSError, RuntimeError) as error:  # soundfile's LibsndfileError is a RuntimeError
        print(f"error: could not write the reply audio to {args.out}: {error}", file=sys.stderr)
        return 1
    print(json.dumps({**result.summary(), "reply_audio": str(args.out)}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m es4r", description="ES4R: empathetic spoken replies to spoken conversations")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_respond(subparsers)
    for module_name, function in (("es4r.training.cli", "add_train_subparser"),
                                  ("es4r.evaluation.cli", "add_evaluation_subparsers"),
                                  ("es4r.data.cli", "add_data_subparsers"),
                                  ("es4r.study.cli", "add_study_subparsers")):
        try:
            module = __import__(module_name, fromlist=[function])
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        getattr(module, function)(subparsers)
    return parser


def _quiet() -> None:
    """`respond` without --verbose prints the JSON result and one-line errors only: library
    warnings, progress bars and info logs are off (the JSON says which components are
    trained, fallbacks included)."""
    import warnings

    warnings.simplefilter("ignore")
    logging.getLogger().setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """Run one command. A start-up failure a person can fix (es4r/startup_errors.py) ends in one
    line on stderr and exit status 2; any other exception keeps its traceback."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    handler = getattr(args, "handler", None) or args.func  # study subcommands use `func`
    if handler is _respond and not args.verbose:
        _quiet()
    try:
        return int(handler(args) or 0)
    except startup_errors() as error:
        print(startup_line(error), file=sys.stderr)
        return EXIT_STATUS
