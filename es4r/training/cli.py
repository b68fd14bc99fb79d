"""`python -m es4r train`: a TrainConfig from --config and flags, then es4r.training.trainer.train;
prints the final checkpoint's folder as JSON (the command's result)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from es4r.config import PRESETS, TrainConfig
from es4r.training import trainer


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


def _train_command(args: argparse.Namespace) -> int:
    config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    overrides = {k: v for k, v in vars(args).items()
                 if k in TrainConfig.__dataclass_fields__ and v is not None}
    config = TrainConfig(**{**asdict(config), **overrides})
    if not config.manifest:
        raise SystemExit("error: no training manifest: pass --manifest or set manifest in --config")
    final = trainer.train(config)  # looked up at call time, so a test can stand in for it
    print(json.dumps({"checkpoint": str(final)}))
    return 0
