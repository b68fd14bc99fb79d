"""The reply checker on hand-made replies: each failure kind caught, and its counterpart — a good
reply in the same situation — left alone."""

import re

import numpy as np
import pytest

from es4r.config import GenerationConfig
from es4r.evaluation.reply_checks import (ReplyContext, check_replies, mentions_loss, opening, repeated_openings,
                                          rule_flags, top_opening)

PROMPT = GenerationConfig().system_prompt
GOOD_NEWS = ReplyContext(("I passed my driving test this morning!",), good_news=True, loss=False)
STRESS = ReplyContext(("Three deadlines on Friday and my boss just added a fourth.",), good_news=False, loss=False)
DEATH = ReplyContext(("My grandmother passed away last night.",), good_news=False, loss=True)


@pytest.mark.parametrize("reply, context, flag", [
    ("I'm sorry to hear that.", GOOD_NEWS, "apology_to_good_news"),
    ("Oh no, that must have been a lot.", GOOD_NEWS, "apology_to_good_news"),
    ("I'm sorry for your loss.", STRESS, "condolence_without_loss"),
    ("My condolences, that sounds like a heavy week.", STRESS, "condolence_without_loss"),
    ("Grief like that takes time.", STRESS, "condolence_without_loss"),
    ("I'm here to help. What's the situation like?", STRESS, "assistant_speak"),
    ("How can I help you today?", DEATH, "assistant_speak"),
    ("I'd be more than happy to help you with your project.", STRESS, "assistant_speak"),
    ("I'm here for you.", DEATH, "assistant_speak"),
    ("Let me know if there's anything I can do.", DEATH, "assistant_speak"),
    ("I've been there myself, it gets better.", DEATH, "personal_experience"),
    ("When I lost my dog I cried for days.", DEATH, "personal_experience"),
    ("My mom went through the same thing.", STRESS, "personal_experience"),
    ("The user appears to be in a supportive mindset.", STRESS, "meta_commentary"),
    ("To comfort them, I'll respond with empathy and support.", DEATH, "meta_commentary"),
    ("As an AI, I can't feel grief, but that sounds hard.", DEATH, "meta_commentary"),
    ("You're a warm, empathetic listener who replies to the user.", STRESS, "prompt_echo"),
    ("Acknowledge how they feel, then offer support.", STRESS, "prompt_echo"),
    ("That's a calm and steady voice. What do you feel?", STRESS, "prompt_echo"),  # the speech path's note
    ("Your voice got quieter and slower, I noticed.", DEATH, "prompt_echo"),
    ("You got louder but slower as we talked.", STRESS, "prompt_echo"),  # a note worded from the measured trend
    ("...", STRESS, "empty"),
])
def test_each_failure_kind_is_flagged(reply, context, flag):
    assert flag in rule_flags(reply, context, PROMPT)


@pytest.mark.parametrize("reply, context", [
    ("Congratulations! How does it feel to finally have your licence?", GOOD_NEWS),
    ("That must feel like such a relief after all that practice.", GOOD_NEWS),
    ("Four deadlines in one week is brutal. Which one worries you most?", STRESS),
    ("No wonder you're stretched thin. Is there one you could push back?", STRESS),
    ("I'm so sorry about your grandmother. What was she like?", DEATH),
    ("I'm sorry for your loss. Losing her so suddenly must be a shock.", DEATH),
    ("How did you respond to them when they said that?", STRESS),  # "respond" about the person, not the reply
    ("Waiting for the reply from the school must be hard.", STRESS),
    ("It sounds like your friends matter a lot to you.", STRESS),
    ("That sounds exhausting. What would help you rest tonight?", STRESS),
])
def test_good_replies_are_not_flagged(reply, context):
    assert rule_flags(reply, context, PROMPT) == []


def test_the_same_words_are_judged_by_the_situation():
    """Condolences fit a death and not stress; an apology fits stress and not good news."""
    assert "condolence_without_loss" in rule_flags("I'm sorry for your loss.", STRESS, PROMPT)
    assert rule_flags("I'm sorry for your loss.", DEATH, PROMPT) == []
    assert "apology_to_good_news" in rule_flags("I'm sorry, that sounds hard.", GOOD_NEWS, PROMPT)
    assert rule_flags("I'm sorry, that sounds hard.", STRESS, PROMPT) == []


@pytest.mark.parametrize("turns, loss", [
    (["My grandmother passed away last night."], True),
    (["It's been a strange week.", "My uncle died on Tuesday."], True),
    (["We had to put him down on Monday, he was fourteen."], True),
    (["I lost my job today."], True),
    (["She broke up with me after six years."], True),
    (["Three deadlines on Friday.", "Honestly, I feel like I'm dying here."], False),
    (["This week is killing me and I'm dead tired."], False),
    (["I passed my driving test!"], False),
    (["I lost my keys again this morning."], False),
])
def test_loss_is_read_from_what_was_said(turns, loss):
    assert mentions_loss(turns) is loss


def test_openings_and_repeats():
    assert opening("I'm so glad, really!") == "i'm so glad"
    assert repeated_openings(["That's so great.", "That's so great to hear!", "What a day."]) == 1
    assert repeated_openings(["That's great news.", "What a day.", "How exciting!"]) == 0
    assert top_opening(["A b c d", "a b c e", "x y z"]) == ("a b c", pytest.approx(2 / 3))


class BagOfWords:
    """A stand-in sentence encoder: normalised word counts, so similarity is word overlap."""

    def __call__(self, texts):
        words = [re.findall(r"[a-z]+", t.lower()) for t in texts]
        vocab = sorted({w for ws in words for w in ws})
        rows = np.array([[ws.count(w) for w in vocab] for ws in words], dtype=float)
        return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-9)


def test_a_reply_about_something_else_is_flagged_and_one_about_the_situation_is_not():
    context = ReplyContext(("my dog died this morning",), good_news=False, loss=True)
    on, off = check_replies(["your dog died, that is so hard", "the weather is nice"], [context, context], PROMPT,
                            BagOfWords(), threshold=0.3)
    assert "ignores_situation" not in on.flags and on.relevance > 0.3
    assert off.flags == ["ignores_situation"] and off.relevance < 0.3
