"""The ship gates' teacher references, frozen in a small file so every machine judges against
the same text.

The references of the held-out gates (es4r/evaluation/gates.py) are greedy replies of the
affect-aware teacher (es4r/data/teacher.py). Regenerated on another CPU, or with other batch
padding, a good part of them changes wording (assets/TRAINING_CPU.md, "Reproduction on a
second machine"), and the affect gate moves with them. The corpus itself is seeded and
rebuilds identically; the references are the one part that does not, so they are kept here:
one row per (conversation, turn, variant) with the reply text and how it was made.

    python -m es4r gates --export-references assets/heldout_references.jsonl corpus/heldout_teacher.jsonl
    python -m es4r gates corpus/heldout.jsonl CHECKPOINT --references assets/heldout_references.jsonl

`assets/fresh_references.jsonl` holds the same for 40 *fresh* conversations — the next 40 of the
builder's held-out stream, in no training set and never used to choose a checkpoint — so the
gates can be rerun out of sample (assets/TRAINING_CPU.md, "The fresh check"):

    python -m es4r corpus --out corpus_h80 --train 0 --heldout 80
    sed -n 121,240p corpus_h80/heldout.jsonl > corpus_h80/fresh.jsonl
    python -m es4r gates corpus_h80/fresh.jsonl CHECKPOINT --references assets/fresh_references.jsonl
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from es4r.data.manifest import ManifestError, Sample, sample_key

KEYS = ("conversation_id", "turn_id", "variant")


def export_references(manifest: str | Path, out: str | Path) -> int:
    """Write each row's reply (`response.utterance`) and its `teacher` record; returns the count."""
    rows = [json.loads(line) for line in Path(manifest).read_text(encoding="utf-8").splitlines() if line.strip()]
    lines = []
    for row in rows:
        entry = {k: row.get(k) for k in KEYS}
        entry["reply"] = row["response"]["utterance"]
        entry["made"] = row.get("teacher", {})
        lines.append(json.dumps(entry, ensure_ascii=False))
    Path(out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def apply_references(samples: list[Sample], path: str | Path) -> list[Sample]:
    """The samples with their reply replaced by the frozen reference. Every sample must have
    exactly one reference: a missing or extra row means another corpus, and is refused."""
    path = Path(path)
    references: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            references[sample_key(*(row[k] for k in KEYS))] = str(row["reply"])
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ManifestError(f"{path}:{number}: not a reference row ({error})") from None
    wanted = {s.key for s in samples}
    missing, extra = wanted - references.keys(), references.keys() - wanted
    if missing or extra:
        raise ManifestError(f"{path} does not match the manifest: {len(missing)} of its rows have no reference, "
                            f"{len(extra)} references have no row (was the corpus built with other settings?)")
    return [replace(s, response=references[s.key]) for s in samples]
