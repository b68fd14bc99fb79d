"""No reply repeats an earlier one (es4r/modeling/repeats.py)."""

from dataclasses import replace

import pytest
import torch

from es4r.modeling.repeats import EarlierRepliesBan, earlier_replies_ban
from es4r.modeling.token_ids import TokenIds


def _ngrams(ids: list[int], n: int) -> set[tuple[int, ...]]:
    return {tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)}


def test_the_token_that_followed_a_run_of_an_earlier_reply_is_banned():
    ban = EarlierRepliesBan([[5, 6, 7, 8], [6, 7, 9]], n=3)
    scores = ban(torch.tensor([[1, 6, 7], [1, 2, 3]]), torch.zeros(2, 10))
    assert torch.isinf(scores[0, [8, 9]]).all() and torch.isfinite(scores[0, :8]).all()
    assert torch.isfinite(scores[1]).all()  # no earlier run ends the row
    assert torch.isfinite(ban(torch.tensor([[6]]), torch.zeros(1, 10))).all()  # openings stay free
    # ... until n - 1 tokens are written: then the next one is judged, and banned means -inf
    assert ban(torch.tensor([[6, 7]]), torch.zeros(1, 10))[0, [8, 9]].tolist() == [-float("inf")] * 2


def test_the_shortest_ban_is_of_pairs():
    pairs = EarlierRepliesBan([[4, 5]], n=2)
    assert pairs(torch.tensor([[1, 4]]), torch.zeros(1, 6))[0].tolist() == [0, 0, 0, 0, 0, -float("inf")]
    for n in (1, 0):
        with pytest.raises(ValueError, match=f"n must be at least 2 \\(found {n}\\)"):
            EarlierRepliesBan([[4, 5]], n=n)


def test_the_ban_holds_only_the_replies_words_whatever_the_tokenizer_adds(bos_tokenizer):
    tokenizer, start = bos_tokenizer
    history = [("user", "i lost my keys"), ("assistant", "oh no where did you see them last")]
    ban = earlier_replies_ban(history, TokenIds(tokenizer), 3)
    reply = tokenizer("oh no where did you see them last", add_special_tokens=False).input_ids
    assert set(ban.follows) == {g[:-1] for g in _ngrams(reply, 3)}
    assert not any(start in key or start in follow for key, follow in ban.follows.items())


def test_earlier_replies_are_the_models_turns_only(tiny_model):
    tokenizer = tiny_model.tokenizer
    history = [("user", "i lost my keys"), ("assistant", "oh no where did you see them last"), ("user", "at home")]
    ban = earlier_replies_ban(history, tiny_model.token_ids, 4)
    reply = tokenizer("oh no where did you see them last", add_special_tokens=False).input_ids
    user = tokenizer("i lost my keys", add_special_tokens=False).input_ids
    assert set(ban.follows) == {g[:-1] for g in _ngrams(reply, 4)}
    assert not any(g[:-1] in ban.follows and g[-1] in ban.follows[g[:-1]] for g in _ngrams(user, 4))
    encode = tiny_model.token_ids
    assert earlier_replies_ban(history[:1], encode, 4) is None and earlier_replies_ban(history, encode, 0) is None


def test_generation_never_repeats_a_run_of_an_earlier_reply(tiny_model):
    """The tiny LLM answers the same words twice the same way; with the ban its second reply
    shares no 4-token run with the first (the text path; the speech path passes the same kwargs)."""
    off = replace(tiny_model.config.generation, earlier_reply_ngram=0)
    first = tiny_model.generate([("user", "hello there")], None, off)[0]
    history = [("user", "hello there"), ("assistant", first.text), ("user", "hello there")]
    plain = tiny_model.generate(history, None, off)[0]
    earlier = _ngrams(tiny_model.tokenizer(first.text, add_special_tokens=False).input_ids, 4)
    assert _ngrams(plain.token_ids, 4) & earlier  # without the ban the reply comes back
    generation = replace(tiny_model.config.generation, earlier_reply_ngram=4)
    banned = tiny_model.generate(history, None, generation)[0]
    assert banned.token_ids and not _ngrams(banned.token_ids, 4) & earlier
