"""The conversation, its history layout and turn names, a turn's summary (the JSON of
`respond`) and the context meter's arithmetic: pure functions, tested over many inputs."""

import json

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from es4r.conversation import (ASSISTANT, USER, ComponentStatus, ContextUsage, Conversation, Turn,
                               TurnResult, format_history, history_lines, turn_labels)

texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
histories = st.lists(st.tuples(st.sampled_from([USER, ASSISTANT]), texts), min_size=1, max_size=6)


def test_adding_a_turn_leaves_the_conversation_it_came_from_unchanged():
    first = Conversation().with_turn(Turn(USER, "hello"))
    second = first.with_turn(Turn(ASSISTANT, "hi there")).with_turn(Turn(USER, "again"))
    assert [t.text for t in first.turns] == ["hello"]
    assert [t.text for t in second.turns] == ["hello", "hi there", "again"]
    assert [t.text for t in second.user_turns] == ["hello", "again"]
    assert second.history() == [(USER, "hello"), (ASSISTANT, "hi there"), (USER, "again")]
    assert second.history_text() == "User: hello\nYou: hi there\nUser: again"
    assert Conversation().user_turns == [] and Conversation().history() == []


def test_a_lone_turn_is_its_text():
    assert history_lines([(USER, "just this")]) == ["just this"]
    assert format_history([(ASSISTANT, "a reply")]) == "a reply"


@given(histories)
def test_history_layout_loses_no_text_and_names_every_speaker(turns):
    lines = history_lines(turns)
    assert len(lines) == len(turns) and "".join(lines) == format_history(turns)
    if len(turns) == 1:
        return
    for i, (line, (role, text)) in enumerate(zip(lines, turns)):
        name = "User" if role == USER else "You"
        last = i == len(turns) - 1
        assert line == f"{name}: {text}" + ("" if last else "\n")


@given(st.lists(st.sampled_from([USER, ASSISTANT]), max_size=10))
def test_turn_labels_number_each_exchange_once(roles):
    labels = turn_labels([Turn(role, "") for role in roles])
    assert len(labels) == len(roles)
    heard = 0
    for role, label in zip(roles, labels):
        heard += role == USER
        assert label == (f"You {heard}" if role == USER else f"Reply {heard}")


def _result(**changes) -> TurnResult:
    fields = dict(
        transcripts=["I lost my job", "and my flat"], reply_text="I'm so sorry.",
        reply_audio=np.zeros(36_013, np.float32), sample_rate=24_000, energies=[0.1234567, 0.0987654321],
        strategy="comfort", strategy_reason="energy fell → comfort", strategy_params={"speed": 0.9},
        fusion_weights=[0.4444444, 0.5555556],
        timings={"llm": 1.234567, "wall": 2.0}, components={"llm": ComponentStatus("trained", "SmolLM2")},
        path="speech", voice="piper", seed=7, dropped_turns=1, notes=("a note",))
    return TurnResult(**{**fields, **changes})


def test_summary_is_the_turn_in_json_with_rounded_numbers():
    """Seconds to the millisecond, energies and weights to 5 places, timings to 4."""
    summary = _result().summary()
    assert json.loads(json.dumps(summary)) == summary  # plain JSON, no arrays
    assert summary == {
        "transcripts": ["I lost my job", "and my flat"], "reply_text": "I'm so sorry.",
        "reply_seconds": 1.501, "sample_rate": 24_000, "energies": [0.12346, 0.09877],
        "strategy": "comfort", "strategy_reason": "energy fell → comfort", "strategy_params": {"speed": 0.9},
        "fusion_weights": [0.44444, 0.55556], "timings": {"llm": 1.2346, "wall": 2.0},
        "components": {"llm": {"status": "trained", "description": "SmolLM2"}},
        "path": "speech", "voice": "piper", "seed": 7, "dropped_turns": 1, "attention_meaningful": True,
        "notes": ["a note"]}
    assert not _result(path="text").summary()["attention_meaningful"]  # untrained parts: heatmaps not meaningful


def test_result_defaults_drop_nothing_and_note_nothing():
    fields = {k: v for k, v in vars(_result()).items() if k not in ("dropped_turns", "notes")}
    result = TurnResult(**fields)
    assert result.dropped_turns == 0 and result.notes == ()


def _usage(seconds, in_window, window=30.0, tokens=100, max_tokens=1000, reply=200) -> ContextUsage:
    return ContextUsage(turn_seconds=seconds, turns_in_window=in_window, window_seconds=window,
                        history_tokens=tokens, max_tokens=max_tokens, reply_tokens=reply,
                        dropped_turns=len(seconds) - in_window)


def test_window_used_counts_only_the_most_recent_turns_in_the_window():
    assert _usage([10.0, 4.0, 6.0], 2).window_used == 10.0
    assert _usage([10.0, 4.0, 6.0], 3).window_used == 20.0
    assert _usage([10.0, 4.0, 6.0], 0).window_used == 0


def test_more_turns_that_fit_uses_the_average_turn_so_far():
    # speech: 30 s window, 20 s used, turns average 5 s -> 2 more; text: 1000 - 200 - 100 tokens
    # left at 25 tokens a turn -> 28 more
    assert _usage([2.0, 8.0, 4.0, 6.0], 4).more_turns_that_fit() == (2, 28)
    assert _usage([], 0).more_turns_that_fit() == (0, 0)
    # full: never a negative count
    assert _usage([20.0, 20.0], 2, tokens=900).more_turns_that_fit() == (0, 0)
    # the average turn in whole tokens: 90 tokens over 4 turns is 22 a turn, 710 left fit 32
    assert _usage([2.0, 8.0, 4.0, 6.0], 4, tokens=90).more_turns_that_fit() == (2, 32)
    # a turn shorter than a token still counts one token a turn
    assert _usage([1.0, 1.0], 2, tokens=1).more_turns_that_fit() == (28, 799)


@given(st.lists(st.floats(0.1, 30.0), min_size=1, max_size=8), st.integers(0, 800))
def test_the_meter_never_promises_more_than_is_left(seconds, tokens):
    assume(sum(seconds) <= 60.0)  # the turns in the window fit it
    usage = _usage(seconds, len(seconds), window=60.0, tokens=tokens)
    speech, text = usage.more_turns_that_fit()
    average = sum(seconds) / len(seconds)
    assert speech >= 0 and text >= 0
    assert usage.window_used + speech * average <= 60.0 + 1e-6
    assert tokens + text * max(1, tokens // len(seconds)) <= 800
    if usage.window_used + average <= 60.0 - 1e-6:
        assert speech >= 1  # ... and does promise what is


def test_usage_with_one_short_silent_turn_fits_by_its_length():
    usage = _usage([0.0], 1)
    assert usage.more_turns_that_fit()[0] == pytest.approx(30.0 / 1e-6, rel=1e-6)


def test_a_reply_cut_keeps_its_start_and_nothing_else_changes():
    from es4r.conversation import REPLY_CUT_NOTE

    audio = np.arange(24_000, dtype=np.float32)
    talk = Conversation((Turn(USER, "hi", np.zeros(8_000, np.float32), 16_000), Turn(ASSISTANT, "Hello there. How are you?", audio, 24_000)))
    cut = talk.with_reply_cut("Hello there.", 0.5)
    assert cut.turns[0] is talk.turns[0] and cut.turns[1].text == "Hello there."
    assert np.array_equal(cut.turns[1].audio, audio[:12_000]) and cut.turns[1].notes == (REPLY_CUT_NOTE,)
    assert talk.turns[1].text == "Hello there. How are you?" and len(talk.turns[1].audio) == 24_000  # immutable
    with pytest.raises(ValueError):
        cut.with_turn(Turn(USER, "fine", None)).with_reply_cut("x", 1.0)  # the last turn is the person's
