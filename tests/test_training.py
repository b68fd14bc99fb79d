"""Two-path training on real speech with tiny backbones."""

import json

import pytest
import torch

from es4r.config import TrainConfig
from es4r.data.manifest import ManifestDataset, ManifestError, load_manifest
from es4r.training.losses import TeacherCache, kl_text_speech, response_logits, two_path_loss
from es4r.training.trainer import learning_rate_factor, train
from tests.conftest import CLIPS


def _write_manifest(folder, rows):
    path = folder / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _rows(folder):
    import shutil

    names = []
    for key, (clip, _) in CLIPS.items():
        shutil.copy(clip, folder / clip.name)
        names.append((clip.name, CLIPS[key][1]))
    replies = ["i am sorry to hear that .", "that sounds hard , i am here .", "thank you for telling me ."]
    return [
        {"conversation_id": f"c{i}", "turn_id": 1, "speaker_emotion": "sad",
         "dialogue_history": ([{"index": 0, "role": "speaker", "utterance": "hello", "audio_path": names[-1][0]},
                               {"index": 1, "role": "listener", "utterance": "i see ."}] if i % 2 else [])
         + [{"index": 2, "role": "speaker", "utterance": text, "audio_path": name}],
         "response": {"utterance": replies[i]}}
        for i, (name, text) in enumerate(names)
    ]


def _model(tiny_dirs):
    from es4r.config import preset_config
    from es4r.modeling.backbones import load_llm, load_whisper
    from es4r.modeling.model import ES4RModel

    torch.manual_seed(0)
    return ES4RModel(load_whisper(str(tiny_dirs["whisper"]), "cpu"), load_llm(str(tiny_dirs["llm"]), "cpu"),
                     preset_config("tiny"))


def test_manifest_errors_name_file_and_line(tmp_path):
    rows = _rows(tmp_path)
    path = _write_manifest(tmp_path, rows)
    assert len(load_manifest(path)) == 3
    path.write_text(json.dumps(rows[0]) + "\n{not json\n")
    with pytest.raises(ManifestError, match=r"train.jsonl:2: not valid JSON"):
        load_manifest(path)
    broken = dict(rows[0], dialogue_history=[{"role": "speaker", "utterance": "x", "audio_path": "missing.wav"}])
    path.write_text(json.dumps(broken) + "\n")
    with pytest.raises(ManifestError, match=r"train.jsonl:1 .*does not exist"):
        load_manifest(path)
    path.write_text(json.dumps({**rows[0], "response": {"utterance": ""}}) + "\n")
    with pytest.raises(ManifestError, match="response utterance is empty"):
        load_manifest(path)
    path.write_text(json.dumps({**rows[0], "dialogue_history": [{"role": "narrator", "utterance": "x"}]}) + "\n")
    with pytest.raises(ManifestError, match="role 'narrator'"):
        load_manifest(path)
    ends_with_listener = dict(rows[0], dialogue_history=rows[0]["dialogue_history"] + [{"role": "listener", "utterance": "ok"}])
    path.write_text(json.dumps(ends_with_listener) + "\n")
    with pytest.raises(ManifestError, match="last dialogue_history turn must be the speaker"):
        load_manifest(path)


def test_kl_zero_when_paths_identical():
    logits = torch.randn(6, 50)
    assert kl_text_speech(logits, logits.clone(), 2.0).abs() < 1e-6
    assert kl_text_speech(logits, torch.randn(6, 50), 2.0) > 0.01


def test_kl_direction_is_text_to_speech_as_in_the_authors_code():
    """kl_div(log_softmax(speech/T), softmax(text/T)) = sum p_text (log p_text - log p_speech)."""
    speech, text = torch.randn(4, 30), torch.randn(4, 30) * 3
    ours = kl_text_speech(speech, text, 2.0)
    reference = torch.nn.functional.kl_div(torch.log_softmax(speech / 2, -1), torch.softmax(text / 2, -1),
                                           reduction="batchmean")
    reverse = torch.nn.functional.kl_div(torch.log_softmax(text / 2, -1), torch.softmax(speech / 2, -1),
                                         reduction="batchmean")
    assert torch.allclose(ours, reference, atol=1e-5) and not torch.allclose(ours, reverse, atol=1e-3)


def test_learning_rate_warms_up_then_decays_by_cosine():
    config = TrainConfig(warmup_steps=4, min_lr_ratio=0.1)
    factors = [learning_rate_factor(step, config, 20) for step in range(21)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(factors[4:], factors[5:]))
    assert abs(factors[20] - 0.1) < 1e-9 and abs(factors[12] - 0.55) < 1e-9  # half-way down the cosine
    constant = TrainConfig(warmup_steps=0, lr_schedule="constant")
    assert [learning_rate_factor(s, constant, 20) for s in (0, 10, 19)] == [1.0, 1.0, 1.0]


def test_response_positions_line_up_across_paths():
    labels = torch.tensor([[-100, -100, 7, 8, -100], [-100, 5, 6, -100, -100]])
    logits = torch.arange(2 * 5 * 3, dtype=torch.float).view(2, 5, 3)
    picked, targets = response_logits(logits, labels)
    assert targets.tolist() == [7, 8, 5, 6]
    assert torch.equal(picked[0], logits[0, 1]) and torch.equal(picked[2], logits[1, 0])


@pytest.mark.slow
def test_loss_falls_frozen_stays_frozen_checkpoint_reproduces(tiny_dirs, tmp_path):
    model = _model(tiny_dirs)
    manifest = _write_manifest(tmp_path, _rows(tmp_path))
    frozen = {n: p.detach().clone() for n, p in model.llm.named_parameters() if "lora_" not in n}
    whisper_before = {n: p.detach().clone() for n, p in model.whisper.model.named_parameters()}
    config = TrainConfig(manifest=str(manifest), output_dir=str(tmp_path / "run"), preset="tiny", epochs=40,
                         batch_size=3, lr=1e-2, save_every=1000, max_steps=30)
    final = train(config, model=model)
    assert sorted(p.name for p in final.iterdir()) == ["es4r_config.json", "es4r_parts.safetensors"]
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 30
    first, last = sum(r["ce"] for r in log[:3]) / 3, sum(r["ce"] for r in log[-3:]) / 3
    # The frozen random LLM bounds how far PLoRA at speech positions can move the response
    # logits (measured: 5.95 -> 5.61 over 30 steps, step-to-step noise < 0.03).
    assert last < first - 0.2, (first, last)
    assert all(torch.equal(p, frozen[n]) for n, p in model.llm.named_parameters() if "lora_" not in n)
    assert all(torch.equal(p, whisper_before[n]) for n, p in model.whisper.model.named_parameters())

    model.eval()
    sample = ManifestDataset(load_manifest(manifest), 80)[0]
    with torch.no_grad():
        expected = two_path_loss(model, [sample], 2.0).loss
    from es4r.training.checkpoint import load_es4r_parts

    fresh = _model(tiny_dirs).eval()
    load_es4r_parts(fresh, final)
    with torch.no_grad():
        assert torch.equal(two_path_loss(fresh, [sample], 2.0).loss, expected)
        # kl_t2_scale multiplies the KL by T^2 and nothing else; off (the default) leaves it as it is
        plain, scaled = two_path_loss(fresh, [sample], 2.0), two_path_loss(fresh, [sample], 2.0, kl_t2_scale=True)
    assert float(plain.kl) > 0 and torch.equal(plain.ce, scaled.ce)
    assert float(scaled.kl) == pytest.approx(4.0 * float(plain.kl), rel=1e-5)
    assert float(plain.loss) == pytest.approx(float(plain.ce + plain.kl), rel=1e-5)


@pytest.mark.slow
def test_two_processes_under_accelerate_sync_gradients(tiny_dirs, tmp_path):
    """`accelerate launch --multi_gpu` with 2 processes (gloo on CPU): each sees a different sample, and after a
    step both hold identical parameters (gradients were all-reduced)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    manifest = _write_manifest(tmp_path, _rows(tmp_path)[:2])
    worker = Path(__file__).parent / "accelerate_worker.py"
    root = str(Path(__file__).resolve().parent.parent)  # the worker imports es4r from the checkout
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
    run = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
         str(worker), str(tiny_dirs["whisper"]), str(tiny_dirs["llm"]), str(manifest), str(tmp_path)],
        capture_output=True, text=True, timeout=400, env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == "2" for r in ranks)
    assert ranks[0]["before"] == ranks[1]["before"]
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == 1
    assert ranks[0]["seen"] != ranks[1]["seen"]  # the data was sharded: each process its own sample
    assert ranks[0]["after"] != ranks[0]["before"]  # the step changed the weights
    assert ranks[0]["after"] == ranks[1]["after"]  # and identically on both processes


def test_kept_snapshots_and_held_out_loss_are_logged(tiny_dirs, tmp_path):
    model = _model(tiny_dirs)
    manifest = _write_manifest(tmp_path, _rows(tmp_path))
    config = TrainConfig(manifest=str(manifest), val_manifest=str(manifest), output_dir=str(tmp_path / "run"),
                         preset="tiny", epochs=10, batch_size=3, lr=1e-2, save_every=1000, keep_every=2,
                         max_steps=5)
    train(config, model=model)
    run = tmp_path / "run"
    assert sorted(p.name for p in run.glob("step-*")) == ["step-000000", "step-000002", "step-000004", "step-000005"]
    rows = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    held_out = [r for r in rows if "val_ce" in r]
    assert [r["step"] for r in held_out] == [0, 2, 4, 5]
    assert all(r["val_ce"] > 0 and r["val_kl"] >= 0 for r in held_out)
    assert all(-1.0 <= r["speech_cos_within"] <= 1.0 and -1.0 <= r["speech_cos_between"] <= 1.0 for r in held_out)
    # validation switches dropout off only for itself: training mode is restored
    assert all(m.training for m in model.trainable_modules().values())
    # a snapshot is a loadable checkpoint of the parts at that step
    from es4r.training.checkpoint import load_es4r_parts

    fresh = _model(tiny_dirs)
    load_es4r_parts(fresh, run / "step-000005")
    assert torch.equal(fresh.adapter.norm.weight, model.adapter.norm.weight)


def test_speech_diversity_tells_a_constant_prompt_from_real_input(tiny_dirs, tmp_path):
    from es4r.training.trainer import speech_diversity

    model = _model(tiny_dirs)
    samples = list(ManifestDataset(load_manifest(_write_manifest(tmp_path, _rows(tmp_path))), 80))
    varied = speech_diversity(model, samples)
    assert varied["speech_cos_within"] < 0.9 and varied["speech_cos_between"] < 0.99
    with torch.no_grad():  # what the collapsed CPU run learned: the output ignores the audio
        for layer in model.adapter.layers:
            if isinstance(layer, torch.nn.Conv1d):
                layer.weight.zero_()
        model.adapter.norm.bias.normal_()
    constant = speech_diversity(model, samples)
    assert constant["speech_cos_within"] > 0.99 and constant["speech_cos_between"] > 0.99


def test_teacher_reads_the_affect_hint_and_is_computed_once(tiny_dirs, tmp_path, monkeypatch):
    """The text-path teacher gets the sample's hint in its system prompt (the student never
    does), and its logits are cached per sample key: a second epoch does not rerun it."""
    from dataclasses import replace

    from es4r.training.losses import teacher_logits

    model = _model(tiny_dirs).eval()
    rows = _rows(tmp_path)
    rows[0]["affect_hint"] = "The user's voice has been getting quieter and slower with each turn."
    item = ManifestDataset(load_manifest(_write_manifest(tmp_path, rows)), 80)[0]
    plain = replace(item, sample=replace(item.sample, affect_hint=None))
    tokens = [model.tokenizer("i see .", add_special_tokens=False).input_ids + [model.tokenizer.eos_token_id]]
    hinted = teacher_logits(model, [item], tokens, None)
    assert hinted.shape[0] == len(tokens[0])
    assert not torch.allclose(hinted, teacher_logits(model, [plain], tokens, None))
    cache = TeacherCache()
    first = teacher_logits(model, [item], tokens, cache)
    monkeypatch.setattr(model, "path_logits", lambda *a: pytest.fail("teacher ran twice"))
    assert torch.allclose(teacher_logits(model, [item], tokens, cache), first, atol=1e-2)


def test_staged_training_keeps_plora_frozen_until_its_step(tiny_dirs, tmp_path):
    model = _model(tiny_dirs)
    manifest = _write_manifest(tmp_path, _rows(tmp_path))
    lora = {n: p.detach().clone() for n, p in model.llm.named_parameters() if "lora_" in n}
    adapter = model.adapter.layers[0].weight.detach().clone()
    config = TrainConfig(manifest=str(manifest), output_dir=str(tmp_path / "run"), preset="tiny", epochs=5,
                         batch_size=3, lr=1e-2, save_every=1000, max_steps=2, plora_start_step=5, warmup_steps=1)
    train(config, model=model)
    assert all(torch.equal(p, lora[n]) for n, p in model.llm.named_parameters() if "lora_" in n)
    assert not torch.equal(model.adapter.layers[0].weight, adapter)
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [round(r["lr"], 6) for r in log] == [0.01, 0.001]  # warmup 1 step, then cosine down to 10 %


def test_checkpoint_refuses_other_module_settings_and_pipeline_restores_them(tiny_dirs, tmp_path):
    from es4r.config import CrossModalConfig, preset_config
    from es4r.training.checkpoint import load_es4r_parts, restore_architecture, save_es4r_parts

    model = _model(tiny_dirs)
    save_es4r_parts(model, tmp_path / "ckpt")
    other = preset_config("tiny")
    other = other.replace(cross=CrossModalConfig(heads=2, prior_sigma=1.0))
    from es4r.modeling.backbones import load_llm, load_whisper
    from es4r.modeling.model import ES4RModel

    wrong = ES4RModel(load_whisper(str(tiny_dirs["whisper"]), "cpu"), load_llm(str(tiny_dirs["llm"]), "cpu"), other)
    with pytest.raises(ValueError, match=r"cross.prior_sigma: checkpoint 0.5 vs model 1.0"):
        load_es4r_parts(wrong, tmp_path / "ckpt")
    restored = restore_architecture(other, tmp_path / "ckpt")
    assert restored.cross.prior_sigma == 0.5


def test_auxiliary_affect_loss_is_logged_and_needs_speech_that_varies(tiny_dirs, tmp_path):
    from es4r.training.losses import AffectHead, affect_loss

    model = _model(tiny_dirs)
    manifest = _write_manifest(tmp_path, _rows(tmp_path))
    samples = list(ManifestDataset(load_manifest(manifest), 80))
    head = AffectHead(64)
    encoding = model.encode_speech([s.features for s in samples])
    speech = [encoding.embeddings[b, : int(encoding.lengths[b])] for b in range(len(samples))]
    spans = [model.heard_spans(s.features, encoding, b) for b, s in enumerate(samples)]
    assert affect_loss(head, samples, speech, spans) > 0
    constant = [torch.ones_like(v) for v in speech]  # a constant S: the head can only learn the mean
    optimiser = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(200):
        optimiser.zero_grad()
        floor = affect_loss(head, samples, constant, spans)
        floor.backward()
        optimiser.step()
    assert floor.item() > 1e-3  # the turns differ in energy and pace; a constant input cannot say how

    config = TrainConfig(manifest=str(manifest), output_dir=str(tmp_path / "run"), preset="tiny", epochs=2,
                         batch_size=3, lr=1e-2, save_every=1000, max_steps=2, affect_loss_weight=1.0)
    train(config, model=model)
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert all(r["affect"] > 0 for r in log)
    assert all(abs(r["loss"] - r["ce"] - r["kl"] - r["affect"]) < 1e-4 for r in log)


def test_train_command_flags_override_the_config_file(tmp_path, monkeypatch, capsys):
    """`python -m es4r train --config X --init-from Y --seed N`: how a stage is continued
    (assets/TRAINING_CPU.md); flags win over the file, the rest of the file stays."""
    import es4r.training.trainer as training
    from es4r.cli import main

    (tmp_path / "stage.yaml").write_text("manifest: corpus/train.jsonl\nlr: 0.003\nseed: 1\nmax_steps: 60\n")
    seen = []
    monkeypatch.setattr(training, "train", lambda config, build_model: seen.append(config) or tmp_path / "final")
    assert main(["train", "--config", str(tmp_path / "stage.yaml"), "--init-from", "runs/a/final",
                 "--seed", "45", "--output-dir", "runs/b"]) == 0
    config = seen[0]
    assert (config.init_from, config.seed, config.output_dir) == ("runs/a/final", 45, "runs/b")
    assert (config.lr, config.max_steps, config.manifest) == (0.003, 60, "corpus/train.jsonl")
    assert json.loads(capsys.readouterr().out) == {"checkpoint": str(tmp_path / "final")}


def test_a_training_run_starts_from_the_untrained_parts_whatever_checkpoint_is_set(tmp_path, monkeypatch):
    """A shipped or $ES4R_CHECKPOINT checkpoint is what the app loads; a run that silently began
    from it would not be the run its config describes (`init_from` says so when meant)."""
    from es4r.presets import load_model, resolve_config
    from es4r.training.checkpoint import es4r_state_dict, save_es4r_parts
    from es4r.presets import untrained_model

    monkeypatch.delenv("ES4R_CHECKPOINT", raising=False)
    untrained = es4r_state_dict(load_model(resolve_config("tiny"), for_replies=False))
    moved = load_model(resolve_config("tiny"), for_replies=False)
    with torch.no_grad():
        for parameter in moved.adapter.parameters():
            parameter.add_(1.0)
    save_es4r_parts(moved, tmp_path / "trained")
    monkeypatch.setenv("ES4R_CHECKPOINT", str(tmp_path / "trained"))
    loaded = es4r_state_dict(load_model(resolve_config("tiny"), for_replies=False))
    assert any(not torch.equal(loaded[k], untrained[k]) for k in untrained)  # the app would load it
    fresh = es4r_state_dict(untrained_model("tiny"))
    assert fresh.keys() == untrained.keys() and all(torch.equal(fresh[k], untrained[k]) for k in untrained)


def test_speech_anchor_keeps_the_cosines_between_dialogues(tiny_dirs, tmp_path):
    """The anchor is zero for the parts it was made from and for a rescaled speech space, grows
    when the dialogues' mean vectors move relative to each other, and its gradient moves them
    back; with the weight on, training logs it as part of the loss."""
    from es4r.training.losses import SpeechAnchor

    model = _model(tiny_dirs)
    manifest = _write_manifest(tmp_path, _rows(tmp_path))
    samples = list(ManifestDataset(load_manifest(manifest), 80))
    anchor = SpeechAnchor(model)

    def speech():
        encoding = model.encode_speech([s.features for s in samples])
        return [encoding.embeddings[b, : int(encoding.lengths[b])] for b in range(len(samples))]

    model.eval()
    assert anchor(samples, speech()).item() < 1e-10
    assert anchor(samples, [3.0 * v for v in speech()]).item() < 1e-10  # scale is free
    assert anchor(samples[:1], speech()[:1]).item() == 0.0  # one dialogue has no pairs
    shift = model.adapter.norm.bias  # moves every position of every dialogue alike
    with torch.no_grad():
        shift.add_(torch.randn(shift.shape, generator=torch.Generator().manual_seed(0)) * 0.3)
    change = anchor(samples, speech())
    assert change.item() > 1e-3
    change.backward()
    start = change.item()
    with torch.no_grad():
        shift.sub_(0.05 * shift.grad / shift.grad.norm())
    assert anchor(samples, speech()).item() < start

    config = TrainConfig(manifest=str(manifest), output_dir=str(tmp_path / "run"), preset="tiny", epochs=2,
                         batch_size=3, lr=1e-2, save_every=1000, max_steps=2, speech_anchor_weight=2.0)
    train(config, model=_model(tiny_dirs))
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert all("anchor" in r for r in log) and log[-1]["anchor"] > 0
    assert all(abs(r["loss"] - r["ce"] - r["kl"] - 2.0 * r["anchor"]) < 1e-4 for r in log)


def test_a_stage_may_change_the_prompt_layout_and_nothing_else(tiny_dirs, tmp_path):
    """`history_layout` in a training stage: init_from a checkpoint trained in the paper layout,
    train in the words-then-S' layout, and the new checkpoint records it; loading it strictly
    into a paper-layout model is still refused, and a non-strict load still refuses any other
    module setting."""
    from es4r.config import CrossModalConfig, preset_config
    from es4r.modeling.backbones import load_llm, load_whisper
    from es4r.modeling.model import ES4RModel
    from es4r.training.checkpoint import (CheckpointError, load_es4r_parts, read_checkpoint_config,
                                          restore_architecture, save_es4r_parts)

    model = _model(tiny_dirs)
    save_es4r_parts(model, tmp_path / "paper")
    manifest = _write_manifest(tmp_path, _rows(tmp_path))
    config = TrainConfig(manifest=str(manifest), output_dir=str(tmp_path / "run"), preset="tiny", epochs=1,
                         batch_size=3, lr=1e-2, save_every=1000, max_steps=1, init_from=str(tmp_path / "paper"),
                         history_layout="text_and_speech")
    final = train(config, model=model)
    assert read_checkpoint_config(final).cross.history_layout == "text_and_speech"
    assert model.config.cross.history_layout == "speech"  # the model handed in is left as it was
    with pytest.raises(CheckpointError, match="cross.history_layout: checkpoint 'text_and_speech' vs model 'speech'"):
        load_es4r_parts(model, final)
    load_es4r_parts(model, final, strict=False)  # a later stage may go back
    assert restore_architecture(model.config, final).cross.history_layout == "text_and_speech"
    other = preset_config("tiny").replace(cross=CrossModalConfig(prior_sigma=1.0))
    wrong = ES4RModel(load_whisper(str(tiny_dirs["whisper"]), "cpu"), load_llm(str(tiny_dirs["llm"]), "cpu"), other)
    with pytest.raises(CheckpointError, match="cross.prior_sigma"):
        load_es4r_parts(wrong, final, strict=False)
