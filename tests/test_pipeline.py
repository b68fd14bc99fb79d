"""Full pipeline on the tiny preset and on the paper preset pointed at local tiny folders."""

import json

import numpy as np
import pytest

from es4r.audio import AudioError, log_mel
from es4r.config import RANDOM, UNTRAINED, Strategy
from es4r.conversation import Conversation, ReplyPath, Turn
from es4r.pipeline import TEXT_PATH_NOTE, ES4RPipeline, PipelineError
from es4r.reply_text import trim_reply
from es4r.turn_events import Answered, Heard, Progress, Spoken, Writing, Written


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline):
    return tiny_pipeline


def test_three_turn_conversation_on_real_speech(pipeline, speech_paths):
    conversation = Conversation()
    stages = []
    for index, path in enumerate(speech_paths):
        conversation, result = pipeline.converse(conversation, path, progress=lambda f, m: stages.append(m))
        assert len(result.transcripts) == index + 1 and len(result.energies) == index + 1
    assert len(conversation.turns) == 6
    assert result.reply_text and result.reply_audio.ndim == 1 and len(result.reply_audio) > 0
    assert np.all(np.isfinite(result.reply_audio)) and result.sample_rate > 0
    assert result.strategy in {"comfort", "neutral", "encourage"} and result.strategy_reason
    assert sum(result.fusion_weights) == pytest.approx(1.0)
    # every turn is heard: three user recordings and the two spoken replies between them
    maps = pipeline.attention_maps(Conversation(conversation.turns[:-1]))  # the reply's heatmaps, asked for
    assert len(maps.intra) == 5 and maps.inter is not None
    assert maps.turn_boundaries[0] == 0 and len(maps.turn_boundaries) == 5
    assert maps.cross.shape[1] == len(maps.history_tokens)
    blocks = maps.cross_blocks
    assert len(blocks) == 5 and all(speech is not None for _, speech in blocks)
    assert blocks[-1][0][1] == len(maps.history_tokens)  # the blocks cover every history word
    assert not maps.meaningful and result.path == "text" and TEXT_PATH_NOTE in result.notes
    assert {"asr", "features", "llm", "tts", "tts_rtf"} <= set(result.timings)
    assert "es4r_encoder" not in result.timings  # the text path reads no speech: nothing encoded for its reply
    assert result.components["llm"].status == RANDOM
    assert result.components["es4r_modules"].status == UNTRAINED
    assert "transcribing" in stages and "done" in stages
    assert "reply_audio" not in result.summary()


def test_each_turn_is_heard_from_one_log_mel(pipeline, speech_paths, monkeypatch):
    """A conversation's turns are heard again every turn; their log-mels are made once."""
    from es4r import audio

    made = []
    monkeypatch.setattr(audio, "log_mel", lambda samples, n_mels: made.append(len(samples)) or log_mel(samples, n_mels))
    conversation = Conversation()
    for path in speech_paths[:3]:
        conversation, _ = pipeline.converse(conversation, path)
    assert len(made) == 5  # three recordings and the two replies heard before the last turn


def test_a_spoken_reply_readies_the_voice_for_the_next(pipeline, speech_paths, monkeypatch):
    """Once a reply is spoken the voice is told the next reply's seed (Piper builds its session
    then, off the next turn's way to the first word)."""
    readied = []
    monkeypatch.setattr(pipeline.voice, "prepare", readied.append, raising=False)
    conversation, _ = pipeline.converse(Conversation(), speech_paths[0])
    assert readied == [pipeline.config.seed]
    with pytest.raises(PipelineError):
        pipeline.respond(conversation)  # no new user turn: nothing spoken, nothing readied
    assert readied == [pipeline.config.seed]


def test_same_turn_renders_identically(pipeline, speech_paths):
    conversation = pipeline.add_user_turn(Conversation(), speech_paths[0], transcript="i feel sad")
    a, b = pipeline.respond(conversation), pipeline.respond(conversation)
    assert a.reply_text == b.reply_text and np.array_equal(a.reply_audio, b.reply_audio)


def test_failed_turn_keeps_the_conversation(pipeline, speech_paths):
    conversation, _ = pipeline.converse(Conversation(), speech_paths[0])
    with pytest.raises(AudioError, match="silent"):
        pipeline.converse(conversation, (16_000, np.zeros(16_000, np.float32)))
    assert len(conversation.turns) == 2
    t = np.arange(32_000) / 16_000
    for signal in (0.3 * np.sign(np.sin(2 * np.pi * 220 * t)), 0.3 * np.sin(2 * np.pi * 50 * t)):  # square, hum
        with pytest.raises(AudioError, match="No speech was detected"):
            pipeline.converse(conversation, (16_000, signal.astype(np.float32)), transcript="words")
    assert len(conversation.turns) == 2
    conversation, result = pipeline.converse(conversation, speech_paths[1])
    assert len(result.transcripts) == 2


def test_a_turn_reports_one_typed_event_per_step(pipeline, speech_paths):
    """turn_events, as the app draws it: heard, written as it grows, spoken sentence by
    sentence, answered; the answer's reply is the written text and its sample rate the voice's."""
    events = list(pipeline.turn_events(Conversation(), speech_paths[0]))
    kinds = [type(event) for event in events]
    assert kinds[0] is Progress and kinds.count(Heard) == kinds.count(Written) == kinds.count(Answered) == 1
    assert kinds.index(Heard) < kinds.index(Writing) < kinds.index(Written) < kinds.index(Answered) == len(events) - 1
    assert Spoken in kinds and kinds.index(Heard) < kinds.index(Spoken)
    heard, written, answered = (events[kinds.index(kind)] for kind in (Heard, Written, Answered))
    assert [t.text for t in answered.conversation.turns] == [heard.conversation.turns[0].text, written.text]
    assert answered.result.reply_text == written.text
    assert {e.sample_rate for e in events if isinstance(e, Spoken)} == {answered.result.sample_rate}
    assert {"first_words", "first_audio", "reply_text"} <= set(answered.result.timings)


def test_path_and_strategy_are_enums_whose_values_are_the_words(pipeline, speech_paths):
    """TurnResult.path and .strategy are enums; JSON, exports and logs hold their words, as before."""
    _, result = pipeline.converse(Conversation(), speech_paths[0])
    assert result.path is ReplyPath.TEXT is pipeline.path
    assert pipeline.variant(speech_path=True).path is ReplyPath.SPEECH
    assert result.strategy is Strategy.NEUTRAL  # one turn: no trend yet
    summary = json.loads(json.dumps(result.summary()))
    assert (summary["path"], summary["strategy"]) == ("text", "neutral")
    assert (f"{result.path} {result.strategy}", str(result.strategy)) == ("text neutral", "neutral")


def test_respond_needs_a_user_turn(pipeline):
    with pytest.raises(PipelineError):
        pipeline.respond(Conversation())


def test_energy_trend_drives_strategy(pipeline, speech_paths):
    from es4r.audio import load_audio

    samples = load_audio(speech_paths[0]).samples
    conversation = Conversation()
    for gain in (1.0, 0.5, 0.25):  # the user gets quieter and quieter
        conversation = pipeline.add_user_turn(conversation, (16_000, samples * gain), transcript="i am tired")
    result = pipeline.respond(conversation)
    assert result.strategy is Strategy.COMFORT
    assert result.fusion_weights[2] > result.fusion_weights[0]  # quieter turns weigh more


def test_paper_preset_loads_local_folders(tiny_dirs, speech_paths):
    from es4r.voice.styletts2 import make_tiny_styletts2_checkpoint

    tts = make_tiny_styletts2_checkpoint(tiny_dirs["whisper"].parent / "styletts2")
    paper = ES4RPipeline.from_preset("paper", whisper=str(tiny_dirs["whisper"]), llm=str(tiny_dirs["llm"]),
                                     tts=str(tts), voice="styletts2")
    assert paper.config.preset == "paper" and paper.config.plora.r == 16
    conversation, result = paper.converse(Conversation(), speech_paths[2], transcript="hello there")
    assert result.reply_text and len(result.reply_audio) > 0


def test_trim_reply():
    assert trim_reply("I hear you. That is hard. Do you want to talk? More", 2) == "I hear you. That is hard."
    assert trim_reply("I hear you. And then", 2) == "I hear you."
    assert trim_reply("no sentence end", 2) == "no sentence end"
    assert trim_reply("You: I'm glad. Truly. Yes.", 2) == "I'm glad. Truly."
    assert trim_reply("Dr.Who is 3.5 m tall. Yes.", 1) == "Dr.Who is 3.5 m tall."


def test_input_notes_reach_the_chat_and_routine_conversions_only_the_export(pipeline, speech_paths):
    """A clipped recording is something to act on (chat and result); downmixing and resampling
    happen to every browser microphone's audio (kept in the export, never in the chat)."""
    from es4r.audio import load_audio
    from es4r.ui.format import chat_messages

    samples = load_audio(speech_paths[0]).samples
    loud_stereo = np.clip(np.stack([samples, samples], axis=1) * 40, -1, 1).astype(np.float32)
    conversation, result = pipeline.converse(Conversation(), (16_000, loud_stereo), transcript="hello")
    from es4r.ui.archive import conversation_record

    notes, conversions = conversation.turns[0].notes, conversation.turns[0].conversions
    assert any("clipped" in n for n in notes) and not any("downmixed" in n for n in notes)
    assert any("downmixed 2 channels" in c for c in conversions)
    assert all(f"your recording: {n}" in result.notes for n in notes)
    chat = chat_messages(conversation)[0]["content"]
    assert all(n in chat for n in notes) and "downmixed" not in chat
    record = conversation_record(conversation, [result], "tiny")["turns"][0]
    assert record["input_conversions"] == list(conversions) and record["input_notes"] == list(notes)
    _, plain = pipeline.converse(Conversation(), (16_000, np.stack([samples, samples], axis=1) * 0.5), transcript="hi")
    assert not [n for n in plain.notes if n.startswith("your recording")]  # ordinary stereo: no note at all


def test_streamed_reply_grows_and_ends_as_the_unstreamed_one(pipeline, speech_paths):
    conversation = pipeline.add_user_turn(Conversation(), speech_paths[0], transcript="i feel sad today")
    plain = pipeline.think(conversation)
    pieces: list[str] = []
    streamed = pipeline.think(conversation, on_text=pieces.append)
    assert streamed.reply_text == plain.reply_text  # greedy: streaming changes nothing
    assert pieces and pieces[-1] == streamed.reply_text
    words = [p.split() for p in pieces]
    assert all(a == b[: len(a)] for a, b in zip(words, words[1:]) if len(a) <= len(b))  # it grows


def test_the_heatmaps_are_made_when_asked_not_on_the_way_to_a_reply(pipeline, speech_paths, monkeypatch):
    """The text path encodes no speech for its reply; the speech path encodes once, before its
    first word, without the attention weights. The heatmaps' pass (with weights) runs only when
    a view asks, once per turn however often it asks, and shows the turns the reply heard."""
    conversation = pipeline.add_user_turn(Conversation(), speech_paths[0], transcript="i feel sad today")
    conversation = pipeline.add_user_turn(conversation.with_turn(Turn("assistant", "oh no, why?")), speech_paths[1],
                                          transcript="my exam went badly")
    for path, encodes in ((pipeline.variant(speech_path=False), []), (pipeline.variant(speech_path=True), [False])):
        events: list = []
        encode = path.model.encode_speech
        monkeypatch.setattr(path.model, "encode_speech",
                            lambda *a, need_weights=True, **k: events.append(need_weights) or encode(*a, need_weights=need_weights, **k))
        path.think(conversation, on_text=lambda text: events.append("text"))
        assert events == encodes + ["text"] * (len(events) - len(encodes)) and "text" in events
        events.clear()
        maps = path.attention_maps(conversation)
        assert path.attention_maps(conversation) is maps and events == [True]  # made once, with weights
        monkeypatch.undo()
        assert len(maps.intra) == 2 and maps.window_labels == ["You 1", "You 2"]  # the reply between has no audio
        assert maps.cross is not None and maps.cross.shape[1] == len(maps.history_tokens)
        assert maps.meaningful == path.speech_path


def test_the_warm_up_answers_a_turn_and_keeps_only_the_system_prompt(pipeline, speech_paths):
    """app.py answers one bundled turn at start-up and forgets it; what it keeps is the LLM's
    cache of the system prompt, which the first visitor's reply then starts from."""
    history = [("user", "my sister is coming home next week")]
    pipeline.model.prefix_cache.clear()
    assert pipeline.model.generate(history, None)[0].reused_tokens == 0  # a cold start reads it all
    pipeline.model.prefix_cache.clear()
    assert pipeline.warm_up(speech_paths[0]) > 0
    system_prompt = pipeline.model.prompt_parts(history).prefix_ids
    assert pipeline.model.generate(history, None)[0].reused_tokens >= min(len(system_prompt), 8)


def _decision(energies):
    from es4r.voice.strategy import select_strategy

    return select_strategy(energies)


def _reading(affect, turns=4):
    from es4r.modeling.affect_reader import AffectReading

    return AffectReading(affect, f"→ {affect}", trend=(0.84, -6.52), turns=turns)


RISE, FALL, STEADY = [1.0, 1.0, 1.53], [1.0, 0.6, 0.3], [1.0, 1.0, 1.0]  # encourage, comfort, neutral


@pytest.mark.parametrize("energies, affect", [(RISE, "rising"), (FALL, "falling"), (STEADY, "flat")])
def test_a_strategy_that_goes_with_the_affect_reading_needs_no_word(energies, affect):
    from es4r.pipeline import strategy_versus_affect

    assert strategy_versus_affect(_decision(energies), _reading(affect)) is None
    assert strategy_versus_affect(_decision(energies), _reading(None)) is None  # no reading, nothing to square


@pytest.mark.parametrize("energies, affect, says", [
    (RISE, "flat", "why the voice encourages while you sound calm and steady"),  # the "rose 53 %" beside it
    (RISE, "falling", "why the voice encourages while you sound more subdued"),
    (FALL, "rising", "why the voice comforts while you sound livelier"),
    (FALL, "flat", "why the voice comforts while you sound calm and steady"),
    (STEADY, "rising", "why the voice stays neutral while you sound livelier"),
    (STEADY, "falling", "why the voice stays neutral while you sound more subdued"),
])
def test_a_strategy_against_the_affect_reading_says_why(energies, affect, says):
    from es4r.pipeline import strategy_versus_affect

    why = strategy_versus_affect(_decision(energies), _reading(affect, turns=3))
    assert why.startswith(says) and "over all 3 heard turns" in why and "loudness and pace" in why
    assert ("last 3 turns" if energies is FALL else "your last turn compares with the one before") in why


def test_the_turns_notes_tell_the_llms_note_and_square_it_with_the_strategy(pipeline, speech_paths, monkeypatch):
    """What the page says of a turn: the note the LLM got is the measured one, and a strategy
    that differs from the affect reading comes with the reason (here: energy rose, voice flat)."""
    from dataclasses import replace

    from es4r.audio import load_audio
    from es4r.modeling.affect_reader import AffectReading

    samples = load_audio(speech_paths[0]).samples
    conversation = Conversation()
    for gain in (0.25, 0.5, 1.0):  # louder and louder: encourage
        conversation = pipeline.add_user_turn(conversation, (16_000, samples * gain), transcript="guess what")
    generate = pipeline._generate
    for affect, trend, told, explained in (("rising", (0.84, -6.52), "louder but slower", False),
                                           ("flat", (0.1, 0.1), "calm and steady", True)):
        heard = AffectReading(affect, f"over 3 turns … → {affect}", trend=trend, turns=3)
        monkeypatch.setattr(pipeline, "_generate", lambda *a, **k: replace(generate(*a, **k), affect=heard))
        draft = pipeline.think(conversation)
        assert draft.plan.decision.name == "encourage"
        assert any(n.startswith("how you sound") and told in n for n in draft.notes)
        assert any(n.startswith("why the voice encourages") for n in draft.notes) == explained


def test_a_turn_tokenises_each_text_of_its_history_once(pipeline, speech_paths, monkeypatch):
    """A turn lays its prompt out several times (fitting the context, the prompt itself, the bans
    on earlier replies and openings, the context meter): each distinct text reaches the
    tokenizer once, and the next turn does not tokenise again what it shares with this one.
    The counterpart: the ids are the tokenizer's own, as if nothing were kept."""
    from collections import OrderedDict

    from es4r.modeling.model import prompt_parts

    tokenizer, seen = pipeline.model.tokenizer, []
    call = type(tokenizer).__call__  # every use of the LLM's tokenizer, whoever holds it
    monkeypatch.setattr(type(tokenizer), "__call__", lambda self, text, **kwargs: seen.append(text if isinstance(text, str) else repr(text)) or call(self, text, **kwargs))
    monkeypatch.setattr(pipeline.model.token_ids, "_ids", OrderedDict())  # a cold start
    conversation = Conversation()
    for path, text in zip(speech_paths[:2], ["i lost my keys today", "and then i missed the bus"]):
        before = len(seen)
        conversation, _ = pipeline.converse(conversation, path, transcript=text)
        pipeline.context_usage(conversation)
        turn = seen[before:]
        assert turn and len(turn) == len(set(turn)), sorted(t for t in set(turn) if turn.count(t) > 1)
    assert len(seen) == len(set(seen)), sorted(t[:80] for t in set(seen) if seen.count(t) > 1)  # turn 2 re-tokenised nothing turn 1 had
    for layout in (conversation.history(), conversation.history()[:1], conversation.history()[-2:]):
        assert pipeline.model.prompt_parts(layout) == prompt_parts(tokenizer, layout,
                                                                   pipeline.config.generation.system_prompt)
