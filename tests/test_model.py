from dataclasses import replace

import pytest
import torch

from es4r.audio import load_audio, log_mel
from es4r.training.checkpoint import load_es4r_parts, save_es4r_parts


@pytest.fixture(scope="module")
def features(speech_paths):
    return [torch.from_numpy(log_mel(load_audio(p).samples, 80)) for p in speech_paths]


def test_encode_speech_shapes(tiny_model, features):
    enc = tiny_model.encode_speech([features])
    frames = sum(-(-f.shape[1] // 2) for f in features)
    assert enc.lengths.tolist() == [tiny_model.adapter.output_length(-(-frames // 2))]
    assert enc.embeddings.shape[-1] == 64 and enc.dropped_turns == [0]
    assert len(enc.dual.intra_weights[0]) == 3


def test_untrained_encoder_sees_original_features(tiny_model, features):
    """Zero-initialised attention outputs: the Whisper encoder gets the real log-mels."""
    tiny_model.eval()
    enc = tiny_model.encode_speech([features[:1]])
    expected = torch.cat([f[:, ::2] for f in features[:1]], dim=1)
    assert torch.equal(enc.dual.features[0], expected)


def test_untrained_whisper_encoder_input_is_the_log_mels_in_order(tiny_model, features):
    """What the frozen encoder itself receives: the downsampled log-mels of the turns in time
    order, then the silence floor up to the 30 s window."""
    seen = []
    encoder = tiny_model.whisper.model.get_encoder()
    handle = encoder.register_forward_pre_hook(lambda module, args, kwargs: seen.append(args[0] if args else
                                                                                       kwargs["input_features"]),
                                               with_kwargs=True)
    try:
        tiny_model.eval()
        tiny_model.encode_speech([features[:2]])
    finally:
        handle.remove()
    expected = torch.cat([f[:, ::2] for f in features[:2]], dim=1)
    window = seen[0][0].float()
    assert torch.equal(window[:, : expected.shape[1]], expected)
    assert torch.all(window[:, expected.shape[1]:] == window[:, -1:])  # one floor value per bin after


def test_plora_acts_at_speech_positions_during_generation(loud_plora_model, features):
    """With non-zero LoRA weights the speech path's reply changes; the text path's does not."""
    model = loud_plora_model(std=1.0)
    lora_b = [p for n, p in model.llm.named_parameters() if "lora_B" in n]
    speech_on, _ = model.generate(HISTORY, features)
    text_on, _ = model.generate(HISTORY, None)
    with torch.no_grad():
        for weight in lora_b:
            weight.zero_()
    speech_off, _ = model.generate(HISTORY, features)
    text_off, _ = model.generate(HISTORY, None)
    assert speech_on.token_ids != speech_off.token_ids
    assert text_on.token_ids == text_off.token_ids


def test_window_drops_oldest_turns_never_crashes(tiny_model):
    long_turn = torch.zeros(80, 2900)  # 29 s of frames -> 1450 after downsampling
    kept, dropped = tiny_model.fit_window([long_turn, long_turn, long_turn])
    assert dropped == 1 and len(kept) == 2
    enc = tiny_model.encode_speech([[long_turn] * 3])
    assert enc.dropped_turns == [1]


HISTORY = [("user", "hello there"), ("assistant", "hi, how are you"), ("user", "i feel sad today")]


def test_generate_both_paths(tiny_model, features):
    out, enc = tiny_model.generate(HISTORY, features)
    assert out.speech_path and enc is not None
    assert out.cross_weights.shape == (int(enc.lengths[0]), len(out.history_tokens))
    assert torch.allclose(out.cross_weights.sum(-1), torch.ones(out.cross_weights.shape[0]), atol=1e-5)
    text_out, no_enc = tiny_model.generate(HISTORY[-1:], None)
    assert not text_out.speech_path and no_enc is None and text_out.cross_weights is None


def test_generate_reuses_a_given_encoding(tiny_model, features, monkeypatch):
    """Speech is encoded once per turn: generate() takes the caller's encoding."""
    encoding = tiny_model.encode_speech([features])
    monkeypatch.setattr(tiny_model, "encode_speech", lambda *a, **k: pytest.fail("encoded twice"))
    out, same = tiny_model.generate(HISTORY, features, encoding=encoding)
    assert same is encoding and out.speech_path


def test_prompt_turn_spans_cover_the_history_in_order(tiny_model):
    parts = tiny_model.prompt_parts(HISTORY)
    assert parts.turn_spans[0][0] == 0 and parts.turn_spans[-1][1] == len(parts.history_ids)
    assert all(a[1] == b[0] for a, b in zip(parts.turn_spans, parts.turn_spans[1:]))
    decoded = [tiny_model.tokenizer.decode(parts.history_ids[a:b]) for a, b in parts.turn_spans]
    assert decoded[0].startswith("User:") and decoded[1].startswith("You:") and "sad" in decoded[2]


def test_turn_without_audio_is_read_as_text(tiny_model, features):
    """A turn with no audio keeps its word embeddings (no PLoRA there), explicitly listed."""
    turn_features = [features[0], None, features[2]]
    encoding = tiny_model.encode_speech([[features[0], features[2]]])
    spans = tiny_model.heard_spans(turn_features, encoding)
    assert spans[1] is None and spans[0] is not None and spans[2] is not None
    parts = tiny_model.prompt_parts(HISTORY)
    speech = encoding.embeddings[0, : int(encoding.lengths[0])]
    context = tiny_model.speech_context(speech, spans, parts)
    assert context.unheard_turns == [1]
    start = spans[0][1] - spans[0][0]
    a, b = parts.turn_spans[1]
    assert torch.equal(context.middle[start:start + b - a], tiny_model.embed(parts.history_ids[a:b]))
    assert not context.speech_flags[start:start + b - a].any()
    assert int(context.speech_flags.sum()) == (spans[0][1] - spans[0][0]) + (spans[2][1] - spans[2][0])


def test_text_and_speech_layout_keeps_each_heard_turns_words_before_its_s_prime(tiny_model, features):
    """history_layout "text_and_speech" (the authors' inference layout): every heard turn reads
    as its words (no PLoRA) then the same S' the paper layout gives it; unheard turns as before."""
    turn_features = [features[0], None, features[2]]
    encoding = tiny_model.encode_speech([[features[0], features[2]]])
    spans = tiny_model.heard_spans(turn_features, encoding)
    parts = tiny_model.prompt_parts(HISTORY)
    speech = encoding.embeddings[0, : int(encoding.lengths[0])]
    both_model = tiny_model.with_config(tiny_model.config.replace(
        cross=replace(tiny_model.config.cross, history_layout="text_and_speech")))
    tiny_model.eval(), both_model.eval()
    paper, both = tiny_model.speech_context(speech, spans, parts), both_model.speech_context(speech, spans, parts)
    assert both.unheard_turns == paper.unheard_turns == [1]
    words = [tiny_model.embed(parts.history_ids[a:b]) for a, b in parts.turn_spans]
    heard = [spans[0][1] - spans[0][0], None, spans[2][1] - spans[2][0]]
    at_paper = at_both = 0
    for turn, (turn_words, length) in enumerate(zip(words, heard)):
        if length is None:  # unheard: its words, in both layouts
            assert torch.equal(both.middle[at_both:at_both + len(turn_words)], turn_words)
            at_both, at_paper = at_both + len(turn_words), at_paper + len(turn_words)
            continue
        assert torch.equal(both.middle[at_both:at_both + len(turn_words)], turn_words)
        assert not both.speech_flags[at_both:at_both + len(turn_words)].any()
        at_both += len(turn_words)
        assert torch.allclose(both.middle[at_both:at_both + length], paper.middle[at_paper:at_paper + length])
        assert both.speech_flags[at_both:at_both + length].all()
        at_both, at_paper = at_both + length, at_paper + length
    assert at_both == len(both.middle) and at_paper == len(paper.middle)
    assert int(both.speech_flags.sum()) == int(paper.speech_flags.sum())
    with pytest.raises(ValueError, match="history_layout"):
        replace(tiny_model.config.cross, history_layout="text")


def test_two_path_layout(tiny_model):
    parts = tiny_model.prompt_parts(HISTORY[-1:])
    middle = tiny_model.embed(parts.history_ids)
    speech = torch.randn(5, 64)
    response = [5, 6, 7]
    flags = torch.tensor([True, True, False, True, True])
    text_batch = tiny_model.build_path([parts], [middle], [response], None, pad_left=False)
    speech_batch = tiny_model.build_path([parts], [speech], [response], [flags], pad_left=False)
    assert not text_batch.speech_mask.any()
    assert speech_batch.speech_mask.sum() == 4
    start = len(parts.prefix_ids)
    assert speech_batch.speech_mask[0, start:start + 5].tolist() == flags.tolist()
    for batch in (text_batch, speech_batch):
        labels = batch.labels[0][batch.labels[0] != -100].tolist()
        assert labels == response  # response tokens are the only labels, in both paths


def test_checkpoint_round_trip_and_refusal(features, tmp_path, tiny_dirs):
    from es4r.config import preset_config
    from es4r.modeling.backbones import load_llm, load_whisper
    from es4r.modeling.model import ES4RModel

    tiny_model = ES4RModel(load_whisper(str(tiny_dirs["whisper"]), "cpu"), load_llm(str(tiny_dirs["llm"]), "cpu"),
                           preset_config("tiny")).eval()
    for module in tiny_model.trainable_modules().values():
        for param in module.parameters():
            torch.nn.init.normal_(param, std=0.05)
    for name, param in tiny_model.llm.named_parameters():
        if "lora_" in name:
            torch.nn.init.normal_(param, std=0.05)
    before = tiny_model.encode_speech([features]).embeddings
    save_es4r_parts(tiny_model, tmp_path / "ckpt")
    for module in tiny_model.trainable_modules().values():
        for param in module.parameters():
            torch.nn.init.zeros_(param)
    load_es4r_parts(tiny_model, tmp_path / "ckpt")
    assert torch.equal(tiny_model.encode_speech([features]).embeddings, before)

    import json
    meta_path = tmp_path / "ckpt" / "es4r_config.json"
    meta = json.loads(meta_path.read_text())
    meta["backbones"]["llm_width"] = 4096
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="other backbones"):
        load_es4r_parts(tiny_model, tmp_path / "ckpt")


def _old_chain(model, histories, turn_features, responses, hints=None):
    """The wiring `forward` replaced, kept written out as the reference it must equal: the
    speech path was speech_prompt_parts -> encode_speech -> heard_spans -> speech_context
    (with heard_prosody) -> build_path -> path_logits; the text path prompt_parts -> embed ->
    build_path -> path_logits."""
    if turn_features is None:
        parts = [model.prompt_parts(h, hint=hint) for h, hint in zip(histories, hints)]
        batch = model.build_path(parts, [model.embed(p.history_ids) for p in parts], responses, None, pad_left=False)
        return model.path_logits(batch), batch, None
    parts = [model.speech_prompt_parts(h, f)[0] for h, f in zip(histories, turn_features)]
    encoding = model.encode_speech([[f for f in features if f is not None] for features in turn_features])
    speech = [encoding.embeddings[b, : int(encoding.lengths[b])] for b in range(len(histories))]
    spans = [model.heard_spans(features, encoding, b) for b, features in enumerate(turn_features)]
    contexts = [model.speech_context(speech[b], spans[b], parts[b], model.heard_prosody(features, encoding, b))
                for b, features in enumerate(turn_features)]
    batch = model.build_path(parts, [c.middle for c in contexts], responses, [c.speech_flags for c in contexts],
                             pad_left=False, cues=[c.cue for c in contexts])
    return model.path_logits(batch), batch, contexts


@pytest.mark.slow
def test_forward_is_the_chain_it_replaced(loud_plora_model, tmp_path, speech_paths):
    """forward's logits, inputs and cross-modal weights are the old chain's, bit for bit, on
    both paths, in training mode (dropout drawn in the same order) with every ES4R term live:
    PLoRA, the cross-modal gates, prosody, the reply cue and the affect reader's note."""
    from es4r.data.manifest import load_manifest, prepare_sample
    from es4r.training.reader_fit import fit_affect_reader
    from tests.test_affect_pairs import _corpus

    model = loud_plora_model(0.5)
    with torch.no_grad():
        for weight in model.cross.parameters():
            weight.add_(0.05 * torch.randn_like(weight))
    items = [prepare_sample(s, 80) for s in load_manifest(_corpus(tmp_path, speech_paths, conversations=2))]
    fit_affect_reader(model.cross.reader, items)
    items[1] = replace(items[1], features=[None, *items[1].features[1:]])  # a turn without audio, read as text
    histories = [item.sample.history_turns() for item in items]
    features = [item.features for item in items]
    responses = [model.tokenizer(item.sample.response).input_ids for item in items]
    hints = [None, "The user sounds tired."] + [None] * (len(items) - 2)
    model.train()
    for turn_features in (features, None):
        torch.manual_seed(7)
        logits, batch, contexts = _old_chain(model, histories, turn_features, responses, hints)
        torch.manual_seed(7)
        output = model(histories, turn_features, responses, hints=None if turn_features else hints)
        assert torch.equal(output.logits, logits) and torch.equal(output.inputs.labels, batch.labels)
        assert torch.equal(output.inputs.inputs_embeds, batch.inputs_embeds)
        assert torch.equal(output.inputs.speech_mask, batch.speech_mask)
        if contexts is not None:
            assert all(torch.equal(new.weights, old.weights) and torch.equal(new.middle, old.middle)
                       for new, old in zip(output.contexts, contexts))
            assert any(r.note for r in output.affect) and output.inputs.speech_mask.any()
    model.eval()
    prompt = model(histories[:1], features[:1], prompt_only=True, pad_left=True)
    assert prompt.logits is None and prompt.inputs.labels is None and prompt.encoding.dual.inter_weights
