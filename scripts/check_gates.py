"""Check whether a trained ES4R checkpoint may become the embedded default (es4r/evaluation/gates.py).

    python scripts/check_gates.py --corpus-checks corpus/heldout_teacher.jsonl          # before training
    python scripts/check_gates.py corpus/heldout_teacher.jsonl runs/es4r-embedded/final --out runs/gates
    python scripts/check_gates.py corpus/heldout_teacher.jsonl runs/es4r-embedded-affect/final --ship assets/es4r_embedded
    python scripts/check_gates.py corpus/heldout.jsonl assets/es4r_embedded --references assets/heldout_references.jsonl
    python scripts/check_gates.py corpus/heldout_teacher.jsonl --export-references assets/heldout_references.jsonl

`--references` judges against the frozen teacher references in the repository instead of the
manifest's own replies: regenerated elsewhere, the greedy references change wording
(es4r/evaluation/references.py).

Exit status 0 when every gate passes, 1 when one fails (the report says which, by how much)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from es4r.config import PRESETS  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", type=Path, help="held-out manifest with teacher replies (all three variants)")
    parser.add_argument("checkpoint", nargs="?", help="trained ES4R checkpoint folder")
    parser.add_argument("--out", type=Path, default=Path("runs/gates"), help="report folder")
    parser.add_argument("--preset", default="embedded", choices=PRESETS)
    parser.add_argument("--corpus-checks", action="store_true", help="only the before-training corpus checks")
    parser.add_argument("--references", type=Path, help="frozen teacher references to judge against "
                                                        "(e.g. assets/heldout_references.jsonl)")
    parser.add_argument("--export-references", type=Path, metavar="OUT",
                        help="only write the manifest's teacher replies to OUT as frozen references")
    parser.add_argument("--ship", type=Path, help="when every gate passes, copy the checkpoint here "
                                                  "(assets/es4r_embedded makes it the embedded default)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.export_references:
        from es4r.evaluation.references import export_references

        count = export_references(args.manifest, args.export_references)
        logging.info("%d references written to %s", count, args.export_references)
        return 0
    if not args.corpus_checks and not args.checkpoint:
        parser.error("name a checkpoint, or pass --corpus-checks")
    from es4r.training.checkpoint import CONFIG_FILE

    if args.checkpoint and not (Path(args.checkpoint) / CONFIG_FILE).is_file():
        parser.error(f"{args.checkpoint} is not an ES4R checkpoint folder (no {CONFIG_FILE})")
    os.environ["ES4R_CHECKPOINT"] = "none"  # start from the untrained parts; the checkpoint is loaded later

    from es4r.data.manifest import ManifestError, load_manifest
    from es4r.evaluation.gates import corpus_checks, evaluate_gates, report_markdown
    from es4r.evaluation.references import apply_references
    from es4r.presets import load_model, resolve_config

    try:
        samples = load_manifest(args.manifest)
        if args.references:
            samples = apply_references(samples, args.references)
    except ManifestError as error:
        raise SystemExit(f"error: {error}") from None
    from es4r.training.checkpoint import restore_architecture

    config = resolve_config(args.preset)
    if args.checkpoint:  # the untrained parts are built as the checkpoint's (e.g. its cross.history_layout)
        config = restore_architecture(config, args.checkpoint)
    model = load_model(config)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.corpus_checks:
        checks = corpus_checks(model, samples)
        (args.out / "corpus_checks.json").write_text(json.dumps(checks, indent=2))
        print(json.dumps(checks, indent=2))
        return 0
    report = evaluate_gates(model, args.checkpoint, samples)
    (args.out / "gates.json").write_text(json.dumps(asdict(report), indent=2, default=str))
    (args.out / "gates.md").write_text(report_markdown(report, args.checkpoint))
    print((args.out / "gates.md").read_text())
    if args.ship and report.passed:
        from es4r.training.checkpoint import ship

        gates = {name: {k: g[k] for k in ("value", "threshold")} for name, g in report.gates.items()}
        record = {"ship_gates": gates, **({"ship_references": str(args.references)} if args.references else {})}
        logging.info("all gates passed: shipped to %s", ship(args.checkpoint, args.ship, record))
    elif args.ship:
        logging.warning("not shipped: a gate failed (see %s)", args.out / "gates.md")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
