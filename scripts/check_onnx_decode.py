"""Do the decode steps in ONNX Runtime (es4r/modeling/onnx_decode.py) change any reply? For
each conversation of a manifest the embedded text path answers twice, with its decode steps in
ONNX Runtime and in torch (transformers' generate), from nothing; prints how many greedy replies
are identical token for token, both decode speeds and every reply that changed.

    python scripts/check_onnx_decode.py --manifest CORPUS/heldout40.jsonl [--out runs/onnx_decode.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from es4r.data.manifest import load_manifest  # noqa: E402
from es4r.pipeline import ES4RPipeline  # noqa: E402

logger = logging.getLogger("check_onnx_decode")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    pipeline = ES4RPipeline.from_preset("embedded")
    model = pipeline.model
    if model.decoder is None:
        raise SystemExit("the embedded model's decode steps are not in ONNX Runtime (see the log)")
    decoder, generation = model.decoder, replace(pipeline.config.generation, reuse_prefix=False)
    rows, speed = [], {"onnxruntime": [], "torch": []}
    for sample in load_manifest(args.manifest, check_audio=False):
        replies = {}
        for name, used in (("onnxruntime", decoder), ("torch", None)):
            model.decoder = used
            started = time.perf_counter()
            replies[name] = model.generate(sample.history_turns(), None, generation)[0]
            speed[name].append(len(replies[name].token_ids) / (time.perf_counter() - started))
        model.decoder = decoder
        same = replies["onnxruntime"].token_ids == replies["torch"].token_ids
        rows.append({"conversation": sample.conversation_id, "same": same, "torch": replies["torch"].text,
                     "onnxruntime": replies["onnxruntime"].text})
        logger.info("%s: %s", sample.conversation_id[:8], "same" if same else "CHANGED")
    same = sum(r["same"] for r in rows)
    rates = {name: statistics.median(values) for name, values in speed.items()}
    print(f"{same} of {len(rows)} replies unchanged; tokens/s (prompt included, median): "
          f"onnxruntime {rates['onnxruntime']:.1f}, torch {rates['torch']:.1f}")
    for r in rows:
        if not r["same"]:
            print(f"- {r['conversation']}: torch {r['torch']!r} / onnxruntime {r['onnxruntime']!r}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"unchanged": same, "total": len(rows), "tokens_per_s": rates, "rows": rows},
                                       indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
