"""Build the spoken ES4R training corpus from chitchat-dataset (see es4r/data/corpus.py and
assets/DATA_CARD.md). Each conversation gives three rows (falling, rising, flat): the same
words and voices, only the user's loudness and pace trajectory differ.

    python scripts/build_spoken_corpus.py --out corpus --train 240 --heldout 40 --workers 2
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from es4r.data.corpus import DEFAULT_VOICES, ESPEAK_VOICES, build_corpus  # noqa: E402
from es4r.data.corpus_source import CorpusError  # noqa: E402

VOICE_POOLS = {"all": DEFAULT_VOICES, "espeak": ESPEAK_VOICES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output folder (manifests, audio/, card.json)")
    parser.add_argument("--train", type=int, default=240, help="training conversations (three rows each)")
    parser.add_argument("--heldout", type=int, default=40, help="held-out conversations (three rows each), never in train")
    parser.add_argument("--seed", type=int, default=42, help="split, windows, voices and plans all follow it")
    parser.add_argument("--voices", choices=sorted(VOICE_POOLS), default="all",
                        help="all: Piper en_US-joe + six espeak-ng voices; espeak: espeak-ng only (fast)")
    parser.add_argument("--workers", type=int, default=1, help="synthesis processes (the output does not depend on it)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if min(args.train, args.heldout) < 0 or args.workers < 1:
        parser.error("--train and --heldout must be >= 0 and --workers >= 1")
    try:
        card = build_corpus(args.out, args.train, args.heldout, args.seed, VOICE_POOLS[args.voices], args.workers)
    except CorpusError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(asdict(card), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
