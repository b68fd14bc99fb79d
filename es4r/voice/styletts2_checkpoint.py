"""StyleTTS2 checkpoints in the official layout (config.yml, PLBERT/config.yml, one .pth with
`module.`-prefixed networks): finding and strictly loading one from a folder or the hub, and a
tiny random one in the same layout for tests and the `tiny` preset."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from es4r.voice.styletts2_networks import MIN_STYLE_FRAMES, StyleTTS2Config, build_networks

logger = logging.getLogger(__name__)

# ---- the official checkpoint layout ------------------------------------------------------
NETWORK_NAMES = ("bert", "bert_encoder", "predictor", "decoder", "text_encoder",
                 "predictor_encoder", "style_encoder", "diffusion")
CONFIG_NAME = "config.yml"
DATA_PARALLEL_PREFIX = "module."  # the official .pth was saved from wrapped modules
HUB_ALLOW_PATTERNS = ["*.yml", "*.pth"]  # config + weights; skips the reference-audio zip
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
# PL-BERT sizes of StyleTTS2's Utils/PLBERT/config.yml (its model_params), which the hub's LibriTTS
# config.yml refers to without shipping it. Copied from the PyPI `styletts2` package 0.1.6 (MIT;
# Copyright (c) 2023 Sidharth Rajaram; from StyleTTS2: Copyright (c) 2023 Aaron (Yinghao) Li).
OFFICIAL_PLBERT = {"vocab_size": 178, "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 2048,
                   "max_position_embeddings": 512, "num_hidden_layers": 12, "dropout": 0.1}


class StyleTTS2CheckpointError(RuntimeError):
    """The folder does not hold a StyleTTS2 checkpoint in the official layout."""


def _resolve_folder(path_or_id: str) -> Path:
    """A local folder, or a hub snapshot (needs a network; never used offline)."""
    path = Path(path_or_id).expanduser()
    if path.exists():
        return path
    if not _HUB_ID.fullmatch(str(path_or_id)):
        raise StyleTTS2CheckpointError(f"no folder {path_or_id!r}; pass a folder holding {CONFIG_NAME} "
                                       "and the .pth, or a hub id like 'yl4579/StyleTTS2-LibriTTS'")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=path_or_id, allow_patterns=HUB_ALLOW_PATTERNS))
    except Exception as error:  # network, auth, missing repo: all mean "cannot fetch"
        raise StyleTTS2CheckpointError(f"{path_or_id!r} is not a local folder and could not be "
                                       f"fetched from the hub ({error}); download it and pass the folder") from error


def _is_model_config(path: Path) -> bool:
    """A StyleTTS2 config.yml (not PL-BERT's or the aligner's): it describes the diffusion."""
    raw = yaml.safe_load(path.read_text()) or {}
    return isinstance(raw.get("model_params"), dict) and "diffusion" in raw["model_params"]


def find_checkpoint(root: Path) -> tuple[Path, Path]:
    """(config.yml, .pth) of the one StyleTTS2 model under `root`."""
    configs = [root / CONFIG_NAME] if (root / CONFIG_NAME).is_file() else sorted(root.rglob(CONFIG_NAME))
    candidates = [c for c in configs if _is_model_config(c) and any(c.parent.glob("*.pth"))]
    if len(candidates) != 1:
        raise StyleTTS2CheckpointError(
            f"expected one StyleTTS2 {CONFIG_NAME} next to a .pth under {root}; found "
            f"{[str(c) for c in candidates] or 'none'}. Pass the folder holding the model you want.")
    weights = sorted(candidates[0].parent.glob("*.pth"))
    if len(weights) != 1:
        raise StyleTTS2CheckpointError(f"expected one .pth next to {candidates[0]}; found "
                                       f"{[w.name for w in weights]}. Keep only the epoch to load.")
    return candidates[0], weights[0]


def _plbert_params(root: Path, config_dir: Path, plbert_dir: str) -> dict[str, Any]:
    """PL-BERT sizes: PLBERT_dir under the checkpoint, else the official ones (OFFICIAL_PLBERT;
    the hub's LibriTTS folder refers to Utils/PLBERT/ of the GitHub repository)."""
    for folder in [config_dir / plbert_dir, root / plbert_dir]:
        if (folder / CONFIG_NAME).is_file():
            return dict(yaml.safe_load((folder / CONFIG_NAME).read_text())["model_params"])
    logger.info("no PL-BERT %s in %r under %s; using the official Utils/PLBERT sizes",
                CONFIG_NAME, plbert_dir, config_dir)
    return dict(OFFICIAL_PLBERT)


def _read_net(weights: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The .pth's `net` dict, read without running arbitrary pickled code."""
    scalar = np._core.multiarray.scalar  # numpy scalars (e.g. a saved val_loss), under both names
    numpy_scalars = [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
                     np.dtype, *(type(np.dtype(code)) for code in "fdilb")]
    with torch.serialization.safe_globals(numpy_scalars):
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as error:
            raise StyleTTS2CheckpointError(f"cannot read {weights}: {error}") from error
    if not isinstance(state, dict) or "net" not in state:
        raise StyleTTS2CheckpointError(f"{weights} has no 'net' dict; expected a StyleTTS2 training checkpoint")
    return state["net"]


def load_strict(networks: nn.ModuleDict, net: dict[str, dict[str, torch.Tensor]], source: Path) -> None:
    """Copy every inference network's weights; any missing or unexpected key is an error.
    Only non-persistent buffers (PL-BERT's position_ids, saved by older transformers) are
    skipped, because the library recomputes them."""
    absent = [name for name in networks if name not in net]
    if absent:
        raise StyleTTS2CheckpointError(f"{source}: net lacks {absent}; found {sorted(net)}")
    for name, module in networks.items():
        state = {k.removeprefix(DATA_PARALLEL_PREFIX): v for k, v in net[name].items()}
        expected = set(module.state_dict())
        recomputed = {n for n, _ in module.named_buffers()} - expected
        found = set(state) - recomputed
        missing, unexpected = sorted(expected - found), sorted(found - expected)
        if missing or unexpected:
            raise StyleTTS2CheckpointError(
                f"{source}: net['{name}'] does not match the network built from {CONFIG_NAME}: "
                f"missing keys {missing[:10]}, unexpected keys {unexpected[:10]}"
                f"{' (first 10 shown)' if max(len(missing), len(unexpected)) > 10 else ''}. "
                f"Check that {CONFIG_NAME} belongs to this .pth.")
        try:
            module.load_state_dict({k: state[k] for k in found}, strict=True)
        except RuntimeError as error:
            raise StyleTTS2CheckpointError(f"{source}: net['{name}'] has wrong shapes: {error}") from error


def load_checkpoint_folder(path_or_id: str) -> tuple[nn.ModuleDict, StyleTTS2Config]:
    """Build the networks from config.yml and load the .pth strictly (eval mode, CPU)."""
    root = _resolve_folder(path_or_id)
    config_path, weights = find_checkpoint(root)
    config = StyleTTS2Config.from_yaml_dict(yaml.safe_load(config_path.read_text()))
    networks = build_networks(config, _plbert_params(root, config_path.parent, config.plbert_dir))
    load_strict(networks, _read_net(weights), weights)
    return networks.eval(), config


# ---- a tiny random checkpoint in the same layout (tests, the `tiny` preset) ----------------
TINY_CHECKPOINT_NAME = "epochs_2nd_tiny.pth"
TINY_PLBERT = {"vocab_size": 178, "hidden_size": 32, "embedding_size": 16, "num_attention_heads": 2,
               "intermediate_size": 64, "max_position_embeddings": 128, "num_hidden_layers": 2,
               "dropout": 0.1}
TINY_GENERATORS = {
    "hifigan": {"type": "hifigan", "resblock_kernel_sizes": [3], "upsample_rates": [10, 5, 3, 2],
                "upsample_initial_channel": 32, "resblock_dilation_sizes": [[1, 3, 5]],
                "upsample_kernel_sizes": [20, 10, 6, 4]},
    "istftnet": {"type": "istftnet", "resblock_kernel_sizes": [3], "upsample_rates": [10, 6],
                 "upsample_initial_channel": 32, "resblock_dilation_sizes": [[1, 3, 5]],
                 "upsample_kernel_sizes": [20, 12], "gen_istft_n_fft": 20, "gen_istft_hop_size": 5},
}
TINY_DECODER_SIZES = {"hidden_dim": 32, "asr_res_dim": 8}  # official: 1024 and 64, fixed in code
SPECTRAL_NORM_WARMUP = 10  # power iterations, else random u, v make eval-mode weights explode
TINY_MAX_PHONEME_FRAMES = 2  # random durations would otherwise average max_dur / 2 frames


def tiny_config_dict(decoder: str = "hifigan") -> dict[str, Any]:
    """config.yml of the tiny model: the official keys at toy sizes, flagged es4r_random."""
    return {
        "es4r_random": True, "es4r_max_phoneme_frames": TINY_MAX_PHONEME_FRAMES, "PLBERT_dir": "PLBERT/",
        "preprocess_params": {"sr": 24000, "spect_params": {"n_fft": 2048, "win_length": 1200, "hop_length": 300}},
        "model_params": {
            "multispeaker": True, "dim_in": 8, "hidden_dim": 32, "max_conv_dim": 32, "n_layer": 1,
            "n_mels": 80, "n_token": 178, "max_dur": 8, "style_dim": 16, "dropout": 0.2,
            "decoder": {**TINY_GENERATORS[decoder], **TINY_DECODER_SIZES},
            "diffusion": {"embedding_mask_proba": 0.1,
                          "transformer": {"num_layers": 1, "num_heads": 2, "head_features": 8, "multiplier": 2},
                          "dist": {"sigma_data": 0.2, "estimate_sigma_data": True, "mean": -3.0, "std": 1.0}},
        },
    }


def make_tiny_styletts2_checkpoint(folder: str | Path, seed: int = 0, decoder: str = "hifigan") -> Path:
    """Write config.yml, PLBERT/config.yml and a random .pth in the official layout (with the
    `module.` prefixes); returns the folder, loadable by StyleTTS2Engine.from_pretrained."""
    folder = Path(folder)
    (folder / "PLBERT").mkdir(parents=True, exist_ok=True)
    raw = tiny_config_dict(decoder)
    (folder / CONFIG_NAME).write_text(yaml.safe_dump(raw, sort_keys=False))
    (folder / "PLBERT" / CONFIG_NAME).write_text(yaml.safe_dump({"model_params": TINY_PLBERT}))
    config = StyleTTS2Config.from_yaml_dict(raw)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        networks = build_networks(config, TINY_PLBERT)
        mel = torch.randn(1, 1, config.n_mels, MIN_STYLE_FRAMES)
        for _ in range(SPECTRAL_NORM_WARMUP):  # converge u, v as training would have
            networks["style_encoder"].train()(mel)
            networks["predictor_encoder"].train()(mel)
    net = {name: {DATA_PARALLEL_PREFIX + k: v for k, v in module.state_dict().items()}
           for name, module in networks.items()}
    torch.save({"net": net, "epoch": 0, "iters": 0}, folder / TINY_CHECKPOINT_NAME)
    return folder
