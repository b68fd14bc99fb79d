"""One run of the ship gates (es4r/evaluation/gates.py), as `python -m es4r gates` makes it:
the held-out rows (optionally judged against frozen references, es4r/evaluation/references.py),
the model built as the checkpoint's, the report written, and the checkpoint shipped only when
every gate passes. Before training, the corpus checks alone."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from es4r.data.manifest import Sample, load_manifest
from es4r.evaluation.gates import GateReport, corpus_checks, evaluate_gates, group_by_conversation, report_markdown
from es4r.evaluation.references import apply_references

logger = logging.getLogger(__name__)
CORPUS_CHECKS_FILE, REPORT_JSON, REPORT_MD = "corpus_checks.json", "gates.json", "gates.md"


def held_out(manifest: Path, references: Path | None = None) -> list[Sample]:
    """The manifest's rows, their replies replaced by the frozen `references` when given
    (regenerated elsewhere, the greedy references change wording), each conversation checked
    to hold all three variants before any model loads. Raises ValueError (ManifestError is one)."""
    samples = load_manifest(manifest)
    samples = apply_references(samples, references) if references else samples
    group_by_conversation(samples)
    return samples


def gate_model(preset: str, checkpoint: str | Path | None):
    """The preset's model with the ES4R parts untrained (evaluate_gates loads the checkpoint
    half-way), built as the checkpoint's (e.g. its cross.history_layout)."""
    from es4r.presets import load_model, resolve_config
    from es4r.training.checkpoint import restore_architecture

    config = resolve_config(preset, es4r_checkpoint="none")
    if checkpoint:
        config = restore_architecture(config, checkpoint)
    return load_model(config)


def write_corpus_checks(model, samples: list[Sample], out: Path) -> dict:
    checks = corpus_checks(model, samples)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / CORPUS_CHECKS_FILE).write_text(json.dumps(checks, indent=2))
    return checks


def write_gates(model, checkpoint: str | Path, samples: list[Sample], out: Path) -> GateReport:
    """evaluate_gates, written to `out` as gates.json and gates.md."""
    report = evaluate_gates(model, str(checkpoint), samples)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / REPORT_JSON).write_text(json.dumps(asdict(report), indent=2, default=str))
    (Path(out) / REPORT_MD).write_text(report_markdown(report, str(checkpoint)))
    return report


def ship_if_passed(report: GateReport, checkpoint: str | Path, destination: Path,
                   references: Path | None = None) -> Path | None:
    """Copy the checkpoint to `destination` with the gates it passed (and the references they
    were judged against) in its config, when every gate passed; None otherwise."""
    if not report.passed:
        return None
    from es4r.training.checkpoint import ship

    gates = {name: {k: g[k] for k in ("value", "threshold")} for name, g in report.gates.items()}
    record = {"ship_gates": gates, **({"ship_references": str(references)} if references else {})}
    return ship(checkpoint, destination, record)
