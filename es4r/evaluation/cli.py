"""`python -m es4r evaluate ...` and `python -m es4r bench ...`."""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
from pathlib import Path

from es4r.config import PRESETS

logger = logging.getLogger(__name__)


def add_evaluation_subparsers(subparsers) -> None:
    from es4r.systems import SYSTEMS

    evaluate = subparsers.add_parser(
        "evaluate", help="the paper's metrics for several systems on a manifest",
        description="Systems: " + "; ".join(f"{k} = {v}" for k, v in SYSTEMS.items()))
    evaluate.add_argument("--manifest", required=True, help="JSONL manifest with reference responses")
    evaluate.add_argument("--systems", nargs="+", default=["es4r_text", "cascade"], choices=list(SYSTEMS))
    evaluate.add_argument("--preset", choices=PRESETS, default="embedded")
    evaluate.add_argument("--checkpoint", help="trained ES4R checkpoint (needed by the speech-path systems)")
    evaluate.add_argument("--out", default="runs/evaluation", help="folder for results.md/.csv and samples")
    evaluate.add_argument("--limit", type=int, help="evaluate only the first N samples")
    evaluate.add_argument("--manifest-transcripts", action="store_true",
                          help="use the manifest's utterances as transcripts instead of running ASR")
    evaluate.add_argument("--bertscore-model", default="auto",
                          help="auto = the offline all-MiniLM-L6-v2 package; a folder or hub id; 'none' to skip")
    evaluate.add_argument("--judge", help="LLM judge: a local model folder, or an OpenAI-compatible URL "
                                          "as openai:URL#MODEL")
    evaluate.set_defaults(handler=_evaluate)

    bench = subparsers.add_parser("bench", help="per-stage latency, ES4R vs cascade, growth with history")
    bench.add_argument("--preset", choices=PRESETS, default="embedded")
    bench.add_argument("--checkpoint", help="trained ES4R checkpoint (benchmarks the speech path)")
    bench.add_argument("--turns", nargs="+", type=int, default=[1, 3, 5, 8], help="history lengths to measure")
    bench.add_argument("--repeats", type=int, default=3, help="runs per history length (median reported)")
    bench.add_argument("--out", default="runs/bench.json", help="JSON file for the figures (its folder is made)")
    bench.add_argument("--no-user-cascade", action="store_true",
                       help="skip the user's cascade (faster-whisper -> llama.cpp -> the voice), which otherwise runs "
                            "when its packages are installed (requirements-cascade.txt)")
    bench.set_defaults(handler=_bench)


def _pipeline(args):
    from es4r.pipeline import ES4RPipeline

    overrides = {"es4r_checkpoint": args.checkpoint} if args.checkpoint else {}
    return ES4RPipeline.from_preset(args.preset, **overrides)


def _judge(spec: str | None):
    if not spec:
        return None
    from es4r.evaluation.judge import OpenAIJudge, TransformersJudge

    if spec.startswith("openai:"):
        url, _, model = spec[len("openai:"):].partition("#")
        if not model:
            raise SystemExit("error: --judge openai:URL#MODEL needs a model name after '#'")
        return OpenAIJudge(url, model)
    return TransformersJudge(spec)


def _evaluate(args: argparse.Namespace) -> int:
    from es4r.evaluation.run import evaluate

    bertscore = None if args.bertscore_model == "none" else args.bertscore_model
    output = evaluate(_pipeline(args), args.manifest, args.systems, args.out, args.limit,
                      args.manifest_transcripts, bertscore, _judge(args.judge))
    print(output.markdown.read_text())
    print(json.dumps({"results": str(output.csv), "samples": str(output.samples_file)}))
    return 0


def _user_cascade(pipeline, args: argparse.Namespace, work_dir: Path):
    """(CascadeProcess or None, what it is or why it does not run); `work_dir` takes weights
    it has to join from parts."""
    from es4r import user_cascade

    if args.no_user_cascade:
        return None, "skipped (--no-user-cascade)"
    if args.preset != "embedded":
        return None, "runs on the embedded preset only (the packaged weights it shares with ES4R)"
    missing = user_cascade.missing_packages()
    if missing:
        return None, f"not run: {', '.join(missing)} not installed ({user_cascade.INSTALL_HINT})"
    cascade = user_cascade.CascadeProcess(pipeline.config, work_dir)
    return cascade, cascade.name


def _bench(args: argparse.Namespace) -> int:
    import torch

    from es4r.bench import format_table, growth_check, replies_list, run_bench, write_json, yardstick_table

    import time

    start = time.perf_counter()
    pipeline = _pipeline(args)
    load_seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="es4r_cascade_") as work_dir:
        cascade, cascade_note = _user_cascade(pipeline, args, Path(work_dir))
        try:
            rows = run_bench(pipeline, tuple(args.turns), args.repeats, user_cascade=cascade)
        finally:
            if cascade is not None:
                cascade.close()
    meta = {"preset": args.preset, "load_s": round(load_seconds, 2), "path": "speech" if pipeline.speech_path else "text",
            "voice": pipeline.voice.name, "repeats": args.repeats, "torch_threads": torch.get_num_threads(),
            "machine": platform.platform(), "processor": platform.processor(), "user_cascade": cascade_note}
    write_json(rows, args.out, meta)
    print(format_table(rows))
    print(growth_check(rows))
    if cascade is not None:
        print(f"\nES4R ({meta['path']} path) against the user's cascade ({cascade_note}), seconds from the end of "
              "the recording:")
        print(yardstick_table(rows, pipeline.speech_path))
    else:
        print(f"\nuser's cascade: {cascade_note}")
    print(f"\nThe replies (the repeat of median length; {meta['path']} path):\n{replies_list(rows, pipeline.speech_path)}")
    print(json.dumps({"figures": args.out, **meta}))
    return 0
