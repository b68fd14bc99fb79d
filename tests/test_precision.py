"""bf16, the paper's GPU precision, exercised on CPU: both generation paths with bf16
backbones, and one two-path training step under autocast."""

import torch

from es4r.audio import load_audio, log_mel

HISTORY = [("user", "hello there"), ("assistant", "hi, how are you"), ("user", "i feel sad today")]


def _bf16_model(tiny_dirs):
    from es4r.config import preset_config
    from es4r.modeling.backbones import load_llm, load_whisper
    from es4r.modeling.model import ES4RModel

    torch.manual_seed(0)
    whisper = load_whisper(str(tiny_dirs["whisper"]), "cpu", "bf16")
    llm = load_llm(str(tiny_dirs["llm"]), "cpu", "bf16")
    assert next(llm.model.parameters()).dtype == torch.bfloat16
    return ES4RModel(whisper, llm, preset_config("tiny")).eval()


def test_bf16_generation_on_both_paths(tiny_dirs, speech_paths):
    model = _bf16_model(tiny_dirs)
    features = [torch.from_numpy(log_mel(load_audio(p).samples, 80)) for p in speech_paths]
    speech, encoding = model.generate(HISTORY, features)
    text, _ = model.generate(HISTORY, None)
    assert speech.speech_path and speech.token_ids and text.token_ids
    assert torch.isfinite(encoding.embeddings.float()).all()
    assert torch.isfinite(speech.cross_weights).all()


def test_one_training_step_under_bf16_autocast(tiny_dirs, tmp_path):
    from es4r.data.manifest import ManifestDataset, load_manifest
    from es4r.training.losses import two_path_loss
    from tests.test_training import _rows, _write_manifest

    from es4r.config import preset_config
    from es4r.modeling.backbones import load_llm, load_whisper
    from es4r.modeling.model import ES4RModel

    torch.manual_seed(0)
    model = ES4RModel(load_whisper(str(tiny_dirs["whisper"]), "cpu"), load_llm(str(tiny_dirs["llm"]), "cpu"),
                      preset_config("tiny")).train()
    samples = list(ManifestDataset(load_manifest(_write_manifest(tmp_path, _rows(tmp_path))), 80))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = two_path_loss(model, samples, temperature=2.0)
    result.loss.backward()
    assert torch.isfinite(result.loss) and result.ce > 0
    grads = [p.grad for p in model.cross.parameters() if p.grad is not None]
    grads += [p.grad for p in model.adapter.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_casting_the_model_casts_every_network(tiny_dirs, speech_paths):
    """ES4RModel registers everything it runs (Whisper included): one .to() casts it all."""
    from es4r.config import preset_config
    from es4r.modeling.backbones import load_llm, load_whisper
    from es4r.modeling.model import ES4RModel

    model = ES4RModel(load_whisper(str(tiny_dirs["whisper"]), "cpu"), load_llm(str(tiny_dirs["llm"]), "cpu"),
                      preset_config("tiny")).eval()
    model.to(torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert next(model.whisper.model.get_encoder().parameters()).dtype == torch.bfloat16
    features = [torch.from_numpy(log_mel(load_audio(p).samples, 80)) for p in speech_paths]
    speech, _ = model.generate(HISTORY, features)
    assert speech.token_ids and torch.isfinite(speech.cross_weights).all()


def test_gpu_branches_with_the_device_check_mocked(monkeypatch, tiny_dirs):
    """Where several GPUs are present, the LLM loads in bf16 sharded by a device map; one GPU:
    bf16, moved to it. (The CUDA checks are mocked; the loader is the real code path.)"""
    import es4r.modeling.backbones as backbones

    seen = {}

    class FakeModel(torch.nn.Module):
        @classmethod
        def from_pretrained(cls, path, **kwargs):
            seen.update(kwargs, path=path)
            raise RuntimeError("stop after the arguments were chosen")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    import transformers

    monkeypatch.setattr(transformers, "AutoModelForCausalLM", FakeModel)
    for gpus, device_map in ((2, "auto"), (1, None)):
        seen.clear()
        monkeypatch.setattr(torch.cuda, "device_count", lambda gpus=gpus: gpus)
        try:
            backbones.load_llm(str(tiny_dirs["llm"]), "auto")
        except RuntimeError:
            pass
        assert seen["dtype"] == torch.bfloat16 and seen.get("device_map") == device_map
    assert backbones.resolve_device("auto").type == "cuda"


def test_training_autocasts_to_bf16_on_a_gpu(monkeypatch):
    """The training accelerator: bf16 mixed precision on a GPU, full precision on a CPU.
    (The CUDA check is mocked; `Accelerator` records its arguments instead of taking a GPU.)"""
    import accelerate

    from es4r.config import TrainConfig
    from es4r.training.trainer import make_accelerator

    seen = {}
    monkeypatch.setattr(accelerate, "Accelerator", lambda **kwargs: seen.update(kwargs) or "accelerator")
    config = TrainConfig(grad_accum=3)
    for on_gpu, precision in ((True, "bf16"), (False, "no")):
        seen.clear()
        monkeypatch.setattr(torch.cuda, "is_available", lambda on_gpu=on_gpu: on_gpu)
        assert make_accelerator(config) == "accelerator"
        assert seen == {"gradient_accumulation_steps": 3, "cpu": not on_gpu, "mixed_precision": precision}


def test_a_cpu_trains_in_bf16_only_when_asked(monkeypatch, caplog):
    """`cpu_bf16` turns bf16 autocast on for a CPU (the paper's precision; 1.5x faster per step
    on a CPU with AMX), says so in the log, and warns where the CPU has no bf16 matrix units."""
    import logging

    import accelerate

    from es4r.config import TrainConfig
    from es4r.training.trainer import make_accelerator

    seen = {}
    monkeypatch.setattr(accelerate, "Accelerator", lambda **kwargs: seen.update(kwargs) or "accelerator")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    make_accelerator(TrainConfig())
    assert seen["mixed_precision"] == "no" and seen["cpu"]
    for supported, level in ((True, logging.INFO), (False, logging.WARNING)):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda supported=supported: supported)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="es4r.training.trainer"):
            make_accelerator(TrainConfig(cpu_bf16=True))
        assert seen["mixed_precision"] == "bf16" and seen["cpu"]
        assert [r.levelno for r in caplog.records if "bf16 autocast" in r.getMessage()] == [level]


def test_log_mel_stays_fp32_inside_a_bf16_training_step(speech_paths):
    """Affect pairs prepare their samples inside the training step's autocast; with
    `cpu_bf16` the log-mel came back in bf16 and failed (found in a bf16 run's stage 2)."""
    import numpy as np

    from es4r.audio import load_audio, log_mel

    samples = load_audio(speech_paths[0]).samples
    plain = log_mel(samples, 80)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = log_mel(samples, 80)
    assert inside.dtype == np.float32 and np.array_equal(inside, plain)
