"""The reply as text: trimming to whole sentences, and the sentence count that stops generation."""

from es4r.reply_text import confirmed_sentences, growing_reply, line_ended, trim_reply


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


# What the embedded LLM wrote for held-out conversations: its reply, then the next line of the
# "User: / You:" layout — the user's next turn, invented.
WENT_ON = (
    ("You: I'm so glad you're happy with the answer.\nUser: That's great! You", "I'm so glad you're happy with the answer."),
    ("You: I'm so sorry. It's not easy to share a laptop!\nUser", "I'm so sorry. It's not easy to share a laptop!"),
    ("I'm sorry for your loss. I hope you're doing well!\nChat", "I'm sorry for your loss. I hope you're doing well!"),
    ("I'm so glad you're here. User: You know what?", "I'm so glad you're here."),
)


def test_the_reply_is_its_own_line():
    for written, reply in WENT_ON:
        assert trim_reply(written, 2) == reply and line_ended(written)
        if "\n" in written:  # while it is written, the page never shows the next line
            start = written.index(reply[:4])
            assert all(reply.startswith(growing_reply(written[:end], 2)) for end in range(start, len(written) + 1))
    assert trim_reply("\n You:\nI hear you. Tell me more.", 2) == "I hear you. Tell me more."
    assert not line_ended("You: I hear you.") and not line_ended("\nI hear you. It")
    assert trim_reply("Here is what I'd tell you: be kind. You: it helps.", 2) == "Here is what I'd tell you: be kind."
    # a new line ends the reply's line even before anything is written on it
    assert line_ended("I hear you.\n") and line_ended("You: I hear you. \n ") and not line_ended("I hear you. ")


def test_generation_stops_when_another_line_begins(tiny_model):
    import torch

    from es4r.reply_text import sentences_done

    tokenizer = tiny_model.tokenizer
    stop = sentences_done(tokenizer, 2)
    rows = [tokenizer(text).input_ids for text in ("I'm so glad.\nUser", "I'm so glad. And")]
    width = max(map(len, rows))
    ids = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in rows])
    assert stop(ids, None).tolist() == [True, False]
    # it stops once the reply holds max_sentences confirmed sentences, not one later
    three = [tokenizer(text).input_ids for text in ("Oh. I'm so glad. And", "Oh. I'm so glad.")]
    assert [stop(torch.tensor([row]), None).item() for row in three] == [True, False]


def _ids(tokenizer, *pieces) -> list[int]:
    """Token ids of text pieces; an int piece is that token id (a special token inside the text)."""
    return [i for piece in pieces for i in ([piece] if isinstance(piece, int) else tokenizer(piece).input_ids)]


def test_the_stop_rule_reads_only_the_reply_and_its_text_as_shown(tiny_model):
    """With a prompt at the start of each row, only the tokens after it are the reply; with
    none (generation from inputs_embeds), every token is. Special tokens are not text: the
    rule counts the sentences the reply will show (decoded without them)."""
    import torch

    from es4r.reply_text import sentences_done

    tokenizer = tiny_model.tokenizer
    prompt = _ids(tokenizer, "User: I lost it. Then again.\nYou:")
    for reply, done in (("I see", False), ("I see. So", True)):
        row = torch.tensor([prompt + _ids(tokenizer, reply)])
        assert sentences_done(tokenizer, 1, prompt_length=len(prompt))(row, None).tolist() == [done]
    dot = _ids(tokenizer, ".")
    assert len(dot) == 1  # a reply whose first token ends its first sentence
    assert sentences_done(tokenizer, 1)(torch.tensor([dot + _ids(tokenizer, " And")]), None).tolist() == [True]
    special = _ids(tokenizer, "Yes.", tokenizer.pad_token_id, " No. And")
    shown = tokenizer.decode(special, skip_special_tokens=True)
    assert confirmed_sentences(shown) == 2
    assert sentences_done(tokenizer, 2)(torch.tensor([special]), None).tolist() == [True]


def test_the_streamer_hands_on_the_growing_reply_then_the_final_text(tiny_model):
    import torch

    from es4r.reply_text import reply_streamer

    tokenizer, seen = tiny_model.tokenizer, []
    streamer = reply_streamer(tokenizer, 2, seen.append)
    streamer.put(torch.tensor([_ids(tokenizer, "User: hello there\nYou:")]))  # the prompt, as generate hands it
    for token in _ids(tokenizer, "I hear you.", tokenizer.pad_token_id, " That sounds hard. Tell me more"):
        streamer.put(torch.tensor([token]))
    streamer.end()
    written = "I hear you. That sounds hard. Tell me more"
    assert seen[-1] == trim_reply(written, 2) == "I hear you. That sounds hard."
    assert len(seen) > 2 and all(written.startswith(text) for text in seen)  # no prompt, no special tokens
    assert all(len(a) <= len(b) for a, b in zip(seen, seen[1:]))
    # while it is written, the sentence being written shows (the growing reply), never the third
    assert any(text.startswith("I hear you. Th") and not text.endswith(".") for text in seen[:-1])
    assert not any("Tell" in text for text in seen)
