"""Speaking a reply while it is written (#13): which sentences are settled, and that the
streamed reply is the same file as the one spoken after the text is done."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from es4r.conversation import Conversation
from es4r.modeling.outputs import GenerationOutput
from es4r.voice.base import sentences
from es4r.voice.sentence_speaker import SentenceSpeaker, ready_sentences

WAIT_FOR_VOICE_S = 10.0
REPLY = "I am so sorry to hear about your week. That sounds really exhausting for you. Do you want to talk about it?"
CLAUSE_REPLY = "I am here to support you, and I can offer some guidance on how to handle a difficult week."


@pytest.mark.parametrize("written, ready", [
    ("I am so sorry to hear", []),  # no sentence end yet
    ("I am so sorry to hear about your week.", []),  # its end is not followed by text yet
    ("I am so sorry to hear about your week. That", []),  # the next could still be short and join it
    ("I am so sorry to hear about your week. That sounds really", ["I am so sorry to hear about your week."]),
    ("Oh no. That sounds really hard", []),  # "Oh no." is short: it joins the next sentence
    ("Oh no. That sounds really hard. Do you", []),
    ("Oh no. That sounds really hard. Do you want to", ["Oh no. That sounds really hard."]),
    ("*** 🙂. I see how you", []),  # nothing speakable in the complete part
    # the first sentence's first clause, once three words follow it (split_sentences' rule)
    ("I am here to support you, and I", []),
    ("I am here to support you, and I can", ["I am here to support you,"]),
    ("Oh, I see, that is", []),
    ("Oh, I see, that is hard", ["Oh, I see,"]),
    ("I'm sorry, I will listen to", []),  # "I'm sorry," is two words: the sentence is the unit
    ("I am so sorry… that, is it hard for", []),  # "I am so sorry…" is the first sentence
])
def test_a_sentence_is_ready_when_no_later_text_can_change_it(written, ready):
    assert ready_sentences(written) == ready


@pytest.mark.parametrize("reply", [
    REPLY, CLAUSE_REPLY,
    "I'm so sorry to hear that, John. Oh no. It is hard, really.",
    "Oh, I see, that is hard for you, and I am here. Do you want to talk?",
    "I am so sorry… that, is it hard for you to talk about it, my friend?",
    "That sounds really exhausting, especially after a long week; do you want to rest? Yes.",
])
def test_ready_sentences_are_always_the_start_of_the_final_split(reply):
    final = sentences(reply)
    for n in range(1, len(reply) + 1):  # as the reply grows, character by character
        ready = ready_sentences(reply[:n])
        assert final[: len(ready)] == ready, (reply[:n], ready)


class _Recorder:
    def __init__(self):
        self.pieces: list[np.ndarray] = []
        self.times: list[float] = []
        self.first = threading.Event()

    def __call__(self, rate: int, audio: np.ndarray) -> None:
        self.pieces.append(audio)
        self.times.append(time.perf_counter())
        self.first.set()


@pytest.mark.parametrize("reply, units", [(REPLY, 3), (CLAUSE_REPLY, 2)])
def test_spoken_while_written_is_the_file_spoken_after(tiny_pipeline, reply, units):
    voice, params = tiny_pipeline.voice, tiny_pipeline.config.strategy.table["comfort"]
    whole = voice.synthesize(reply, None, params, seed=7)
    heard = _Recorder()
    speaker = SentenceSpeaker(lambda: voice.start(None, params, seed=7), heard)
    words = reply.split()
    for n in range(1, len(words) + 1):
        speaker.offer(" ".join(words[:n]))
    result = speaker.finish(reply)
    np.testing.assert_array_equal(result.waveform, whole.waveform)
    np.testing.assert_array_equal(np.concatenate(heard.pieces), whole.waveform)  # what was played, in order
    assert len(heard.pieces) == len(sentences(reply)) == units and not speaker.restarted


class _CountedVoice:
    """A voice whose utterances count their starts and renders."""

    def __init__(self, voice, params, seed):
        self.voice, self.params, self.seed, self.starts, self.renders = voice, params, seed, 0, []

    def start(self):
        self.starts += 1
        utterance, renders = self.voice.start(None, self.params, seed=self.seed), self.renders

        class Counted:
            sample_rate = utterance.sample_rate

            def add(self, unit):
                renders.append(unit)
                return utterance.add(unit)

            def result(self):
                return utterance.result()

        return Counted()


@pytest.mark.parametrize("reply, guess_kept", [
    (REPLY, True),  # the first sentence is rendered ahead and played once "That sounds really" settles it
    ("I am so sorry to hear about your week. Oh no. That sounds really hard for you.", False),  # "Oh no." joins it
    ("I am so sorry to hear about your week.", True),  # the reply ends there: finish plays what was rendered
])
def test_the_first_sentence_is_rendered_before_it_is_settled(tiny_pipeline, reply, guess_kept):
    """A complete first sentence is rendered while the next one could still join it; the
    rendering is played if it stands, else the voice starts afresh. Either way the file and
    what was played are what a non-streamed turn makes."""
    params = tiny_pipeline.config.strategy.table["neutral"]
    whole = tiny_pipeline.voice.synthesize(reply, None, params, seed=3)
    voice, heard = _CountedVoice(tiny_pipeline.voice, params, 3), _Recorder()
    speaker = SentenceSpeaker(voice.start, heard)
    words = reply.split()
    for n in range(1, len(words) + 1):
        speaker.offer(" ".join(words[:n]))
    result = speaker.finish(reply)
    np.testing.assert_array_equal(result.waveform, whole.waveform)
    np.testing.assert_array_equal(np.concatenate(heard.pieces), whole.waveform)
    units = sentences(reply)
    assert voice.renders[0] == "I am so sorry to hear about your week."  # rendered ahead in every case
    if guess_kept:
        assert voice.starts == 1 and voice.renders == units
    else:
        assert voice.starts == 2 and voice.renders[1:] == units and not speaker.restarted


def test_a_changed_text_is_spoken_again_for_the_file(tiny_pipeline):
    """If the final text does not start with what was spoken (it cannot happen with ready
    sentences; guarded anyway), the file is still exactly the final text's."""
    voice, params = tiny_pipeline.voice, tiny_pipeline.config.strategy.table["neutral"]
    speaker = SentenceSpeaker(lambda: voice.start(None, params, seed=1), _Recorder())
    speaker.offer("I am so sorry to hear about your week. That sounds really")
    final = "I am very glad to hear about your week. That sounds really good."
    result = speaker.finish(final)
    assert speaker.restarted
    np.testing.assert_array_equal(result.waveform, voice.synthesize(final, None, params, seed=1).waveform)


def test_a_failing_voice_fails_the_finish_not_the_writer(tiny_pipeline):
    class Broken:
        sample_rate = 16_000

        def add(self, sentence):
            raise RuntimeError("voice engine crashed")

    speaker = SentenceSpeaker(Broken, _Recorder())
    speaker.offer(REPLY)  # returns at once; the error stays on the speaker's thread
    with pytest.raises(RuntimeError, match="crashed"):
        speaker.finish(REPLY)


def test_the_voice_starts_beside_the_writer(tiny_pipeline, speech_paths):
    """The voice session is built on the speaker's thread (it took ~0.1 s before the LLM could
    start); one that cannot start fails the finish, and the turn says so in words."""
    from es4r.pipeline import PipelineError
    from es4r.voice.base import TTSError

    began, started = threading.Event(), threading.Event()

    def slow_start():
        began.set()
        assert started.wait(WAIT_FOR_VOICE_S)
        raise TTSError("the voice could not start")

    speaker = SentenceSpeaker(slow_start, _Recorder())  # returns while the voice is still starting
    assert began.wait(WAIT_FOR_VOICE_S)
    started.set()
    with pytest.raises(TTSError, match="could not start"):
        speaker.finish(REPLY)

    voice = tiny_pipeline.voice

    def broken_start(*args, **kwargs):
        raise TTSError("the voice could not start")

    conversation = tiny_pipeline.add_user_turn(Conversation(), speech_paths[0], transcript="it was a rough week")
    try:
        voice.start, saved = broken_start, voice.start
        with pytest.raises(PipelineError, match="could not start"):
            tiny_pipeline.respond(conversation, on_audio=lambda rate, audio: None)
    finally:
        voice.start = saved


def test_the_first_sentence_plays_before_the_last_is_written(tiny_pipeline, speech_paths, monkeypatch):
    """On a reply written slowly, the first sentence's audio arrives while the LLM is still
    writing the last one; the turn's audio is the same file as a turn spoken after its text."""
    pipeline = tiny_pipeline
    conversation = pipeline.add_user_turn(Conversation(), speech_paths[0], transcript="it was a rough week")
    written_at: list[float] = []
    heard = _Recorder()

    reply = " ".join(sentences(REPLY)[:2])  # the reply is cut after two sentences (GenerationConfig)

    def slow_llm(history, features, encoding, on_text, avoid=()):
        words = reply.split()
        for n in range(1, len(words) + 1):
            time.sleep(0.02)
            if n == len(words):  # the last word waits (a while) for the first sentence's voice
                heard.first.wait(WAIT_FOR_VOICE_S)
            if on_text is not None:
                on_text(" ".join(words[:n]))
            written_at.append(time.perf_counter())
        return GenerationOutput(reply, list(range(len(words))), None, [], False)

    monkeypatch.setattr(pipeline, "_generate", slow_llm)
    streamed = pipeline.respond(conversation, on_audio=heard)
    assert heard.times and heard.times[0] < written_at[-1], "the voice starts before the reply is written"
    plain = pipeline.respond(conversation)
    assert streamed.reply_text == plain.reply_text == reply
    np.testing.assert_array_equal(streamed.reply_audio, plain.reply_audio)
    np.testing.assert_array_equal(np.concatenate(heard.pieces), streamed.reply_audio)


def test_the_text_path_speaks_every_sentence_and_encodes_no_speech(tiny_pipeline, speech_paths, monkeypatch):
    """The text path reads no speech: nothing is encoded on the way to its reply or after it (the
    heatmaps are made when a view asks). The last sentence is queued for the voice as soon as the
    final text is known (`offer_final`), so it is spoken before the turn's closing step begins,
    and the pieces played make the reply's file."""
    pipeline = tiny_pipeline
    assert not pipeline.speech_path
    conversation = pipeline.add_user_turn(Conversation(), speech_paths[0], transcript="it was a rough week")
    reply = " ".join(sentences(REPLY)[:2])
    heard, encoded = _Recorder(), []

    def llm(history, features, encoding, on_text, avoid=()):
        words = reply.split()
        for n in range(1, len(words) + 1):
            on_text(" ".join(words[:n]))
        return GenerationOutput(reply, list(range(len(words))), None, [], False)

    monkeypatch.setattr(pipeline, "_generate", llm)
    monkeypatch.setattr(pipeline.model, "encode_speech", lambda *args, **kwargs: encoded.append(1))
    speak, before_speak = pipeline.speak, []

    def speak_once_spoken(*args, **kwargs):
        deadline = time.perf_counter() + WAIT_FOR_VOICE_S
        while len(heard.pieces) < len(sentences(reply)) and time.perf_counter() < deadline:
            time.sleep(0.01)
        before_speak.append(len(heard.pieces))
        return speak(*args, **kwargs)

    monkeypatch.setattr(pipeline, "speak", speak_once_spoken)
    streamed = pipeline.respond(conversation, on_audio=heard)
    assert encoded == [] and before_speak == [len(sentences(reply))] == [len(heard.pieces)]
    np.testing.assert_array_equal(np.concatenate(heard.pieces), streamed.reply_audio)


def test_piper_spoken_while_written_is_the_file_spoken_after():
    from es4r.config import StrategyConfig
    from es4r.voice.piper_engine import PiperEngine, piper_available

    if not piper_available():
        pytest.skip("the Piper voice is not installed")
    voice, params = PiperEngine.from_pretrained(), StrategyConfig().table["encourage"]
    heard = _Recorder()
    speaker = SentenceSpeaker(lambda: voice.start(None, params, seed=5), heard)
    speaker.offer(REPLY[: REPLY.index("exhausting")])
    result = speaker.finish(REPLY)
    np.testing.assert_array_equal(result.waveform, voice.synthesize(REPLY, None, params, seed=5).waveform)
    np.testing.assert_array_equal(np.concatenate(heard.pieces), result.waveform)


def test_other_random_draws_between_sentences_change_nothing(tiny_pipeline):
    """While a reply is spoken sentence by sentence, other work (an LLM that samples) draws
    from the same global generator between its sentences; the voice's own noise carries on
    as in one pass, so the file is still the one `synthesize` makes."""
    import torch

    voice, params = tiny_pipeline.voice, tiny_pipeline.config.strategy.table["neutral"]
    utterance = voice.start(None, params, seed=11)
    for sentence in sentences(REPLY):
        torch.rand(7)
        utterance.add(sentence)
    np.testing.assert_array_equal(utterance.result().waveform, voice.synthesize(REPLY, None, params, seed=11).waveform)


def test_a_first_clause_is_followed_by_half_a_pause():
    """The voice already pauses a little at the comma it speaks: after a first clause the
    pause put between units is halved, after a sentence it is whole."""
    from es4r.voice.base import SpokenSentences

    spoken, sound = SpokenSentences(), np.ones(10, np.float32)
    for unit in ("I am here to support you,", "and I can offer some help.", "Do you want to talk?"):
        spoken.append(unit, sound, 8)
    assert [int((piece == 0).sum()) for piece in spoken.pieces] == [0, 4, 8]
