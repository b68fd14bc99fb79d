"""The pipeline's context meter (`ES4RPipeline.context_usage`) on the tiny random model and
constructed turns of known length: every spoken turn counted at its own rate, the window the
model's own, the history tokens the prompt's. No voice is needed to count, so none is built."""

from __future__ import annotations

import numpy as np
import pytest

from es4r.audio import FRAMES_PER_SECOND
from es4r.config import preset_config
from es4r.conversation import ASSISTANT, USER, Conversation, Turn
from es4r.pipeline import ES4RPipeline

VOICE_RATE = 24_000


@pytest.fixture(scope="module")
def pipeline(tiny_model):
    return ES4RPipeline(preset_config("tiny"), tiny_model, voice=None, components={}, speech_path=False)


def _noise(seconds: float, rate: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(int(seconds * 10)).standard_normal(int(seconds * rate))).astype(np.float32)


def test_the_meter_counts_every_spoken_turn_at_its_own_rate(pipeline):
    config = pipeline.config
    rate = config.audio.sample_rate
    conversation = Conversation((
        Turn(USER, "I had a rough week.", _noise(2.0, rate), rate),
        Turn(ASSISTANT, "I'm sorry to hear that.", _noise(1.5, VOICE_RATE), VOICE_RATE),  # the reply, at the voice's rate
        Turn(USER, "My manager shouted.", _noise(1.0, rate), None),  # no rate given: the audio config's
        Turn(ASSISTANT, "That sounds hard.", None, None),  # written, never spoken: not heard
        Turn(USER, "typed", np.zeros(0, np.float32), rate),  # nothing recorded: not heard
    ))
    usage = pipeline.context_usage(conversation)
    assert usage.turn_seconds == pytest.approx([2.0, 1.5, 1.0])
    assert (usage.turns_in_window, usage.dropped_turns) == (3, 0)
    assert usage.window_seconds == pipeline.model.max_frames * config.dual.downsample / FRAMES_PER_SECOND
    prompt = pipeline.model.prompt_parts(conversation.history(), config.generation)
    assert usage.history_tokens == len(prompt.history_ids) > 0
    assert (usage.max_tokens, usage.reply_tokens) == (config.generation.max_context_tokens,
                                                      config.generation.max_new_tokens)


def test_the_meter_drops_the_oldest_turns_the_window_cannot_hold(pipeline):
    rate = pipeline.config.audio.sample_rate
    window = pipeline.model.max_frames * pipeline.config.dual.downsample / FRAMES_PER_SECOND
    turns = tuple(Turn(USER if i % 2 == 0 else ASSISTANT, f"turn {i}", _noise(0.4 * window, rate), rate)
                  for i in range(4))
    usage = pipeline.context_usage(Conversation(turns))
    assert (usage.turns_in_window, usage.dropped_turns) == (2, 2)  # 0.8 of the window fits, 1.2 does not
    assert usage.window_used == pytest.approx(0.8 * window)
    kept, dropped = pipeline.model.fit_window([pipeline._features(t) for t in turns])
    assert (len(kept), dropped) == (2, 2)


def test_a_conversation_with_nothing_heard_reads_empty(pipeline):
    config = pipeline.config
    for conversation in (Conversation(), Conversation((Turn(USER, "typed only"), Turn(ASSISTANT, "a reply")))):
        usage = pipeline.context_usage(conversation)
        assert usage.turn_seconds == [] and usage.turns_in_window == usage.dropped_turns == usage.history_tokens == 0
        assert usage.max_tokens == config.generation.max_context_tokens
