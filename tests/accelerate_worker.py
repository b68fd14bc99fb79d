"""Run by test_training_distributed under `accelerate launch`: one training step on tiny
backbones, then each process writes a digest of its trainable parameters. The test puts the
repository root on PYTHONPATH, so `es4r` imports from the checkout."""

import hashlib
import json
import sys
from pathlib import Path

import torch

from es4r.config import TrainConfig, preset_config
from es4r.modeling.backbones import load_llm, load_whisper
from es4r.modeling.model import ES4RModel
from es4r.training.trainer import train, trainable_parameters


def digest(model) -> str:
    hasher = hashlib.sha256()
    for param in trainable_parameters(model):
        hasher.update(param.detach().cpu().numpy().tobytes())
    return hasher.hexdigest()


def main() -> None:
    whisper_dir, llm_dir, manifest, out = sys.argv[1:5]
    torch.manual_seed(0)
    model = ES4RModel(load_whisper(whisper_dir, "cpu"), load_llm(llm_dir, "cpu"), preset_config("tiny"))
    before = digest(model)
    import es4r.training.trainer as training

    seen, loss = [], training.two_path_loss

    def recording(model, batch, *args, **kwargs):  # which samples this process trained on
        seen.extend(f"{item.sample.conversation_id}:{item.sample.turn_id}" for item in batch)
        return loss(model, batch, *args, **kwargs)

    training.two_path_loss = recording
    config = TrainConfig(manifest=manifest, output_dir=str(Path(out) / "run"), preset="tiny", epochs=1,
                         batch_size=1, lr=1e-2, max_steps=1, save_every=1000)
    train(config, model=model)
    from accelerate import PartialState

    state = PartialState()
    (Path(out) / f"rank{state.process_index}.json").write_text(
        json.dumps({"before": before, "after": digest(model), "world": str(state.num_processes), "seen": seen}))


if __name__ == "__main__":
    main()
