"""The valence test set and the checks on replies (es4r/evaluation/valence.py)."""

from collections import Counter

from es4r.audio import load_audio
from es4r.evaluation.valence import (
    REPEAT_ROUGE,
    load_valence_set,
    opening_stance,
    play_set,
    repeats,
    top_opening,
)


def test_the_set_is_thirty_spoken_turns_of_known_valence():
    conversations = load_valence_set()
    turns = [t for c in conversations for t in c]
    assert len(turns) >= 30 and all(len(c) == 3 for c in conversations)
    assert Counter(t.valence for t in turns) == {"good": 10, "bad": 10, "neutral": 10}
    for turn in turns[:3]:  # real clips at the app's rate, nothing resampled or clipped
        audio = load_audio(turn.audio)
        assert not audio.notes and 1.0 < audio.seconds < 8.0
    assert all(t.audio.exists() for t in turns)


def test_opening_stance_reads_the_first_sentence():
    assert opening_stance("I'm so sorry to hear that. Congratulations on the rest!") == "apology"
    assert opening_stance("Congratulations! I'm sorry it took so long.") == "celebration"
    assert opening_stance("That's great news, well done.") == "celebration"
    assert opening_stance("Oh no, that must hurt.") == "apology"
    assert opening_stance("How are you feeling about it?") is None
    assert opening_stance("I'm glad to hear it, but I'm sorry it took so long.") == "celebration"  # the first wins
    assert opening_stance("I'm glad you told me, and I'm sorry it hurts.") == "apology"  # thanks, not joy


def test_only_the_opposite_stance_contradicts():
    from es4r.evaluation.valence import contradicts

    assert contradicts("good", "apology") and contradicts("bad", "celebration")
    assert not contradicts("good", "celebration") and not contradicts("bad", "apology")
    assert not any(contradicts(valence, None) for valence in ("good", "bad", "neutral"))  # no stance, no contradiction
    assert not contradicts("neutral", "apology") and not contradicts("neutral", "celebration")


def test_repeats_compare_each_reply_with_every_earlier_one():
    replies = ["I'm so sorry to hear about your dog.", "What did the vet say?",
               "I'm so sorry to hear about your dog, truly.", "Take care of yourself."]
    found = repeats(replies)
    assert found[0] == (-1, 0.0)
    assert found[2][0] == 0 and found[2][1] >= REPEAT_ROUGE  # the repeat of reply 0, two turns later
    assert found[3][1] < REPEAT_ROUGE


def test_top_opening_share():
    replies = ["I'm so sorry to hear that.", "I'm so sorry to hear it.", "That's wonderful!", "Tell me more."]
    assert top_opening(replies) == ("i'm so sorry to", 0.5)
    assert top_opening([]) == ("", 0.0)


def test_play_set_runs_the_app_turns_and_keeps_going_after_a_failed_turn(tiny_pipeline, tmp_path):
    conversation = load_valence_set()[0]
    broken = tmp_path / "broken.flac"
    broken.write_bytes(b"not audio")
    turns = [conversation[0], type(conversation[1])("x", "c01", "bad", "broken", broken), conversation[2]]
    report = play_set(tiny_pipeline, [turns])
    assert [r.turn.id for r in report.replies] == [conversation[0].id, conversation[2].id]
    assert len(report.errors) == 1 and report.errors[0].startswith("x:")
    assert all(r.reply for r in report.replies) and report.path == "text"
    summary = report.summary()
    assert summary["turns"] == 2 and summary["judged_turns"] == 1  # turn 1 is good news, turn 3 neutral
