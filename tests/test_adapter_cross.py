import torch

from es4r.config import AdapterConfig, CrossModalConfig
from es4r.modeling.adapter import ModalityAdapter
from es4r.modeling.cross_modal import NO_TURN, CrossModalAttention


def test_adapter_shortens_by_eight_and_maps_width():
    adapter = ModalityAdapter(48, 96, AdapterConfig())
    for length in (8, 64, 1500, 37):
        out = adapter(torch.randn(2, length, 48))
        assert out.shape == (2, adapter.output_length(length), 96)
        assert adapter.output_length(length) == -(-length // 8)
    convs = [m for m in adapter.layers if isinstance(m, torch.nn.Conv1d)]
    assert [(c.kernel_size[0], c.stride[0]) for c in convs] == [(5, 2)] * 3
    assert convs[0].out_channels == 512 and convs[1].out_channels == 512


def test_adapter_output_is_on_the_llm_embedding_scale():
    adapter = ModalityAdapter(48, 96, AdapterConfig(), output_rms=0.1)
    out = adapter(torch.randn(2, 64, 48) * 50)  # loud encoder features
    rms = out.pow(2).mean(-1).sqrt()
    assert torch.allclose(rms, torch.full_like(rms, 0.1), rtol=0.05)


def _turns(*sizes: int, pad: int = 0) -> torch.Tensor:
    ids = [turn for turn, size in enumerate(sizes) for _ in range(size)] + [NO_TURN] * pad
    return torch.tensor([ids])


def test_cross_modal_is_block_diagonal_with_a_diagonal_per_turn():
    torch.manual_seed(0)
    block = CrossModalAttention(32, CrossModalConfig(heads=4, dropout=0.0)).eval()
    speech_turn, text_turn = _turns(4, 6, pad=1), _turns(5, 9, pad=2)
    speech, text = torch.randn(1, 11, 32), torch.randn(1, 16, 32)
    out, weights = block(speech, text, speech_turn, text_turn)
    assert out.shape == speech.shape and weights.shape == (1, 11, 16)
    rows = weights[0]
    assert torch.allclose(rows[:10].sum(-1), torch.ones(10), atol=1e-5)  # each speech position reads its turn
    assert torch.all(rows[:4, 5:] == 0) and torch.all(rows[4:10, :5] == 0)  # never another turn's tokens
    assert torch.all(rows[:, 14:] == 0)  # padding tokens are never attended
    assert torch.all(rows[10] == 0)  # a padding speech position reads nothing
    for start, stop, first, last in ((0, 4, 0, 4), (4, 10, 5, 13)):
        peaks = rows[start:stop].argmax(-1)
        assert peaks[0] == first and peaks[-1] == last  # a turn's start reads its label, its end the last token
        assert torch.all(peaks[1:] >= peaks[:-1])  # monotonic in time
    assert rows[:10].max(-1).values.min() > 0.5  # sharp at initialisation (sigma 0.5 token)


def test_untrained_cross_modal_output_is_the_history_read_in_order():
    """Identity value/output, zero query, closed gate: S' = A · E_text, whatever S holds."""
    torch.manual_seed(0)
    block = CrossModalAttention(32, CrossModalConfig(heads=4, dropout=0.0)).eval()
    speech_turn, text_turn = _turns(3, 5), _turns(4, 7)
    text = torch.randn(1, 11, 32)
    a, weights = block(torch.randn(1, 8, 32), text, speech_turn, text_turn)
    b, _ = block(torch.randn(1, 8, 32) * 10, text, speech_turn, text_turn)
    assert torch.allclose(a, weights @ text, atol=1e-5)
    assert torch.allclose(a, b, atol=1e-6)  # the speech values do not enter yet


def test_trained_cross_modal_depends_on_the_speech():
    torch.manual_seed(0)
    block = CrossModalAttention(32, CrossModalConfig(heads=4, dropout=0.0)).eval()
    speech_turn, text_turn = _turns(3, 5), _turns(4, 7)
    text = torch.randn(1, 11, 32)
    with torch.no_grad():
        block.gate.fill_(0.5)
        torch.nn.init.normal_(block.query.weight, std=0.5)
    a, wa = block(torch.randn(1, 8, 32), text, speech_turn, text_turn)
    b, wb = block(torch.randn(1, 8, 32), text, speech_turn, text_turn)
    assert not torch.allclose(a, b) and not torch.allclose(wa, wb)
    assert torch.all(wa[0, :3, 4:] == 0)  # the turn-block mask holds after training too


def test_cross_modal_ablation_passes_speech_through():
    block = CrossModalAttention(32, CrossModalConfig(heads=4, dropout=0.0, enabled=False)).eval()
    speech = torch.randn(1, 8, 32)
    out, weights = block(speech, torch.randn(1, 11, 32), _turns(3, 5), _turns(4, 7))
    assert torch.equal(out, speech) and torch.all(weights == 0)
