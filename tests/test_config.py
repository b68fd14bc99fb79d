import json
from pathlib import Path

import pytest

from es4r.config import PRESETS, ES4RConfig, Strategy, TrainConfig, preset_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", PRESETS)
def test_preset_config_round_trips(name):
    config = preset_config(name)
    assert ES4RConfig.from_dict(config.to_dict()) == config
    assert config.preset == name
    saved = json.loads(config.to_json())  # as a checkpoint holds it: the strategies by their words
    assert sorted(saved["strategy"]["table"]) == ["comfort", "encourage", "neutral"]
    rebuilt = ES4RConfig.from_dict(saved)
    assert rebuilt == config and all(type(key) is Strategy for key in rebuilt.strategy.table)


def test_paper_preset_names_the_paper_backbones():
    backbones = preset_config("paper").backbones
    assert (backbones.whisper, backbones.llm) == ("openai/whisper-large-v3", "Qwen/Qwen3-8B")
    plora = preset_config("paper").plora
    assert (plora.r, plora.alpha, plora.dropout) == (16, 16, 0.1)


def test_unknown_preset_lists_choices():
    with pytest.raises(ValueError, match="paper, embedded, tiny"):
        preset_config("huge")


def test_unknown_decode_runtime_lists_choices():
    """A misspelt runtime is refused, not quietly run as torch (e.g. from a saved config)."""
    data = preset_config("embedded").to_dict()
    data["generation"]["decode_runtime"] = "onnx-runtime"
    with pytest.raises(ValueError, match="torch, onnxruntime"):
        ES4RConfig.from_dict(data)


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")))
def test_shipped_training_configs_parse(path):
    config = TrainConfig.from_file(str(path))
    assert config.manifest and config.kl_temperature == 2.0
    if config.init_from and not config.history_layout:  # a later stage: starts from a checkpoint, names what it trains
        assert config.train_only and isinstance(config.train_only, tuple)
    elif config.init_from and config.train_only:  # a later stage in the words-then-S' layout: names what it trains
        assert isinstance(config.train_only, tuple) and config.history_layout == "text_and_speech"
    elif config.init_from:  # a stage in another prompt layout: every part again, the full run's settings
        assert not config.train_only and config.weight_decay == 0.05 and config.two_path_weight == 1.0
    else:  # a full run: the paper's AdamW weight decay, the two-path loss on
        assert config.weight_decay == 0.05 and config.two_path_weight == 1.0


def test_the_shipped_checkpoint_is_reproduced_by_a_chain_of_config_files():
    """What ships was trained in stages: its recorded settings are one file in configs/ (every
    setting), that file's `init_from` is the final snapshot of another file's run, and so on back
    to a stage trained from the untrained parts. Running those files in order reproduces it."""
    import json
    from dataclasses import asdict

    def settings(path: Path) -> dict:
        recipe = asdict(TrainConfig.from_file(str(path)))
        recipe["train_only"] = list(recipe["train_only"])
        return recipe

    configs = {path.name: settings(path) for path in sorted((ROOT / "configs").glob("*.yaml"))}
    configs = {name: c for name, c in configs.items() if c.get("preset") == "embedded"}
    shipped = json.loads((ROOT / "assets" / "es4r_embedded" / "es4r_config.json").read_text())["train_config"]
    last = [name for name, recipe in configs.items() if recipe == shipped]
    assert len(last) == 1, "no config file (or several) holds every setting the shipped checkpoint recorded"
    chain, recipe = last, configs[last[0]]
    while recipe["init_from"]:
        before = [name for name, c in configs.items() if f"{c['output_dir']}/final" == recipe["init_from"]]
        assert len(before) == 1, f"{chain[-1]} starts from {recipe['init_from']}, which no one config file makes"
        chain.append(before[0])
        recipe = configs[before[0]]
        assert len(chain) < len(configs), chain  # no loop
    assert len(chain) == len(set(chain)), chain


def test_training_config_rejects_unknown_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("manifest: x\nlearning_rate: 1\n")
    with pytest.raises(ValueError, match="unknown training settings"):
        TrainConfig.from_file(str(path))


def test_one_resolver_orders_preset_environment_and_flags(tiny_model, tmp_path, monkeypatch):
    """pipeline.resolve_config: $ES4R_CHECKPOINT over the preset, a flag over the environment,
    "none" = the text path, and a checkpoint's own architecture restored into the config."""
    import json

    from es4r.presets import CHECKPOINT_ENV, resolve_config
    from es4r.training.checkpoint import CONFIG_FILE, save_es4r_parts

    checkpoint = save_es4r_parts(tiny_model, tmp_path / "ckpt")
    meta = json.loads((checkpoint / CONFIG_FILE).read_text())
    meta["config"]["adapter"]["hidden"] = 48  # trained with a wider adapter than the preset's
    (checkpoint / CONFIG_FILE).write_text(json.dumps(meta))
    monkeypatch.delenv(CHECKPOINT_ENV, raising=False)
    assert resolve_config("tiny").backbones.es4r_checkpoint is None
    assert resolve_config("tiny").backbones.whisper  # backbone paths filled in: a complete config
    monkeypatch.setenv(CHECKPOINT_ENV, str(checkpoint))
    from_env = resolve_config("tiny")
    assert from_env.backbones.es4r_checkpoint == str(checkpoint)
    assert from_env.adapter.hidden == 48  # the checkpoint's architecture, not the preset's 32
    assert resolve_config("tiny", es4r_checkpoint="none").backbones.es4r_checkpoint is None  # the flag wins
    monkeypatch.setenv(CHECKPOINT_ENV, "None")
    assert resolve_config("tiny").backbones.es4r_checkpoint is None
