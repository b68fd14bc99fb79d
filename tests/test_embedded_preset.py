"""The default a newcomer gets: the embedded preset on packaged weights, offline."""

import pytest

from es4r.config import FALLBACK, TRAINED
from es4r.conversation import Conversation
from es4r.pipeline import ES4RPipeline, _shipped_checkpoint


@pytest.fixture(scope="module")
def embedded():
    return ES4RPipeline.from_preset("embedded")


def test_components_are_named_honestly(embedded):
    components = embedded.components
    assert components["asr"].status == TRAINED and components["llm"].status == TRAINED
    assert components["voice"].status == FALLBACK  # no StyleTTS2 checkpoint installs offline
    if _shipped_checkpoint() is None:
        assert not embedded.speech_path
    else:
        assert embedded.speech_path and components["es4r_modules"].status == TRAINED


def test_answers_real_speech(embedded, speech_paths):
    conversation = Conversation()
    for path in speech_paths[:2]:
        conversation = embedded.add_user_turn(conversation, path)
    assert "young man" in conversation.user_turns[0].text.lower()
    result = embedded.respond(conversation)
    words = [w for w in result.reply_text.split() if w.isalpha()]
    assert len(words) >= 3, result.reply_text
    assert result.reply_audio.size > result.sample_rate // 2  # at least half a second of speech
    assert result.path == ("speech" if embedded.speech_path else "text")
    assert result.attention.meaningful == embedded.speech_path
