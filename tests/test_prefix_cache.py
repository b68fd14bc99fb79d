"""The text path starts each reply from the last reply's key/value cache where the prompts
agree (es4r/modeling/prefix_cache.py): same reply, fewer tokens read; on the speech path only
what comes before S' (the system prompt, and the oldest turns while they are read as text)."""

from dataclasses import replace

import torch

from es4r.modeling.prefix_cache import MIN_REUSE, PrefixCache, shared_prefix

TURN_1 = [("user", "i had a rough week at work and my manager shouted at me")]
TURN_2 = TURN_1 + [("assistant", "that sounds hard, i am sorry"), ("user", "and today my car broke down too")]
TURN_3 = TURN_2 + [("assistant", "one thing after another"), ("user", "yes and i am tired of it")]


def _generate(model, history, reuse: bool, features=None):
    generation = replace(model.config.generation, reuse_prefix=reuse, max_new_tokens=12)
    return model.generate(history, features, generation)[0]


def test_shared_prefix():
    assert shared_prefix([1, 2, 3, 4], [1, 2, 9]) == 2
    assert shared_prefix([], [1]) == 0 and shared_prefix([5, 6], [5, 6]) == 2


def test_the_next_turn_reads_only_what_is_new_and_replies_the_same(tiny_model):
    tiny_model.prefix_cache.clear()
    fresh = _generate(tiny_model, TURN_3, reuse=False)
    assert fresh.reused_tokens == 0 and tiny_model.prefix_cache.tokens == 0  # switched off: nothing kept
    first = _generate(tiny_model, TURN_2, reuse=True)
    assert first.reused_tokens == 0 and tiny_model.prefix_cache.tokens >= first.prompt_tokens
    second = _generate(tiny_model, TURN_3, reuse=True)
    before = tiny_model.prompt_parts(TURN_2)
    # the system prompt and every line before the last turn's are shared; the rest is read anew
    # (the newest line ends without its newline, so its last token may differ next time)
    assert second.reused_tokens >= len(before.prefix_ids) + before.turn_spans[-1][0]
    assert second.prompt_tokens == fresh.prompt_tokens > second.reused_tokens
    assert second.token_ids == fresh.token_ids and second.text == fresh.text


def test_the_speech_path_reuses_only_the_system_prompt_and_replies_the_same(loud_plora_model, speech_paths):
    """With PLoRA's weights large (so a reply that lost them at S' would change, checked at the
    end): the reply read after a cached system prompt is the one read from scratch, and what is
    left in the cache is that prefix and no more."""
    from es4r.audio import load_audio, log_mel

    model = loud_plora_model(std=5.0)
    lora_b = [weight for name, weight in model.llm.named_parameters() if "lora_B" in name]
    features = [torch.from_numpy(log_mel(load_audio(p).samples, model.whisper.n_mels)) for p in speech_paths[:3]]
    prefix = len(model.prompt_parts(TURN_2).prefix_ids)
    assert prefix >= MIN_REUSE
    fresh = _generate(model, TURN_2, reuse=False, features=features)
    assert fresh.reused_tokens == 0 and model.prefix_cache.tokens == 0
    _generate(model, TURN_3, reuse=True)  # a text-path turn leaves its whole sequence
    assert model.prefix_cache.tokens > prefix
    spoken = _generate(model, TURN_2, reuse=True, features=features)
    assert spoken.speech_path and spoken.reused_tokens == prefix
    assert spoken.token_ids == fresh.token_ids
    assert model.prefix_cache.tokens == prefix  # cropped to the prompt's text before S'
    again = _generate(model, TURN_2, reuse=True, features=features)
    assert again.reused_tokens == prefix and again.token_ids == fresh.token_ids
    with torch.no_grad():
        for weight in lora_b:
            weight.zero_()
    assert _generate(model, TURN_2, reuse=False, features=features).token_ids != fresh.token_ids  # PLoRA counts here


def test_the_speech_path_reuses_the_oldest_turns_read_as_text(loud_plora_model, speech_paths):
    """A turn before the first heard one (outside the speech window, or without audio) is read
    as its words: its positions come from the cache with the system prompt's, and the reply is
    the one read from scratch."""
    from es4r.audio import load_audio, log_mel

    model = loud_plora_model(std=5.0)
    heard = [torch.from_numpy(log_mel(load_audio(p).samples, model.whisper.n_mels)) for p in speech_paths[:2]]
    features = [None, *heard]  # the oldest turn unheard
    parts = model.prompt_parts(TURN_2)
    before_speech = len(parts.prefix_ids) + parts.turn_spans[1][0]
    assert parts.turn_spans[1][0] > 0
    fresh = _generate(model, TURN_2, reuse=False, features=features)
    _generate(model, TURN_3, reuse=True)  # a text-path turn leaves its whole sequence
    spoken = _generate(model, TURN_2, reuse=True, features=features)
    assert spoken.reused_tokens == before_speech and spoken.token_ids == fresh.token_ids
    assert model.prefix_cache.tokens == before_speech  # cropped to the prompt's text before S'
    again = _generate(model, TURN_2, reuse=True, features=features)
    assert again.reused_tokens == before_speech and again.token_ids == fresh.token_ids
    every = _generate(model, TURN_2, reuse=True, features=[heard[0], *heard])  # all heard: the prefix only
    assert every.reused_tokens == len(parts.prefix_ids)


def test_a_cache_is_handed_out_once_and_only_where_it_fits():
    cache = PrefixCache()

    class Fake:  # the two methods of a transformers cache that PrefixCache uses
        def __init__(self, length):
            self.length = length

        def get_seq_length(self):
            return self.length

        def crop(self, remove):
            assert remove <= 0
            self.length += remove

    ids = list(range(40))
    cache.keep(ids, Fake(30), ("cpu", torch.float32))
    assert cache.take(ids[:20] + [99], ("cpu", torch.bfloat16)) == (None, 0)  # made by another dtype
    cache.keep(ids, Fake(30), ("cpu", torch.float32))
    taken, reused = cache.take(ids[:20] + [99], ("cpu", torch.float32))
    assert reused == 20 and taken.get_seq_length() == 20
    assert cache.take(ids[:20] + [99], ("cpu", torch.float32)) == (None, 0)  # no longer held
    cache.keep(ids, Fake(30), ("cpu", torch.float32))
    taken, reused = cache.take(ids[:30], ("cpu", torch.float32))
    assert reused == 29  # the whole prompt cached: its last token is still read, for the logits
    cache.keep(ids, Fake(30), ("cpu", torch.float32))
    taken, reused = cache.take(ids[:30], ("cpu", torch.float32), whole=True)
    assert reused == 30  # the speech path: S' follows, so every id may come from the cache
    longer = Fake(30)
    cache.keep(ids[:12], longer, ("cpu", torch.float32))
    assert longer.length == 12 and cache.tokens == 12  # kept cropped to the ids it is said to hold
    cache.keep(ids, Fake(30), ("cpu", torch.float32))
    assert cache.take(ids[: MIN_REUSE - 1] + [99], ("cpu", torch.float32)) == (None, 0)


def test_in_the_words_then_s_prime_layout_the_first_heard_turns_words_come_from_the_cache(loud_plora_model,
                                                                                          speech_paths):
    """cross.history_layout "text_and_speech": the first heard turn's words precede its S', so
    they are served with the system prompt; the reply is the one read from scratch, and the
    paper layout (its counterpart) still reuses only the system prompt."""
    from es4r.audio import load_audio, log_mel

    base = loud_plora_model(std=5.0)
    model = base.with_config(base.config.replace(cross=replace(base.config.cross, history_layout="text_and_speech")))
    features = [torch.from_numpy(log_mel(load_audio(p).samples, model.whisper.n_mels)) for p in speech_paths[:3]]
    parts = model.prompt_parts(TURN_2)
    words = len(parts.prefix_ids) + parts.turn_spans[0][1]
    model.prefix_cache.clear()
    fresh = _generate(model, TURN_2, reuse=False, features=features)
    assert fresh.prompt_tokens > _generate(base, TURN_2, reuse=False, features=features).prompt_tokens  # words added
    _generate(model, TURN_3, reuse=True)  # a text-path turn leaves its whole sequence
    spoken = _generate(model, TURN_2, reuse=True, features=features)
    assert spoken.reused_tokens == words and spoken.token_ids == fresh.token_ids
    assert model.prefix_cache.tokens == words
    _generate(base, TURN_3, reuse=True)
    assert _generate(base, TURN_2, reuse=True, features=features).reused_tokens == len(parts.prefix_ids)
