"""How well does the affect-aware teacher agree with itself? The ceiling of the affect gate.

The affect gate (es4r/evaluation/gates.py, gate 4) asks that a system's falling and rising
replies each be closer (MiniLM cosine) to the matching hinted teacher reply than to the other
one. Its references are single greedy replies of a 135M teacher, so part of what it measures
is the teacher's own wording. This script scores the teacher itself on the same test:

- fresh sampled draws of the same hinted teacher (temperature 0.7, top-p 0.9, one per seed);
- the greedy teacher with the hint reworded (same meaning, other words; REWORDED below);
- with `--gates`, a gate report's trained replies against the centroid of all teacher replies
  (the committed reference + the draws above), next to each teacher draw against the centroid
  of the others;
- all of it again with every reply cut to its first sentence (`first_sentence`), where the
  affect shows most ("I'm so sorry…" / "I'm so glad…") and the teacher's wording least.

    python -m experiments.affect_ceiling corpus/heldout_teacher.jsonl --gates runs/gates9/gates.json --out runs/ceiling
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

from es4r.config import PRESETS

logger = logging.getLogger("affect_ceiling")
REWORDED = {
    "falling": "The user sounds sad and weary: they spoke more quietly and more slowly as the conversation went on.",
    "rising": "The user sounds thrilled and full of energy: they spoke louder and faster as the conversation went on.",
}


def both_ways(falling, rising, own_falling, own_rising) -> list[bool]:
    """Gate 4's rule on unit vectors: each reply closer to its own reference than to the other."""
    return [bool(f @ tf > f @ tr and r @ tr > r @ tf) for f, r, tf, tr in zip(falling, rising, own_falling, own_rising)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", type=Path, help="held-out teacher manifest (falling/rising/flat rows)")
    parser.add_argument("--gates", type=Path, help="a gates.json whose trained replies to score against the centroid")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--preset", default="embedded", choices=PRESETS)
    parser.add_argument("--out", type=Path, default=Path("runs/affect_ceiling"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch

    from es4r.data.manifest import load_manifest
    from es4r.data.teacher import hinted_replies
    from es4r.evaluation.gates import group_by_conversation
    from es4r.presets import load_model, resolve_config
    from es4r.reply_text import trim_reply

    rows = [json.loads(line) for line in args.manifest.read_text().splitlines() if line.strip()]
    samples = [replace(s, affect_hint=r.get("affect_hint")) for s, r in zip(load_manifest(args.manifest), rows)]
    groups = list(group_by_conversation(samples).values())
    model = load_model(resolve_config(args.preset, es4r_checkpoint="none"))
    greedy = model.config.generation
    teacher = {"reference": ([g["falling"].response for g in groups], [g["rising"].response for g in groups])}

    sampled = replace(greedy, do_sample=True, temperature=0.7, top_p=0.9)
    for seed in args.seeds:
        torch.manual_seed(seed)
        teacher[f"sampled_seed{seed}"] = tuple(hinted_replies(model, [g[v] for g in groups], ban_prompt=True,
                                                              generation=sampled) for v in ("falling", "rising"))
    teacher["reworded_hint"] = tuple(hinted_replies(model, [replace(g[v], affect_hint=REWORDED[v]) for g in groups],
                                                    ban_prompt=True) for v in ("falling", "rising"))

    result = _scores(teacher, groups, args.gates)
    result["first_sentence"] = _scores({name: tuple([trim_reply(t, 1) for t in side] for side in replies)
                                        for name, replies in teacher.items()}, groups, args.gates, first_sentence=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ceiling.json").write_text(json.dumps({"result": result, "replies": teacher}, indent=1))
    print(json.dumps(result, indent=2))
    return 0


def _scores(teacher: dict, groups: list, gates: Path | None, first_sentence: bool = False) -> dict:
    """The gate's both-ways rule for each set of teacher replies, against the committed
    references and against the centroid of the others; with `gates`, the trained replies too
    (cut to their first sentence with `first_sentence`, as the teacher's then are)."""
    import torch

    from es4r.evaluation.metrics import sentence_embeddings
    from es4r.reply_text import trim_reply

    unit = lambda texts: torch.nn.functional.normalize(torch.as_tensor(sentence_embeddings(texts)), dim=-1)  # noqa: E731
    vectors = {name: (unit(f), unit(r)) for name, (f, r) in teacher.items()}

    def centroid(names):
        return tuple(torch.nn.functional.normalize(torch.stack([vectors[n][i] for n in names]).mean(0), dim=-1)
                     for i in (0, 1))

    result = {"conversations": len(groups), "vs_reference": {}, "vs_centroid_of_others": {}}
    for name in teacher:
        others = [n for n in teacher if n != name]
        if name != "reference":
            result["vs_reference"][name] = sum(both_ways(*vectors[name], *vectors["reference"])) / len(groups)
        result["vs_centroid_of_others"][name] = sum(both_ways(*vectors[name], *centroid(others))) / len(groups)
    if gates:
        pairs = {p["teacher_falling"]: p for p in json.loads(gates.read_text())["affect"]["pairs"]}
        keep = [i for i, g in enumerate(groups) if g["falling"].response in pairs]
        trained = [pairs[groups[i]["falling"].response] for i in keep]
        cut = (lambda text: trim_reply(text, 1)) if first_sentence else (lambda text: text)  # noqa: E731
        mine = (unit([cut(p["falling"]) for p in trained]), unit([cut(p["rising"]) for p in trained]))
        everyone = centroid(list(teacher))
        result["trained"] = {
            "pairs": len(keep),
            "vs_reference": sum(both_ways(*mine, vectors["reference"][0][keep], vectors["reference"][1][keep])) / len(keep),
            "vs_centroid_of_teacher": sum(both_ways(*mine, everyone[0][keep], everyone[1][keep])) / len(keep)}
    return result


if __name__ == "__main__":
    sys.exit(main())
