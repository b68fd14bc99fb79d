"""The app's text (es4r/ui/format.py) on constructed results: the status line and card, the
chat messages, the strategy card, the latency table and the context meter. What each shows
is checked against the result it came from, and what it must leave out as well."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from es4r.config import FALLBACK, RANDOM, TRAINED, UNTRAINED
from es4r.conversation import (ASSISTANT, MILESTONES, STAGE_ORDER, USER, WALL, ComponentStatus,
                               ContextUsage, Conversation, Turn, TurnResult)
from es4r.ui.format import (PENDING_REPLY, chat_messages, context_markdown, latency_table, status_line,
                            status_markdown, strategy_markdown)

COMPONENTS = {"asr": ComponentStatus(TRAINED, "Whisper tiny.en"), "llm": ComponentStatus(RANDOM, "tiny LLM"),
              "es4r_modules": ComponentStatus(UNTRAINED, "at initialisation"),
              "reader": ComponentStatus("odd", "an affect reader"), "voice": ComponentStatus(FALLBACK, "Piper")}


def _result(**changes) -> TurnResult:
    fields = dict(
        transcripts=["hi"], reply_text="Hello.", reply_audio=np.zeros(10, np.float32), sample_rate=10,
        energies=[0.5, 0.25], strategy="comfort", strategy_reason="energy fell → comfort",
        strategy_params={"name": "comfort", "alpha": 0.1, "beta": 0.5, "speed": 0.9, "expressiveness": 0.3,
                         "gain_db": -2.0, "diffusion_steps": 5, "embedding_scale": 1.0,
                         "engine": {"length_scale": 1.1111111, "noise": 0.5}},
        fusion_weights=[0.333333, 0.666667],
        timings={}, components=COMPONENTS, path="speech", voice="piper:en_US-joe", seed=11)
    return TurnResult(**{**fields, **changes})


# ---- status --------------------------------------------------------------------------------
def test_status_line_says_what_runs_and_how_the_reply_is_answered():
    line = status_line("tiny", COMPONENTS, "piper:en_US-joe")
    assert line.startswith("**Running preset `tiny`** — answered from the transcript — the speech model is not "
                           "trained yet · ")
    assert ("ASR: trained · LLM: random weights, output not meaningful · ES4R modules: not trained yet · "
            "reader: odd · ") in line  # unknown names and statuses are shown as they are
    assert line.endswith("**voice:** piper:en_US-joe (standing in for StyleTTS2, which is not installed here)")
    assert "voice: a stand-in" not in line  # the voice has its own part of the line, not a badge among the others
    trained = {**COMPONENTS, "es4r_modules": ComponentStatus(TRAINED, "trained"),
               "voice": ComponentStatus(RANDOM, "tiny StyleTTS2")}
    line = status_line("embedded", trained, "styletts2")
    assert "— answered by the speech model · " in line and "not trained yet" not in line
    assert line.endswith("**voice:** styletts2 (random weights, output not meaningful)")
    bare = status_line("x", {"llm": ComponentStatus(TRAINED, "LLM")}, "espeak")
    assert "answered from the transcript" in bare and bare.endswith("**voice:** espeak ()")


def test_status_card_has_one_line_per_component_in_order():
    lines = status_markdown("tiny", COMPONENTS, "piper").split("\n")
    assert lines[0] == "**Preset:** `tiny` · **voice:** piper"
    assert lines[1:] == ["- **ASR** — trained: Whisper tiny.en", "- **LLM** — random weights, output not meaningful: tiny LLM",
                         "- **ES4R modules** — not trained yet: at initialisation", "- **reader** — odd: an affect reader",
                         "- **voice** — a stand-in: Piper"]


# ---- chat ----------------------------------------------------------------------------------
def test_chat_messages_are_the_turns_with_their_input_notes():
    conversation = Conversation((Turn(USER, "hello", notes=("12% of samples are clipped", "very quiet")),
                                 Turn(ASSISTANT, "hi"), Turn("system", "never shown"), Turn(USER, "again")))
    assert chat_messages(conversation) == [
        {"role": "user", "content": "hello\n\n*⚠ 12% of samples are clipped* · *⚠ very quiet*"},
        {"role": "assistant", "content": "hi"}, {"role": "user", "content": "again"}]
    pending = chat_messages(conversation, pending_reply=True)
    assert pending[-1] == {"role": "assistant", "content": PENDING_REPLY} and len(pending) == 4
    assert chat_messages(Conversation()) == []


# ---- strategy card -------------------------------------------------------------------------
def test_strategy_card_shows_the_result_and_only_the_settings_its_voice_reads():
    card = strategy_markdown(_result(), 3)
    assert card.startswith("### Turn 3: strategy **comfort**\n**Why:** energy fell → comfort\n\n")
    assert "**Strategy settings:** speed `0.9` · expressiveness `0.3` · gain_db `-2`  \n" in card
    for hidden in ("alpha", "beta", "diffusion_steps", "embedding_scale", "`comfort`", "name"):
        assert hidden not in card.split("**Voice engine")[0].split("**Why:**")[1], hidden
    assert "**Voice engine settings used:** length_scale=1.11, noise=0.5  \n" in card
    assert "**Style-fusion weights:** turn 1: 0.33, turn 2: 0.67  \n" in card
    assert card.endswith("**Spoken by:** piper:en_US-joe (seed 11) · **path:** speech")
    styletts2 = strategy_markdown(_result(voice="styletts2", notes=("one", "two")), 1)
    assert ("**Strategy settings:** alpha `0.1` · beta `0.5` · speed `0.9` · expressiveness `0.3` · gain_db `-2` · "
            "diffusion_steps `5` · embedding_scale `1`  \n") in styletts2
    assert styletts2.endswith("**path:** speech\n\n**Notes:**\n- one\n- two")
    plain = strategy_markdown(_result(fusion_weights=[], strategy_params={"speed": 1.0}), 2)
    assert "**Voice engine settings used:** —  \n" in plain and "**Style-fusion weights:** off  \n" in plain
    assert "Notes" not in plain


# ---- latency table -------------------------------------------------------------------------
stage_seconds = st.dictionaries(st.sampled_from(STAGE_ORDER), st.floats(0.0, 5.0), min_size=1)


@given(st.lists(st.tuples(stage_seconds, st.floats(0.0, 20.0), st.booleans()), min_size=1, max_size=4))
def test_latency_stages_and_other_add_up_to_the_total(turns):
    results = []
    for stages, wall, has_wall in turns:
        results.append(_result(timings={**stages, **({WALL: wall} if has_wall else {}),
                                         "llm_tokens_per_s": 12.345, "first_words": 0.75}))
    headers, rows = latency_table(results)
    assert headers == ["stage", *[f"turn {n}" for n in range(1, len(turns) + 1)]]
    present = [s for s in STAGE_ORDER if any(s in stages for stages, _, _ in turns)]
    labels = [row[0] for row in rows]
    assert labels == [*[f"{s} (s)" for s in present], "other (s)", "total (s)", "first words (at s)",
                      "LLM tokens/s", "TTS RTF"]
    for column, (stages, wall, has_wall) in enumerate(turns, start=1):
        values = {row[0]: row[column] for row in rows}
        stage_sum = sum(stages.values())
        for stage in present:
            assert values[f"{stage} (s)"] == round(stages.get(stage, 0.0), 2)
        total = wall if has_wall else stage_sum
        assert values["other (s)"] == round(max(total - stage_sum, 0.0), 2) >= 0
        assert values["total (s)"] == round(stage_sum + max(total - stage_sum, 0.0), 2)
        assert values["first words (at s)"] == 0.75  # a moment, never added to the total
        assert values["LLM tokens/s"] == 12.3 and values["TTS RTF"] == 0.0


def test_latency_moments_and_rates_are_shown_apart_and_in_order():
    timings = {"tts": 1.0, "llm": 2.0, "asr": 0.5, WALL: 4.0, "reply_text": 2.5, "first_audio": 1.5,
               "first_words": 1.25, "tts_rtf": 0.456, "llm_tokens_per_s": 20.0}
    headers, rows = latency_table([_result(timings=timings)])
    assert rows == [["asr (s)", 0.5], ["llm (s)", 2.0], ["tts (s)", 1.0], ["other (s)", 0.5], ["total (s)", 4.0],
                    *[[f"{m.replace('_', ' ')} (at s)", timings[m]] for m in MILESTONES],
                    ["LLM tokens/s", 20.0], ["TTS RTF", 0.46]]
    assert latency_table([]) == (["stage"], [["other (s)"], ["total (s)"], ["LLM tokens/s"], ["TTS RTF"]])


# ---- context meter -------------------------------------------------------------------------
def _usage(seconds, in_window, tokens=90, max_tokens=512, reply=8) -> ContextUsage:
    return ContextUsage(seconds, turns_in_window=in_window, window_seconds=60.0, history_tokens=tokens,
                        max_tokens=max_tokens, reply_tokens=reply, dropped_turns=len(seconds) - in_window)


def test_context_meter_reads_the_usage_it_is_given():
    assert context_markdown(None) == context_markdown(_usage([], 0)) == "**Context:** empty — record a first turn."
    lines = context_markdown(_usage([10.0, 5.0], 2)).split("  \n")
    assert lines == [
        "**Speech window:** 2 of 2 spoken turns, yours and the replies (15.0 s of 60 s); about 6 more turn(s) of "
        "this length fit.",
        "**LLM context:** 90 of 504 history tokens (8 kept for the reply); about 9 more turn(s) fit."]


def test_context_meter_warns_when_turns_are_dropped_or_nearly_full_but_not_otherwise():
    dropped = context_markdown(_usage([20.0, 25.0, 20.0], 2)).split("  \n")
    assert dropped[2] == ("**Warning:** the oldest 1 turn(s) no longer fit the speech window and were left out of "
                          "the speech encoding (their text is still in the history).") and len(dropped) == 3
    nearly = context_markdown(_usage([25.0], 1)).split("  \n")  # 35 s left: one more 25 s turn
    assert nearly[2] == "**Nearly full:** from the next turn on, the oldest turns may be left out." and len(nearly) == 3
    assert len(context_markdown(_usage([20.0], 1)).split("  \n")) == 2  # two more fit: no warning
    tokens = context_markdown(_usage([5.0], 1, tokens=200, max_tokens=220, reply=16)).split("  \n")  # 4 left, 1 fits
    assert tokens[2].startswith("**Nearly full:**")
    over = context_markdown(_usage([5.0], 1, tokens=300, max_tokens=300, reply=16)).split("  \n")
    assert over[-1] == ("**Warning:** the text history is longer than the LLM context budget; start a new "
                        "conversation.") and "about 0 more turn(s) fit" in over[1]
    at_budget = context_markdown(_usage([5.0], 1, tokens=284, max_tokens=300, reply=16))
    assert "longer than the LLM context budget" not in at_budget


@pytest.mark.parametrize("status", [TRAINED, FALLBACK, RANDOM, UNTRAINED])
def test_every_status_has_plain_words(status):
    line = status_markdown("p", {"llm": ComponentStatus(status, "d")}, "v")
    assert f"— {status}:" not in line or status == TRAINED
