"""Does reusing the last reply's key/value cache (es4r/modeling/prefix_cache.py) change any
reply? For each conversation of a manifest, the text path answers its history twice: from
nothing, and as in a conversation — after the prompt of the turn before, whose cache it
reuses where the prompts agree. Greedy replies should be the same token for token; a
difference can only come from float rounding (the cached keys were computed in other
chunks). Prints the agreement, the share of prompt tokens reused and every reply that changed.

    python scripts/check_prefix_cache.py --manifest CORPUS/heldout40.jsonl [--out runs/prefix_cache.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from es4r.data.manifest import load_manifest  # noqa: E402
from es4r.pipeline import ES4RPipeline  # noqa: E402

logger = logging.getLogger("check_prefix_cache")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--preset", default="embedded")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    pipeline = ES4RPipeline.from_preset(args.preset)
    model, generation = pipeline.model, pipeline.config.generation
    rows = []
    for sample in load_manifest(args.manifest, check_audio=False):
        history = sample.history_turns()
        model.prefix_cache.clear()
        cold = model.generate(history, None, replace(generation, reuse_prefix=False))[0]
        model.generate(history[:-2], None, replace(generation, max_new_tokens=1))  # the turn before
        warm = model.generate(history, None, generation)[0]
        rows.append({"conversation": sample.conversation_id, "turns": len(history), "same": warm.token_ids == cold.token_ids,
                     "prompt_tokens": warm.prompt_tokens, "reused_tokens": warm.reused_tokens,
                     "cold": cold.text, "warm": warm.text})
        logger.info("%s: %s (%d of %d prompt tokens reused)", sample.conversation_id[:8],
                    "same" if rows[-1]["same"] else "CHANGED", warm.reused_tokens, warm.prompt_tokens)
    same = sum(r["same"] for r in rows)
    reused = sum(r["reused_tokens"] for r in rows) / max(sum(r["prompt_tokens"] for r in rows), 1)
    print(f"{same} of {len(rows)} replies unchanged; {reused:.0%} of prompt tokens came from the cache")
    for r in rows:
        if not r["same"]:
            print(f"- {r['conversation']}: from nothing {r['cold']!r} / reusing {r['warm']!r}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"unchanged": same, "total": len(rows), "reused_share": reused, "rows": rows},
                                       indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
