import torch

from es4r.config import DualAttentionConfig
from es4r.modeling.dual_attention import DualLevelAttention


def _module(enabled=True):
    torch.manual_seed(0)
    module = DualLevelAttention(16, DualAttentionConfig(intra_heads=4, inter_heads=2, dropout=0.0, enabled=enabled)).eval()
    for block in (module.intra, module.inter):  # trained-looking, non-zero output projections
        torch.nn.init.normal_(block.attention.out_proj.weight, std=0.2)
    return module


def _turns(seed, lengths=(10, 7, 12)):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(16, n, generator=generator) for n in lengths]


def test_untrained_blocks_pass_features_through():
    module = DualLevelAttention(16, DualAttentionConfig(intra_heads=4, inter_heads=4, dropout=0.0, downsample=1)).eval()
    turns = _turns(0)
    out = module([turns])
    assert torch.equal(out.features[0], torch.cat(turns, dim=1))


def test_downsampling_and_shapes():
    module = _module()
    out = module([_turns(0)])
    assert out.turn_lengths == [[5, 4, 6]]  # ceil(n / 2)
    assert out.features.shape == (1, 16, 15) and out.lengths.tolist() == [15]
    assert [w.shape for w in out.intra_weights[0]] == [(4, 5, 5), (4, 4, 4), (4, 6, 6)]
    assert out.inter_weights[0].shape == (2, 15, 15)
    for w in [*out.intra_weights[0], out.inter_weights[0]]:
        assert torch.allclose(w.sum(-1), torch.ones(w.shape[:-1]), atol=1e-5)


def test_intra_turn_attention_never_crosses_turns_but_inter_does():
    module = _module()
    turns = _turns(0)
    changed = list(turns)
    changed[2] = torch.randn(16, 12) * 5  # change only the last turn
    with torch.no_grad():
        padded_a = module.intra(torch.nn.utils.rnn.pad_sequence([module.downsample(t).T for t in turns], batch_first=True))[0]
        padded_b = module.intra(torch.nn.utils.rnn.pad_sequence([module.downsample(t).T for t in changed], batch_first=True))[0]
        full_a, full_b = module([turns]), module([changed])
    # intra-turn outputs of turns 0 and 1 are untouched by turn 2
    assert torch.equal(padded_a[:2], padded_b[:2])
    # and through forward, as users run it: turns 0 and 1 attend only within themselves
    for turn in (0, 1):
        assert torch.equal(full_a.intra_weights[0][turn], full_b.intra_weights[0][turn])
    assert not torch.equal(full_a.intra_weights[0][2], full_b.intra_weights[0][2])
    # after inter-turn attention, the first turn's frames see the change
    assert not torch.allclose(full_a.features[0, :, :5], full_b.features[0, :, :5])


def test_batch_of_dialogues_matches_single():
    module = _module()
    a, b = _turns(1, (8, 9)), _turns(2, (6,))
    batch = module([a, b])
    single = module([b])
    assert torch.allclose(batch.features[1, :, :3], single.features[0], atol=1e-5)


def test_ablation_switch_is_identity():
    module = _module(enabled=False)
    turns = _turns(0)
    out = module([turns])
    assert torch.equal(out.features[0], torch.cat([module.downsample(t) for t in turns], dim=1))
    assert out.inter_weights == []


def test_without_weights_the_same_features_and_no_weights():
    """The speech path's pass on the way to the first word (each turn unpadded, the fused
    kernel): the features of the pass with weights, and no weights kept."""
    module = _module()
    for dialogues in ([_turns(0)], [_turns(1, (8, 9)), _turns(2, (6,))]):
        with torch.no_grad():
            weighed, fused = module(dialogues), module(dialogues, need_weights=False)
        assert torch.allclose(fused.features, weighed.features, atol=1e-5)
        assert not torch.equal(fused.features, torch.cat([module.downsample(t) for t in dialogues[0]], 1)[None])
        assert fused.turn_lengths == weighed.turn_lengths and torch.equal(fused.lengths, weighed.lengths)
        assert fused.inter_weights == [] and all(w == [] for w in fused.intra_weights)
