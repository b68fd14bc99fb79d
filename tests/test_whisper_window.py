"""Whisper's encoder over fewer frames than its window (es4r/modeling/whisper_window.py): the
same layers as transformers' forward, read on the speech path over the frames present plus a
tail of padding."""

import torch

from es4r.audio import load_audio, log_mel
from es4r.config import WindowConfig
from es4r.modeling.whisper_window import encode, encoder_layers, window_frames


def test_window_frames():
    assert window_frames(754, None, 3000) == 3000  # no tail: Whisper's own window
    assert window_frames(754, 600, 3000) == 1354
    assert window_frames(755, 600, 3000) == 1356  # even: the second convolution halves it
    assert window_frames(2900, 600, 3000) == 3000  # never past the window
    assert window_frames(0, 0, 3000) == 0


def test_the_layers_are_transformers_forward_over_the_whole_window(tiny_model):
    encoder = tiny_model.whisper.model.get_encoder()
    features = torch.randn(2, tiny_model.whisper.n_mels, tiny_model.max_frames)
    with torch.no_grad():
        assert torch.equal(encoder_layers(encoder, features), encoder(features).last_hidden_state)


def test_a_shorter_window_reads_fewer_positions_and_the_first_ones_stay_close(tiny_model):
    encoder = tiny_model.whisper.model.get_encoder()
    torch.manual_seed(1)
    full = torch.randn(1, tiny_model.whisper.n_mels, tiny_model.max_frames)
    with torch.no_grad():
        whole = encode(encoder, full)
        short = encode(encoder, full[..., :400])
    assert short.shape == (1, 200, whole.shape[-1])
    assert not torch.equal(short, whole[:, :200])  # attention read the rest of the window too
    assert torch.nn.functional.cosine_similarity(short, whole[:, :200], dim=-1).mean() > 0.5


def test_the_speech_path_encodes_only_the_turns_and_their_tail(tiny_model, speech_paths):
    features = [torch.from_numpy(log_mel(load_audio(p).samples, 80)) for p in speech_paths]
    seen = []
    encoder = tiny_model.whisper.model.get_encoder()
    handle = encoder.conv1.register_forward_hook(lambda module, args, output: seen.append(args[0].shape[-1]))
    try:
        with torch.no_grad():
            whole = tiny_model.encode_speech([features])
            tailed = tiny_model.with_config(tiny_model.config.replace(window=WindowConfig(speech_tail_frames=100)))
            short = tailed.encode_speech([features])
            covering = tiny_model.with_config(tiny_model.config.replace(window=WindowConfig(speech_tail_frames=10_000)))
            same = covering.encode_speech([features])
    finally:
        handle.remove()
    valid = int(whole.dual.lengths[0])
    assert seen == [tiny_model.max_frames, window_frames(valid, 100, tiny_model.max_frames), tiny_model.max_frames]
    assert seen[1] < tiny_model.max_frames
    assert torch.equal(short.lengths, whole.lengths) and short.embeddings.shape == whole.embeddings.shape
    assert short.turn_spans == whole.turn_spans
    assert not torch.equal(short.embeddings, whole.embeddings)
    assert torch.equal(same.embeddings, whole.embeddings)  # a tail past the window is the window


def test_onnx_runtime_encodes_as_the_torch_layers_do_without_a_gradient(tiny_model):
    """es4r/modeling/whisper_onnx.py's encoder: the whole window and a shorter one, a batch of
    two, to float rounding of torch's; where a gradient is wanted, torch's own."""
    from es4r.modeling.whisper_onnx import WhisperRuntime

    encoder = tiny_model.whisper.model.get_encoder()
    runtime = WhisperRuntime(tiny_model.whisper.model)
    torch.manual_seed(2)
    for frames in (tiny_model.max_frames, 600):
        features = torch.randn(2, tiny_model.whisper.n_mels, frames)
        with torch.no_grad():
            expected, got = encode(encoder, features), encode(encoder, features, runtime)
        assert got.shape == expected.shape == (2, frames // 2, encoder.config.d_model)
        assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    features.requires_grad_(True)
    assert encode(encoder, features, runtime).grad_fn is not None  # training's pass stays in torch
