"""Play the valence test set (assets/valence_set) to ES4R and check the replies fit
(es4r/evaluation/valence.py): contradicting openings, repeats within a conversation, and the
most common four-word opening.

    python -m experiments.valence_check --out runs/valence                      # the app's default
    python -m experiments.valence_check --checkpoint assets/es4r_embedded --paths text speech

Writes valence.json and valence.md to --out and prints the summary lines. The figures of
docs/QUALITY.md ("Openings that fit the news") came from here; for regular checks
`python -m es4r situations` plays the valence set as one of its kinds, with the reply checker."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from es4r.config import PRESETS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="embedded", choices=PRESETS)
    parser.add_argument("--checkpoint", help="ES4R checkpoint folder (default: the preset's; 'none' for none)")
    parser.add_argument("--paths", nargs="+", default=None, choices=["text", "speech"],
                        help="which paths answer (default: the one the app would use)")
    parser.add_argument("--limit", type=int, help="only the first N conversations")
    parser.add_argument("--out", type=Path, default=Path("runs/valence"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from es4r.evaluation.valence import load_valence_set, play_set, report_markdown
    from es4r.pipeline import ES4RPipeline
    from es4r.systems import system_variant

    overrides = {} if args.checkpoint is None else {"es4r_checkpoint": args.checkpoint}
    pipeline = ES4RPipeline.from_preset(args.preset, **overrides)
    paths = args.paths or [pipeline.path.value]
    if "speech" in paths and not pipeline.speech_path:
        raise SystemExit("the speech path needs a trained ES4R checkpoint (--checkpoint DIR)")
    conversations = load_valence_set()[: args.limit]
    reports = []
    for path in paths:
        reports.append(play_set(system_variant(pipeline, "es4r" if path == "speech" else "es4r_text"), conversations))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "valence.json").write_text(json.dumps(
        {"summaries": [r.summary() for r in reports],
         "replies": {r.path: [{"turn": x.turn.id, "valence": x.turn.valence, "heard": x.transcript, "reply": x.reply,
                               "stance": x.stance, "contradicts": x.contradicts, "repeat_of": x.repeat_of,
                               "repeat_rouge": round(x.repeat_rouge, 3)} for x in r.replies] for r in reports}},
        indent=1))
    (args.out / "valence.md").write_text(report_markdown(reports))
    for report in reports:
        print(json.dumps(report.summary()))  # the command's result
    return 0


if __name__ == "__main__":
    sys.exit(main())
