"""`es4r study ...`: create a blinded A/B listening study, serve it, export its results.

The main CLI mounts these with ``add_study_subparsers(subparsers)`` and then calls
``args.func(args)``; meanwhile ``python -m es4r.study.cli create|serve|export ...`` works alone.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import socket
import sys

from es4r.study.design import DEFAULT_CRITERIA, criteria_by_name
from es4r.study.stimuli import TARGET_LUFS
from es4r.study.store import StudyError

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7861
DEFAULT_CONCURRENCY = 16  # annotators served at once
USAGE_ERROR = 2  # exit status for bad input, as argparse uses


def _reporting(handler):
    """Turn the study's user-facing errors into a message and exit status 2 (no traceback)."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ValueError as error:  # StudyError, StudyInputError and bad option values
            print(f"error: {error}", file=sys.stderr)
            return USAGE_ERROR

    return run


@_reporting
def handle_create(args: argparse.Namespace) -> int:
    from es4r.study.build import build_study

    store = build_study(args.pairs, args.out, tuple(args.systems), criteria_by_name(args.criteria),
                        args.samples, args.annotators_per_item, args.items_per_annotator,
                        args.seed, args.target_lufs, args.title)
    count = len(store.rows("SELECT item_id FROM items"))
    print(f"Created {args.out}: {count} items, {len(store.spec.criteria)} criteria, "
          f"{args.annotators_per_item} annotators per item.")
    print(f"Stimuli (loudness {store.spec.target_lufs} LUFS, every clip; none peak-limited): {store.stimuli_dir}")
    print(f"Organiser code (unlocks results in the app): {store.spec.organiser_code}")
    return 0


def require_free_port(host: str, port: int, how: str = "choose another with --port") -> None:
    """Say which port is taken and how to choose another, before Gradio's own traceback (or its
    quiet move to the next free port, which strands pages that know the old one) would.

    The probe binds as the server will (SO_REUSEADDR, like uvicorn and Gradio): a listening
    socket still refuses it, but the TIME-WAIT connections a killed server leaves behind for
    about a minute do not, so a crashed study restarts on its port at once."""
    with socket.socket() as probe:
        if os.name != "nt":  # on Windows the option would let two servers share the port
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise StudyError(f"port {port} on {host} is busy ({error.strerror}); {how}") from None


@_reporting
def handle_serve(args: argparse.Namespace) -> int:
    from es4r.study.serving import launch_study
    from es4r.study.ui import build_study_app

    app = build_study_app(args.db)
    port = args.port or int(os.environ.get("GRADIO_SERVER_PORT", DEFAULT_PORT))
    require_free_port(args.host or "127.0.0.1", port)
    launch_study(app, args.db, args.host, port, DEFAULT_CONCURRENCY)
    return 0


@_reporting
def handle_export(args: argparse.Namespace) -> int:
    from es4r.study.export import export_study

    paths = export_study(args.db, args.out, args.exclude_flagged)
    for name, path in vars(paths).items():
        print(f"{name}: {path}")
    return 0


def _add_commands(commands: argparse._SubParsersAction) -> None:
    create = commands.add_parser("create", help="set up a study from evaluate's per-sample outputs")
    create.add_argument("--pairs", required=True, help="folder holding samples.jsonl "
                        "(format: es4r/study/stimuli.py)")
    create.add_argument("--systems", nargs=2, required=True, metavar=("FIRST", "SECOND"),
                        help="the two systems; results read as FIRST over SECOND")
    create.add_argument("--criteria", nargs="+", default=[c.name for c in DEFAULT_CRITERIA],
                        help="criteria to ask (default: the paper's eight)")
    create.add_argument("--samples", type=int, required=True, help="regular items to draw")
    create.add_argument("--annotators-per-item", type=int, default=3)
    create.add_argument("--items-per-annotator", type=int, default=None,
                        help="regular items each annotator sees (default: all)")
    create.add_argument("--seed", type=int, default=0, help="study seed (logged in exports)")
    create.add_argument("--title", default="Listening study",
                        help="the study's name as participants see it (never a system's name)")
    create.add_argument("--target-lufs", type=float, default=TARGET_LUFS,
                        help="loudness of every clip (lowered to what all reach under a -1 dBFS peak; a study that would fall more than 8 LU under it is refused, naming the clip)")
    create.add_argument("--out", required=True, help="study database to create (e.g. study.db)")
    create.set_defaults(func=handle_create)

    serve = commands.add_parser("serve", help="serve the annotator and organiser app")
    serve.add_argument("--db", required=True)
    serve.add_argument("--host", default=DEFAULT_HOST)
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.set_defaults(func=handle_serve)

    export = commands.add_parser("export", help="tallies, agreement, chart and raw answers")
    export.add_argument("--db", required=True)
    export.add_argument("--out", required=True, help="folder for the exported files")
    export.add_argument("--exclude-flagged", action="store_true",
                        help="leave annotators who failed gold items out of the tallies")
    export.set_defaults(func=handle_export)


def add_study_subparsers(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Mount `study create|serve|export` on the main CLI's subparsers."""
    study = subparsers.add_parser("study", help="blinded A/B listening study (human evaluation)")
    _add_commands(study.add_subparsers(dest="study_command", required=True))
    return study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m es4r.study.cli", description=__doc__)
    _add_commands(parser.add_subparsers(dest="study_command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
