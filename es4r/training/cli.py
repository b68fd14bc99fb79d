"""`python -m es4r train`: a TrainConfig from --config and flags, then es4r.training.trainer.train;
prints the final checkpoint's folder as JSON (the command's result)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from es4r.config import PRESETS, TrainConfig


def add_train_subparser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train ES4R's speech path (two-path CE+KL with PLoRA)",
                                   description="Train on a JSONL manifest. Settings come from --config (YAML/JSON "
                                               "with TrainConfig fields); flags override them.")
    parser.add_argument("--config", help="YAML or JSON file of TrainConfig fields (see configs/)")
    parser.add_argument("--manifest", help="training manifest (JSONL)")
    parser.add_argument("--output-dir", help="where checkpoints and train_log.jsonl go")
    parser.add_argument("--preset", choices=PRESETS, help="backbones to train on")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--grad-accum", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    parser.add_argument("--init-from", help="start from this checkpoint's ES4R parts (e.g. continue a stage)")
    parser.add_argument("--seed", type=int)
    parser.set_defaults(handler=_train_command)

    tune = subparsers.add_parser("tune-replies", help="teach the LLM what a good reply is (LoRA on the empathy corpus)",
                                 description="LoRA on the LLM's reply behaviour, trained on assets/empathy_corpus in the "
                                             "prompt layout both paths use (es4r/training/reply_tuning.py).")
    tune.add_argument("--out", default="runs/reply_lora", help="folder for the adapter and its record")
    tune.add_argument("--preset", choices=PRESETS, default="embedded")
    tune.add_argument("--epochs", type=int)
    tune.add_argument("--lr", type=float)
    tune.add_argument("--r", type=int, help="LoRA rank")
    tune.add_argument("--note-share", type=float, help="share of examples given an affect note after the history")
    tune.add_argument("--affect-replies", action="store_true",
                      help="also train on the replies written for how the person sounds (assets/empathy_corpus/affect_*.jsonl), "
                           "each after its affect note")
    tune.add_argument("--init-from", help="continue this adapter folder")
    tune.add_argument("--max-steps", type=int, help="stop after this many steps (a quick check)")
    tune.add_argument("--ship", help="copy the adapter here as the app loads it (fp16; assets/reply_lora makes it "
                                     "the embedded default)")
    tune.add_argument("--ship-from", help="with --ship: ship this trained adapter folder instead of training")
    tune.set_defaults(handler=_tune_command)


def _train_command(args: argparse.Namespace) -> int:
    config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    overrides = {k: v for k, v in vars(args).items()
                 if k in TrainConfig.__dataclass_fields__ and v is not None}
    config = TrainConfig(**{**asdict(config), **overrides})
    if not config.manifest:
        raise SystemExit("error: no training manifest: pass --manifest or set manifest in --config")
    from es4r.presets import untrained_model
    from es4r.training import trainer  # here, not at the top: `--help` need not import torch

    final = trainer.train(config, build_model=untrained_model)  # looked up at call time: a test can stand in
    print(json.dumps({"checkpoint": str(final)}))
    return 0


def _tune_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from es4r.config import ReplyTuningConfig
    from es4r.presets import resolve_config
    from es4r.training.reply_tuning import ship_adapter, tune_replies

    if args.ship_from:
        if not args.ship:
            raise SystemExit("error: --ship-from needs --ship DEST")
        print(json.dumps({"shipped": str(ship_adapter(Path(args.ship_from), Path(args.ship)))}))
        return 0
    overrides = {k: v for k, v in (("epochs", args.epochs), ("lr", args.lr), ("r", args.r),
                                   ("note_share", args.note_share), ("init_from", args.init_from),
                                   ("affect_replies", args.affect_replies or None)) if v is not None}
    config = ReplyTuningConfig(**overrides)
    llm = resolve_config(args.preset, es4r_checkpoint="none", reply_adapter=None).backbones.llm
    out = tune_replies(llm, Path(args.out), config, max_steps=args.max_steps)
    if args.ship:
        ship_adapter(out, Path(args.ship))
    print(json.dumps({"adapter": str(out), "shipped": args.ship}))
    return 0
