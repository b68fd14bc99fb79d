"""The reply as text: trimming to whole sentences, and the sentence count that stops generation."""

from es4r.reply_text import confirmed_sentences, trim_reply


def test_trim_keeps_whole_sentences_and_drops_the_speaker_label():
    assert trim_reply("You: I hear you. That sounds hard. Tell me", 2) == "I hear you. That sounds hard."
    assert trim_reply("It costs 3.5 dollars. Fine", 1) == "It costs 3.5 dollars."
    assert trim_reply("No end yet", 2) == "No end yet"


def test_a_sentence_end_counts_once_more_text_follows_it():
    assert confirmed_sentences("I hear you.") == 0  # "." may still become "..." or "3.5"
    assert confirmed_sentences("I hear you. That") == 1
    assert confirmed_sentences("It costs 3.5") == 0 and confirmed_sentences("It costs 3.") == 0
    assert confirmed_sentences("You:  Wow!  Great. And") == 2  # label and spacing as trim_reply reads them
    for text in ("I hear you. That sounds hard. Tell me", "Yes. No! Maybe? So"):
        # once two are confirmed, trimming the text so far gives what trimming any longer text gives
        assert confirmed_sentences(text) >= 2 and trim_reply(text, 2) == trim_reply(text + " more words.", 2)


def test_the_growing_reply_keeps_the_sentence_being_written():
    from es4r.reply_text import growing_reply

    assert growing_reply("You: I'm sorry to hear that. It sounds", 2) == "I'm sorry to hear that. It sounds"
    assert growing_reply("Oh no. That is hard. And then", 2) == "Oh no. That is hard."  # two complete: cut there
    assert growing_reply("Oh no. That is hard. And then", 3) == "Oh no. That is hard. And then"
    assert trim_reply("I'm sorry to hear that. It sounds", 2) == "I'm sorry to hear that."  # the final text drops it
