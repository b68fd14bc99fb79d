import torch

from es4r.adapter import ModalityAdapter
from es4r.config import AdapterConfig, CrossModalConfig
from es4r.cross_modal import CrossModalAttention


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


def test_cross_modal_rows_sum_to_one_over_text():
    torch.manual_seed(0)
    block = CrossModalAttention(32, CrossModalConfig(heads=4, dropout=0.0)).eval()
    speech, text = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    padding = torch.zeros(2, 7, dtype=torch.bool)
    padding[1, 5:] = True
    out, weights = block(speech, text, padding)
    assert out.shape == speech.shape and weights.shape == (2, 5, 7)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 5), atol=1e-5)
    assert torch.all(weights[1, :, 5:] == 0)  # padding is never attended
    assert torch.equal(out, speech)  # zero-initialised output projection: untrained = identity


def test_cross_modal_uses_text_when_trained():
    torch.manual_seed(0)
    block = CrossModalAttention(32, CrossModalConfig(heads=4, dropout=0.0)).eval()
    torch.nn.init.normal_(block.attention.out_proj.weight, std=0.1)
    speech = torch.randn(1, 5, 32)
    a, _ = block(speech, torch.randn(1, 7, 32))
    b, _ = block(speech, torch.randn(1, 7, 32))
    assert not torch.allclose(a, b)
