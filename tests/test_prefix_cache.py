"""The text path starts each reply from the last reply's key/value cache where the prompts
agree (es4r/modeling/prefix_cache.py): same reply, fewer tokens read; never on the speech path."""

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


def test_the_speech_path_never_reuses(tiny_model, speech_paths):
    from es4r.audio import load_audio, log_mel

    features = [torch.from_numpy(log_mel(load_audio(p).samples, tiny_model.whisper.n_mels)) for p in speech_paths[:1]]
    _generate(tiny_model, TURN_1, reuse=True)
    held = tiny_model.prefix_cache.tokens
    spoken = _generate(tiny_model, TURN_1, reuse=True, features=features)
    assert spoken.speech_path and spoken.reused_tokens == 0
    assert tiny_model.prefix_cache.tokens == held  # the speech path neither takes nor leaves a cache


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
    assert cache.take(ids[: MIN_REUSE - 1] + [99], ("cpu", torch.float32)) == (None, 0)
