"""Words of mourning only after a death or a loss; no opening used twice in a conversation."""

import torch

from es4r.modeling.condolences import CondolenceBan, heard_loss
from es4r.modeling.repeats import EarlierOpeningsBan, earlier_openings_ban
from es4r.modeling.token_ids import TokenIds


def test_mourning_is_banned_everywhere_in_the_reply_and_nothing_else(tiny_model):
    tokenizer = tiny_model.tokenizer
    ban = CondolenceBan(tokenizer, words=("sad", "died"))
    assert ban.banned
    scores = torch.zeros(2, len(tokenizer))
    out = ban(torch.tensor([[1, 2], [3, 4]]), scores.clone())
    assert torch.isinf(out[:, ban.banned]).all()
    others = [i for i in range(len(tokenizer)) if i not in set(ban.banned)]
    assert torch.equal(out[:, others], scores[:, others])  # the counterpart: every other token untouched


def test_the_ban_joins_generation_only_when_no_loss_was_heard(tiny_model, monkeypatch):
    seen = []
    original = tiny_model.llm.generate

    def spy(*args, **kwargs):
        seen.append([type(p).__name__ for p in kwargs.get("logits_processor", [])])
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny_model.llm, "generate", spy)
    from dataclasses import replace
    generation = replace(tiny_model.config.generation, max_new_tokens=2, reuse_prefix=False)
    tiny_model.generate([("user", "deadlines are killing me")], None, generation)
    tiny_model.generate([("user", "my dog died last night")], None, generation)
    tiny_model.generate([("user", "deadlines are killing me")], None, replace(generation, condolence_check=False))
    assert "CondolenceBan" in seen[0] and "CondolenceBan" not in seen[1] and "CondolenceBan" not in seen[2]


def test_heard_loss_reads_deaths_and_losses_only():
    assert heard_loss(["It has been a strange week.", "My uncle died on Tuesday."])
    assert heard_loss(["We lost our family dog to a car."]) and heard_loss(["I got laid off today."])
    assert not heard_loss(["I'm dead tired and this week is killing me."])
    assert not heard_loss(["I passed my driving test!", "I lost my keys though."])


def test_an_earlier_opening_cannot_be_completed_again():
    ban = EarlierOpeningsBan([[5, 6, 7]])
    scores = torch.zeros(3, 10)
    out = ban(torch.tensor([[5, 6], [5, 8], [6, 5]]), scores.clone())
    assert out[0, 7] == -float("inf") and torch.isfinite(out[0, :7]).all()
    assert torch.equal(out[1:], scores[1:])  # other beginnings are free


def test_openings_come_from_the_assistants_earlier_replies(tiny_model):
    history = [("user", "hello there friend"), ("assistant", "Oh hello there, how are you?"), ("user", "fine")]
    ban = earlier_openings_ban(history, tiny_model.token_ids)
    ids = tiny_model.tokenizer("Oh hello there,", add_special_tokens=False).input_ids
    assert ban is not None and ban.follows == {tuple(ids[:-1]): {ids[-1]}}
    assert earlier_openings_ban([("user", "hi")], tiny_model.token_ids) is None


def test_an_opening_is_the_replys_words_whatever_the_tokenizer_adds(bos_tokenizer):
    """A tokenizer that opens every text with a special token (Llama's BOS does): the banned
    opening is still the reply's first words, which is what a reply starts with."""
    tokenizer, _ = bos_tokenizer
    ban = earlier_openings_ban([("assistant", "Oh hello there, how are you?")], TokenIds(tokenizer))
    ids = tokenizer("Oh hello there,", add_special_tokens=False).input_ids
    assert ban.follows == {tuple(ids[:-1]): {ids[-1]}}
