"""Do the speech path's falling and rising replies differ the way the teacher's do?

Gate 4's second half (`affect_closer`, es4r/evaluation/gates.py) asks each of the student's two
replies to be nearer its own variant's teacher reply than the other's: a test of replication,
which the teacher passes against itself (89 %) and any student that writes other content fails.
This measures the direction instead: the axis from the mean falling to the mean rising teacher
reply of the *training* targets (MiniLM, unit vectors), and for each held-out conversation
whether the rising reply lies further along it than the falling one — for the student's pair and
for the teacher's own pair — with a one-sided binomial p against 50 %.

    python -m experiments.affect_direction corpus/train_teacher3.jsonl runs/g4_h40/gates.json runs/g4_f40/gates.json

Since 2026-12-08 gate 4 itself measures the direction (`direction_test` in
es4r/evaluation/gates.py), with the axis made leave-one-out from the evaluation set's own teacher
replies, so a gate run needs no training manifest; this script keeps the training-target axis
the decision was first measured on (assets/REPLY_TUNING.md).
"""

from __future__ import annotations

import argparse
import json
import torch

from es4r.evaluation.gates import binomial_p


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("train_targets", help="teacher-target manifest the axis is made from")
    parser.add_argument("gates", nargs="+", help="gates.json files (their affect pairs)")
    args = parser.parse_args()
    from es4r.sentence_encoder import SentenceEncoder

    encoder = SentenceEncoder()
    unit = lambda texts: torch.nn.functional.normalize(encoder(texts), dim=-1)  # noqa: E731
    rows = [json.loads(line) for line in open(args.train_targets)]
    replies = {v: [r["response"]["utterance"] for r in rows if r["variant"] == v] for v in ("falling", "rising")}
    axis = unit(replies["rising"]).mean(0) - unit(replies["falling"]).mean(0)
    for path in args.gates:
        pairs = json.load(open(path))["affect"]["pairs"]
        along = {key: unit([p[key] for p in pairs]) @ axis
                 for key in ("falling", "rising", "teacher_falling", "teacher_rising")}
        for who, (f, r) in {"student": ("falling", "rising"), "teacher": ("teacher_falling", "teacher_rising")}.items():
            hits = int((along[r] > along[f]).sum())
            print(f"{path} {who}: rising further along in {hits}/{len(pairs)} ({hits / len(pairs):.0%}), "
                  f"p = {binomial_p(hits, len(pairs)):.4f}; mean gap {(along[r] - along[f]).mean():.4f}")


if __name__ == "__main__":
    main()
