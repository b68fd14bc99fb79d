"""How a turn was spoken, beside S' (es4r/modeling/prosody.py): the measures, the closed gate, and
the gates' own learning rate."""

import numpy as np
import pytest
import torch

from es4r.audio import load_audio, log_mel
from es4r.modeling.prosody import prosody_features, turn_level

HISTORY = [("user", "hello there"), ("assistant", "hi, how are you"), ("user", "i feel sad today")]


def test_level_follows_gain_in_decibels(speech_paths):
    samples = load_audio(speech_paths[0]).samples
    quiet, loud = (turn_level(torch.from_numpy(log_mel(samples * gain, 80))) for gain in (0.25, 0.5))
    # +6 dB is log10(4) / 4 = 0.15 in Whisper's scaled log-mel
    assert loud - quiet == pytest.approx(np.log10(4) / 4, abs=0.02)


def test_features_are_centred_and_scaled():
    values = prosody_features([1.0, 1.15, 1.3], [100, 100, 100], [10, 10, 10], level_scale=0.15, rate_scale=0.12)
    assert values[:, 0].tolist() == pytest.approx([-1.0, 0.0, 1.0])
    assert values[:, 1].tolist() == pytest.approx([0.0, 0.0, 0.0])  # same rate everywhere
    faster = prosody_features([1.0, 1.0], [100, 80], [10, 10], 0.15, 0.12)
    assert faster[1, 1] > 0 > faster[0, 1]  # fewer frames for the same tokens: spoken faster


def test_prosody_reaches_s_prime_only_through_its_gate(tiny_model, speech_paths):
    samples = [load_audio(p).samples for p in speech_paths]
    turns = [torch.from_numpy(log_mel(samples[0] * g, 80)) for g in (1.0, 0.5)] + \
        [torch.from_numpy(log_mel(samples[2] * 0.25, 80))]
    encoding = tiny_model.encode_speech([turns])
    speech = encoding.embeddings[0, : int(encoding.lengths[0])]
    parts = tiny_model.prompt_parts(HISTORY)
    spans = tiny_model.heard_spans(turns, encoding)
    prosody = tiny_model.heard_prosody(turns, encoding)
    with torch.no_grad():
        plain = tiny_model.speech_context(speech, spans, parts)
        closed = tiny_model.speech_context(speech, spans, parts, prosody)
        assert torch.equal(plain.middle, closed.middle)  # gate closed at initialisation: no effect
        assert closed.prosody[:, 0].tolist() == sorted(closed.prosody[:, 0].tolist(), reverse=True)  # quieter
        tiny_model.cross.prosody_gate.fill_(0.5)
        try:
            opened = tiny_model.speech_context(speech, spans, parts, prosody)
        finally:
            tiny_model.cross.prosody_gate.zero_()
    assert not torch.allclose(opened.middle, plain.middle)


def test_gates_train_at_their_own_rate(tiny_model):
    from es4r.config import TrainConfig
    from es4r.training.trainer import parameter_groups, trainable_parameters

    config = TrainConfig(manifest="unused.jsonl", lr=1e-3, gate_lr_scale=20.0)
    groups = parameter_groups(tiny_model, config, [])
    gates = {id(tiny_model.cross.gate), id(tiny_model.cross.prosody_gate)}
    assert {id(p) for p in groups[1]["params"]} == gates
    assert groups[1]["lr"] == pytest.approx(0.02) and groups[1]["weight_decay"] == 0.0
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(trainable_parameters(tiny_model))


def test_affect_head_trains_at_its_own_rate(tiny_model):
    from es4r.config import TrainConfig
    from es4r.training.losses import AffectHead
    from es4r.training.trainer import parameter_groups

    head = AffectHead(8)
    config = TrainConfig(manifest="unused.jsonl", lr=1e-3, weight_decay=0.05, affect_head_lr_scale=25.0)
    groups = parameter_groups(tiny_model, config, list(head.parameters()))
    assert {id(p) for p in groups[-1]["params"]} == {id(p) for p in head.parameters()}
    assert groups[-1]["lr"] == pytest.approx(0.025) and groups[-1]["weight_decay"] == 0.05
    assert all(id(p) not in {id(q) for q in head.parameters()} for g in groups[:-1] for p in g["params"])
