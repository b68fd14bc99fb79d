"""`python -m es4r corpus|teacher-targets|valence-set|situations-set|examples`: the data steps
of the shipped recipe (the spoken training corpus, then its teacher targets: docs/TRAINING.md)
and the committed clip sets (es4r/data/spoken_sets.py). Bad input is refused with one line
and exit status 2 before anything heavy loads; the work lives in es4r/data/."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from es4r.config import PRESETS

logger = logging.getLogger(__name__)
USAGE_ERROR = 2  # exit status for bad input, as argparse uses
VOICE_POOLS = ("all", "espeak")  # es4r.data.corpus.VOICE_POOLS, named here so --help imports no voices


def _refuse(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return USAGE_ERROR


def add_data_subparsers(subparsers) -> None:
    corpus = subparsers.add_parser(
        "corpus", help="build the spoken training corpus from chitchat-dataset (assets/DATA_CARD.md)",
        description="Each conversation gives three rows (falling, rising, flat): the same words and voices, "
                    "only the user's loudness and pace trajectory differ (es4r/data/corpus.py). Prints the card.")
    corpus.add_argument("--out", type=Path, required=True, help="output folder (manifests, audio/, card.json)")
    corpus.add_argument("--train", type=int, default=240, help="training conversations (three rows each)")
    corpus.add_argument("--heldout", type=int, default=40, help="held-out conversations (three rows each), never in train")
    corpus.add_argument("--seed", type=int, default=42, help="split, windows, voices and plans all follow it")
    corpus.add_argument("--voices", choices=VOICE_POOLS, default="all",
                        help="all: Piper en_US-joe + six espeak-ng voices; espeak: espeak-ng only (fast)")
    corpus.add_argument("--workers", type=int, default=1, help="synthesis processes (the output does not depend on it)")
    corpus.add_argument("--source", type=Path, help="chitchat-dataset's JSON file (default: the installed package's)")
    corpus.add_argument("--verbose", dest="progress", action="store_true", help="log each batch's progress")
    corpus.set_defaults(handler=_corpus)

    targets = subparsers.add_parser(
        "teacher-targets", help="replace a corpus manifest's replies with the affect-aware teacher's",
        description="Every row's response becomes the reply of ES4R's text path given how the person sounds "
                    "(es4r/data/teacher.py); the human line stays in human_response. Resumable: rows already in "
                    "OUT are kept. --max-sentences 1 cuts every target after its first sentence, where the affect "
                    "shows most (assets/TRAINING_CPU.md).")
    targets.add_argument("manifest", type=Path, help="input manifest (rows with variant or affect_hint)")
    targets.add_argument("out", type=Path, help="output manifest (appended to; resumable)")
    targets.add_argument("--preset", default="embedded", choices=PRESETS)
    targets.add_argument("--batch-size", type=int, default=8)
    targets.add_argument("--max-sentences", type=int,
                         help="cut each target after this many sentences (default: the app's, "
                              "GenerationConfig.max_sentences)")
    targets.add_argument("--limit", type=int, help="only the first N rows")
    targets.add_argument("--recheck", action="store_true",
                         help="only re-apply the reply checks to the rows already in OUT (no model is loaded)")
    targets.add_argument("--redo-echoes", action="store_true",
                         help="regenerate the rows of OUT whose reply recites the system prompt, with it banned")
    targets.set_defaults(handler=_teacher_targets)

    valence = subparsers.add_parser(
        "valence-set", help="speak the valence test set's clips (assets/valence_set) with the offline voices",
        description="Each turn by its conversation's voice at neutral pace and prosody, 16 kHz 16-bit FLAC beside "
                    "set.json. The clips are committed; rebuild only after editing set.json (and bump its version).")
    valence.add_argument("--folder", type=Path, default=None, help="the set's folder (default: assets/valence_set)")
    valence.add_argument("--force", action="store_true", help="rewrite clips that exist")
    valence.set_defaults(handler=_valence_set)

    situations = subparsers.add_parser(
        "situations-set", help="speak the situations set's clips (assets/situations) with two natural voices",
        description="Piper en_US-joe-medium and Kokoro jf_gongitsune alternate within each kind; each item's voice "
                    "and clips are written into set.json. Needs requirements-situations.txt (Kokoro). The clips are "
                    "committed; rebuild only after editing set.json (and bump its version).")
    situations.add_argument("--folder", type=Path, default=None, help="the set's folder (default: assets/situations)")
    situations.add_argument("--force", action="store_true", help="rewrite clips that exist")
    situations.set_defaults(handler=_situations_set)

    examples = subparsers.add_parser(
        "examples", help="speak the example turns under the app's microphone (assets/examples)",
        description="rough_week_1..3 in Piper joe, each turn quieter and slower; good_news_1..2 in Kokoro "
                    "jf_gongitsune, a quiet turn then a loud one. Needs requirements-situations.txt (Kokoro).")
    examples.add_argument("--out", type=Path, default=None, help="folder for the WAVs (default: assets/examples)")
    examples.set_defaults(handler=_examples)


def _corpus(args: argparse.Namespace) -> int:
    if min(args.train, args.heldout) < 0 or args.workers < 1:
        return _refuse("--train and --heldout must be >= 0 and --workers >= 1")
    if args.source is not None and not args.source.is_file():
        return _refuse(f"--source {args.source} is not a file; give chitchat-dataset's JSON file")
    from dataclasses import asdict

    from es4r.data.corpus import VOICE_POOLS as POOLS, build_corpus
    from es4r.data.corpus_source import CorpusError

    root, level = logging.getLogger(), logging.getLogger().level
    if not (args.progress or args.verbose):
        root.setLevel(logging.WARNING)  # the card is the result; progress on request
    try:
        card = build_corpus(args.out, args.train, args.heldout, args.seed, POOLS[args.voices], args.workers, args.source)
    except CorpusError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        root.setLevel(level)
    print(json.dumps(asdict(card), indent=2))
    return 0


def _teacher_targets(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        return _refuse(f"--batch-size must be at least 1, not {args.batch_size}")
    if args.max_sentences is not None and args.max_sentences < 1:
        return _refuse(f"--max-sentences must be at least 1, not {args.max_sentences}")
    if args.limit is not None and args.limit < 1:
        return _refuse(f"--limit must be at least 1, not {args.limit}")
    if (args.recheck or args.redo_echoes) and not args.out.is_file():
        flag = "--recheck" if args.recheck else "--redo-echoes"
        return _refuse(f"{args.out} does not exist; {flag} works on targets already written")
    from es4r.data import teacher_targets

    if args.recheck:
        rejected, rows = teacher_targets.recheck(args.out)
        print(json.dumps({"targets": str(args.out), "rows": rows, "rejected": rejected}))
        return 0
    if not args.manifest.is_file():
        return _refuse(f"manifest {args.manifest} does not exist")

    def load_teacher():
        from es4r.presets import load_model, resolve_config

        return load_model(resolve_config(args.preset, es4r_checkpoint="none"))  # the teacher is the text path

    options = dict(batch_size=args.batch_size, max_sentences=args.max_sentences, limit=args.limit)
    if args.redo_echoes:
        try:
            redone, still = teacher_targets.redo_echoes(args.manifest, args.out, load_teacher, **options)
        except ValueError as error:
            return _refuse(str(error))
        print(json.dumps({"targets": str(args.out), "regenerated": redone, "still_unusable": still}))
        return 0
    written = teacher_targets.write_targets(args.manifest, args.out, load_teacher, **options)
    print(json.dumps({"targets": str(args.out), "written": written}))
    return 0


def _spoken(speak, *where) -> int:
    """Run one of es4r.data.spoken_sets' speakers; print what it wrote."""
    from es4r.data.spoken_sets import SetFolderError

    try:
        written = speak(*where)
    except SetFolderError as error:
        return _refuse(str(error))
    print(json.dumps({"written": len(written), "clips": [str(path) for path in written]}))
    return 0


def _valence_set(args: argparse.Namespace) -> int:
    from es4r.data.spoken_sets import VALENCE_SET, speak_valence_set

    return _spoken(speak_valence_set, args.folder or VALENCE_SET, args.force)


def _situations_set(args: argparse.Namespace) -> int:
    from es4r.data.spoken_sets import SITUATIONS, speak_situations

    return _spoken(speak_situations, args.folder or SITUATIONS, args.force)


def _examples(args: argparse.Namespace) -> int:
    from es4r.data.spoken_sets import EXAMPLES, speak_examples

    return _spoken(speak_examples, args.out or EXAMPLES)
