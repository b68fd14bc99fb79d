"""`python -m es4r evaluate|bench|situations|gates ...`."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
import logging
import platform
import sys
import tempfile
from pathlib import Path

from es4r.config import PRESETS

logger = logging.getLogger(__name__)


def add_evaluation_subparsers(subparsers) -> None:
    from es4r.system_names import SYSTEMS

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

    situations = subparsers.add_parser(
        "situations", help="replies to short spoken situations of many kinds, checked for what listeners reject",
        description="Plays the situations set (assets/situations) and the valence set to each "
                    "system turn by turn, and reports per kind the replies flagged by failure kind, the most common "
                    "opening, repeated openings, Dist-2 and mean words (es4r/evaluation/reply_checks.py).")
    situations.add_argument("--systems", nargs="+", default=None, choices=["untrained", "text", "speech", "cascade"],
                            help="untrained: the speech path on untrained ES4R parts; text: the text path; speech: "
                                 "the speech path of the checkpoint; cascade: the plain chat cascade "
                                 "(default: the path the app would use)")
    situations.add_argument("--preset", choices=PRESETS, default="embedded")
    situations.add_argument("--checkpoint", help="ES4R checkpoint folder (default: the preset's; 'none' for none)")
    situations.add_argument("--reply-adapter", help="reply-tuning LoRA folder (default: the preset's; 'none' for none)")
    situations.add_argument("--generation", nargs="+", default=[], metavar="FIELD=VALUE",
                            help="decoding settings to change (GenerationConfig fields), e.g. condolence_check=false")
    situations.add_argument("--kinds", nargs="+", default=None, help="only these kinds (valence_set for the valence set)")
    situations.add_argument("--limit", type=int, help="only the first N situations of each kind")
    situations.add_argument("--quotes", type=int, default=10, help="replies of each system quoted at random")
    situations.add_argument("--seed", type=int, default=0, help="seed of the random quotes")
    situations.add_argument("--out", default="runs/situations", help="folder for situations.md and situations.json")
    situations.add_argument("--recheck", help="judge the replies of a saved situations.json again (no model runs)")
    situations.set_defaults(handler=_situations)

    gates = subparsers.add_parser(
        "gates", help="may a trained checkpoint become the embedded default? (the ship gates; exit 0 = all pass)",
        description="The ship gates of es4r/evaluation/gates.py on a held-out manifest with teacher replies "
                    "(all three variants). Writes gates.md and gates.json to --out and prints gates.md. Exit status "
                    "0 when every gate passes, 1 when one fails (the report says which, by how much), 2 for bad input.")
    gates.add_argument("manifest", type=Path, help="held-out manifest with teacher replies (all three variants)")
    gates.add_argument("checkpoint", nargs="?", help="trained ES4R checkpoint folder")
    gates.add_argument("--out", type=Path, default=Path("runs/gates"), help="report folder")
    gates.add_argument("--preset", default="embedded", choices=PRESETS)
    gates.add_argument("--corpus-checks", action="store_true", help="only the before-training corpus checks")
    gates.add_argument("--references", type=Path, help="frozen teacher references to judge against "
                                                       "(e.g. assets/heldout_references.jsonl)")
    gates.add_argument("--export-references", type=Path, metavar="OUT",
                       help="only write the manifest's teacher replies to OUT as frozen references")
    gates.add_argument("--ship", type=Path, help="when every gate passes, copy the checkpoint here "
                                                 "(assets/es4r_embedded makes it the embedded default)")
    gates.set_defaults(handler=_gates)


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
    meta = {"preset": args.preset, "load_s": round(load_seconds, 2), "path": pipeline.path,
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


def _situations(args: argparse.Namespace) -> int:
    from es4r.sentence_encoder import EncoderMissing, SentenceEncoder
    from es4r.evaluation.situations import (KINDS, VALENCE_KIND, load_situations, play, replies_json, report_markdown,
                                            valence_situations)
    from es4r.pipeline import ES4RPipeline
    from es4r.presets import resolve_config
    from es4r.systems import system_variant

    _, situations = load_situations()
    situations += valence_situations()
    kinds = tuple(args.kinds or KINDS + (VALENCE_KIND,))
    unknown = [k for k in kinds if k not in KINDS + (VALENCE_KIND,)]
    if unknown:
        raise SystemExit(f"error: unknown kinds {unknown}; choose from {', '.join(KINDS + (VALENCE_KIND,))}")
    chosen, counts = [], {}
    for situation in situations:
        counts[situation.kind] = counts.get(situation.kind, 0) + 1
        if situation.kind in kinds and (args.limit is None or counts[situation.kind] <= args.limit):
            chosen.append(situation)
    try:
        encoder = SentenceEncoder()
    except EncoderMissing as error:
        raise SystemExit(f"error: the relevance check needs the packaged sentence encoder: {error}") from None
    if args.recheck:
        from es4r.config import GenerationConfig
        from es4r.evaluation.situations import recheck

        reports = recheck(json.loads(Path(args.recheck).read_text()), situations, GenerationConfig().system_prompt, encoder)
        return _write_situations(reports, Path(args.out), args, {"rechecked": args.recheck})
    overrides = {} if args.checkpoint is None else {"es4r_checkpoint": args.checkpoint}
    if args.reply_adapter is not None:
        overrides["reply_adapter"] = args.reply_adapter
    config = resolve_config(args.preset, **overrides)
    config = replace(config, generation=generation_overrides(config.generation, args.generation))
    pipeline = ES4RPipeline.from_config(config)
    systems = args.systems or [pipeline.path.value]
    if "speech" in systems and not pipeline.speech_path:
        raise SystemExit("error: the speech system needs a trained ES4R checkpoint (--checkpoint DIR)")
    reports = []
    for name in systems:
        if name == "untrained":
            untrained = ES4RPipeline.from_config(replace(config, backbones=replace(config.backbones, es4r_checkpoint=None)))
            system = untrained.variant(speech_path=True)
        elif name == "cascade":
            system = CascadeAsPipeline(pipeline)
        else:
            system = system_variant(pipeline, "es4r" if name == "speech" else "es4r_text")
        reports.append(play(system, chosen, name, encoder))
        if name == "untrained":
            del untrained, system
    return _write_situations(reports, Path(args.out), args, {
        "situations": len(chosen), "systems": systems, "reply_adapter": config.backbones.reply_adapter,
        "generation": args.generation})


def _write_situations(reports, out: Path, args: argparse.Namespace, meta: dict) -> int:
    from es4r.evaluation.situations import replies_json, report_markdown

    out.mkdir(parents=True, exist_ok=True)
    (out / "situations.json").write_text(json.dumps(replies_json(reports), indent=1))
    (out / "situations.md").write_text(report_markdown(reports, args.quotes, args.seed))
    print((out / "situations.md").read_text())
    print(json.dumps({"report": str(out / "situations.md"), "replies": str(out / "situations.json"), **meta}))
    return 0


def _refuse(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2  # bad input, as argparse's status


def _gates(args: argparse.Namespace) -> int:
    if args.export_references:
        if not args.manifest.is_file():
            return _refuse(f"manifest {args.manifest} does not exist")
        from es4r.evaluation.references import export_references

        count = export_references(args.manifest, args.export_references)
        logger.info("%d references written to %s", count, args.export_references)
        print(json.dumps({"references": str(args.export_references), "rows": count}))
        return 0
    if not args.corpus_checks and not args.checkpoint:
        return _refuse("name a checkpoint, or pass --corpus-checks")
    from es4r.training.checkpoint import CONFIG_FILE

    if args.checkpoint and not (Path(args.checkpoint) / CONFIG_FILE).is_file():
        return _refuse(f"{args.checkpoint} is not an ES4R checkpoint folder (no {CONFIG_FILE})")
    if args.references and not args.references.is_file():
        return _refuse(f"--references {args.references} does not exist")
    from es4r.evaluation.gate_run import (REPORT_MD, gate_model, held_out, ship_if_passed, write_corpus_checks,
                                          write_gates)

    try:
        samples = held_out(args.manifest, args.references)
    except ValueError as error:  # a malformed manifest (ManifestError), references of another, a variant missing
        return _refuse(str(error))
    model = gate_model(args.preset, args.checkpoint)
    if args.corpus_checks:
        print(json.dumps(write_corpus_checks(model, samples, args.out), indent=2))
        return 0
    report = write_gates(model, args.checkpoint, samples, args.out)
    print((args.out / REPORT_MD).read_text())
    if args.ship:
        shipped = ship_if_passed(report, args.checkpoint, args.ship, args.references)
        if shipped:
            logger.info("all gates passed: shipped to %s", shipped)
        else:
            logger.warning("not shipped: a gate failed (see %s)", args.out / REPORT_MD)
    return 0 if report.passed else 1


def generation_overrides(generation, pairs: list[str]):
    """`generation` with FIELD=VALUE pairs applied, each value read as its field's type."""
    from dataclasses import fields

    types = {f.name: type(getattr(generation, f.name)) for f in fields(generation)}
    changes = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in types or not value:
            raise SystemExit(f"error: --generation {pair!r}: expected FIELD=VALUE with a field of {', '.join(types)}")
        kind = types[key]
        changes[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return replace(generation, **changes)


class CascadeAsPipeline:
    """The plain cascade (es4r.systems.cascade_respond) with the `converse` and `config` a
    situations run reads: the same ASR, then the plain chat prompt, no ES4R parts."""

    def __init__(self, pipeline):
        self.pipeline, self.config = pipeline, pipeline.config

    def converse(self, conversation, audio):
        from types import SimpleNamespace

        from es4r.conversation import ASSISTANT, Turn
        from es4r.systems import cascade_respond

        conversation = self.pipeline.add_user_turn(conversation, audio)
        result = cascade_respond(self.pipeline, conversation)
        conversation = conversation.with_turn(Turn(ASSISTANT, result.reply_text, result.reply_audio, result.sample_rate))
        return conversation, SimpleNamespace(reply_text=result.reply_text,
                                             transcripts=[t.text for t in conversation.user_turns])
