"""Reply text -> speakable text and sentences (es4r/voice/text_normalize.py)."""

import pytest

from es4r.voice.text_normalize import (
    MIN_SENTENCE_WORDS,
    normalize_for_tts,
    number_to_words,
    ordinal_to_words,
    split_sentences,
)


@pytest.mark.parametrize("number, words", [
    (0, "zero"), (7, "seven"), (13, "thirteen"), (40, "forty"), (42, "forty-two"),
    (100, "one hundred"), (115, "one hundred fifteen"), (2024, "two thousand twenty-four"),
    (1_000_000, "one million"), (-3, "minus three"),
    (1_234_567, "one million two hundred thirty-four thousand five hundred sixty-seven"),
])
def test_number_to_words(number, words):
    assert number_to_words(number) == words


@pytest.mark.parametrize("number, words", [
    (1, "first"), (2, "second"), (3, "third"), (5, "fifth"), (12, "twelfth"), (20, "twentieth"),
    (21, "twenty-first"), (100, "one hundredth"),
])
def test_ordinal_to_words(number, words):
    assert ordinal_to_words(number) == words


@pytest.mark.parametrize("text, spoken", [
    ("I waited 3 hours.", "I waited three hours."),
    ("It costs $3.50 now", "It costs three dollars and fifty cents now."),
    ("Only $1!", "Only one dollar!"),
    ("About 12.5% of 1,200 people", "About twelve point five percent of one thousand two hundred people."),
    ("See you on the 21st.", "See you on the twenty-first."),
    ("It was -7 degrees", "It was minus seven degrees."),
])
def test_numbers_become_words(text, spoken):
    assert normalize_for_tts(text) == spoken


def test_markdown_and_emoji_are_stripped():
    reply = "# Tips\n- Take a **deep** breath 😮‍💨\n- Call [a friend](https://example.com) 🙂\n\n`code`"
    assert normalize_for_tts(reply) == "Tips. Take a deep breath. Call a friend. code."


def test_inline_emphasis_urls_and_whitespace():
    text = "I'm *really*   sorry 😢 ,\n  that sounds __hard__. More at https://x.org/a?b=1 ok"
    assert normalize_for_tts(text) == "I'm really sorry, that sounds hard. More at ok."


def test_soft_line_wrap_is_a_space_not_a_sentence_end():
    assert normalize_for_tts("you are not\nalone in this") == "you are not alone in this."


@pytest.mark.parametrize("text", ["", "   ", "👍👍", "** __ **", "\n\n"])
def test_nothing_speakable_gives_empty_string(text):
    assert normalize_for_tts(text) == ""


def test_sentences_split_at_sentence_ends():
    text = "That sounds really hard to deal with. How long has this been going on? I am here for you!"
    assert split_sentences(text) == [
        "That sounds really hard to deal with.", "How long has this been going on?", "I am here for you!"]


def test_short_fragments_join_a_neighbour():
    parts = split_sentences("Oh. I am so sorry that happened to you. Okay?")
    assert parts == ["Oh. I am so sorry that happened to you. Okay?"]
    assert all(len(p.split()) >= MIN_SENTENCE_WORDS for p in parts)


@pytest.mark.parametrize("text, parts", [
    # the first clause mark with three words before it, when three more follow
    ("I'm here to support you, and I can help. Tell me more about it.",
     ["I'm here to support you,", "and I can help.", "Tell me more about it."]),
    ("Oh, I see, that is hard for you, and I am here.", ["Oh, I see,", "that is hard for you, and I am here."]),
    ("I'm sorry, I will listen to you.", ["I'm sorry, I will listen to you."]),  # two words: no unit
    ("I am so sorry to hear that, John. It must hurt.", ["I am so sorry to hear that, John.", "It must hurt."]),
    ("That sounds hard. I am here for you, and I am listening.",  # only the first sentence
     ["That sounds hard.", "I am here for you, and I am listening."]),
])
def test_the_first_sentence_is_spoken_from_its_first_clause(text, parts):
    assert split_sentences(text) == parts


def test_long_sentences_are_cut_at_clauses_then_spaces():
    clause = "this part of the sentence keeps going on and on"
    text = ", ".join([clause] * 12) + "."
    parts = split_sentences(text, max_chars=120)
    assert len(parts) > 1 and all(len(p) <= 120 for p in parts)
    assert " ".join(parts).replace(",", "") == text.replace(",", "")
    words = split_sentences("word " * 100, max_chars=50)
    assert all(len(p) <= 50 for p in words) and sum(len(p.split()) for p in words) == 100
