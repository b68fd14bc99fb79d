"""The ASR stage's short greedy loop (es4r/modeling/asr.py) writes what transformers' Whisper
`generate` writes, on real speech, with its steps in torch and in ONNX Runtime
(es4r/modeling/whisper_onnx.py); a multilingual Whisper keeps `generate`."""

from pathlib import Path

import numpy as np
import pytest
import torch

from es4r.audio import load_audio
from es4r.modeling.asr import MAX_TOKENS, fixed_prompt, greedy_tokens, transcribe

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"


@pytest.mark.slow
def test_the_greedy_loop_writes_what_generate_writes(embedded_untrained, speech_paths):
    whisper = embedded_untrained.model.whisper
    model = whisper.model
    assert fixed_prompt(model) is not None  # the embedded tiny.en: English-only, fixed prompt
    assert whisper.runtime is not None  # the embedded preset decodes in ONNX Runtime on a CPU
    clips = list(speech_paths) + sorted(EXAMPLES.glob("*.wav"))
    assert len(clips) >= 8
    tone = (0.1 * np.sin(np.arange(32000) * 2 * np.pi * 440 / 16000)).astype(np.float32)
    for name, samples in [(p.name, load_audio(p).samples) for p in clips] + [("silence", np.zeros(16000, np.float32)),
                                                                           ("tone", tone)]:
        features = whisper.processor.feature_extractor(samples, sampling_rate=16000, return_tensors="pt").input_features
        with torch.no_grad():
            expected = model.generate(features, max_new_tokens=MAX_TOKENS)[0].tolist()
        loop = greedy_tokens(model, features, MAX_TOKENS)
        assert greedy_tokens(model, features, MAX_TOKENS, whisper.runtime) == loop, name
        # generate may hand back the prompt before, and the end-of-text token after, the same tokens
        if expected[:2] == fixed_prompt(model):
            expected = expected[2:]
        if expected and expected[-1] == model.generation_config.eos_token_id:
            expected = expected[:-1]
        assert loop == expected and (len(loop) >= 5 or name in ("silence", "tone")), name
        assert transcribe(whisper, samples, 16000) == whisper.processor.tokenizer.decode(loop, skip_special_tokens=True).strip()


def test_onnx_steps_write_the_torch_loops_tokens(tiny_dirs, speech_paths):
    """A random tiny Whisper (another size than the embedded one) through the ONNX Runtime
    steps: the same tokens as the torch loop, the prompt read in one run; no bans broken."""
    from es4r.modeling.backbones import load_whisper
    from es4r.modeling.whisper_onnx import WhisperRuntime

    whisper = load_whisper(str(tiny_dirs["whisper"]), "cpu")
    model, config = whisper.model, whisper.model.generation_config
    config.is_multilingual = False  # English-only, "no timestamps": the fixed prompt the loop takes
    config.no_timestamps_token_id = whisper.processor.tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    assert len(fixed_prompt(model)) == 2
    steps = WhisperRuntime(model)
    for samples in (load_audio(speech_paths[0]).samples, np.zeros(16000, np.float32)):
        features = whisper.processor.feature_extractor(samples, sampling_rate=16000, return_tensors="pt").input_features
        expected = greedy_tokens(model, features, 24)
        assert greedy_tokens(model, features, 24, steps) == expected and len(expected) == 24  # random: no end token
        assert not set(expected) & set(config.suppress_tokens or [])
    with pytest.raises(ValueError, match="positions"):
        greedy_tokens(model, features, model.config.max_target_positions, steps)


def test_a_multilingual_whisper_keeps_generate(tiny_dirs):
    from es4r.modeling.backbones import load_whisper

    from es4r.modeling.whisper_onnx import WhisperRuntime

    whisper = load_whisper(str(tiny_dirs["whisper"]), "cpu")
    whisper.model.generation_config.is_multilingual = True
    assert fixed_prompt(whisper.model) is None
    assert WhisperRuntime(whisper.model).step is None  # only its encoder runs in ONNX Runtime
    whisper.model.generation_config.is_multilingual = False
    whisper.model.generation_config.no_timestamps_token_id = None
    assert fixed_prompt(whisper.model) is None  # no way to say "no timestamps": generate decides
