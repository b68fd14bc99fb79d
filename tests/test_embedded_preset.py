"""The default a newcomer gets: the embedded preset on packaged weights, offline."""

import re

import pytest

from es4r.config import FALLBACK, TRAINED
from es4r.conversation import Conversation
from es4r.pipeline import CPU_DEMO_CHECKPOINT, SHIPPED_CHECKPOINT, ES4RPipeline, resolve_checkpoint


@pytest.fixture(scope="module")
def embedded():
    return ES4RPipeline.from_preset("embedded")


@pytest.fixture(scope="module")
def embedded_speech():
    return ES4RPipeline.from_preset("embedded", es4r_checkpoint=resolve_checkpoint("cpu-demo"))


def test_components_are_named_honestly(embedded):
    components = embedded.components
    assert components["asr"].status == TRAINED and components["llm"].status == TRAINED
    assert components["voice"].status == FALLBACK  # no StyleTTS2 checkpoint installs offline
    shipped = (SHIPPED_CHECKPOINT / "es4r_config.json").exists()
    assert embedded.speech_path == shipped  # a checkpoint in assets/ switches the speech path on
    if not shipped:
        assert "text path" in components["es4r_modules"].description


@pytest.mark.skipif(not (CPU_DEMO_CHECKPOINT / "es4r_parts.safetensors").is_file(),
                    reason="no CPU demonstration checkpoint in checkpoints/")
def test_cpu_demo_checkpoint_fits_the_embedded_backbones(embedded_speech, speech_paths):
    assert embedded_speech.speech_path
    assert embedded_speech.components["es4r_modules"].status == TRAINED
    conversation = embedded_speech.add_user_turn(Conversation(), speech_paths[0])
    result = embedded_speech.respond(conversation)
    assert result.path == "speech" and result.attention.meaningful
    assert re.findall(r"[A-Za-z']+", result.reply_text) and result.reply_audio.size > 0


def test_answers_real_speech(embedded, speech_paths):
    conversation = Conversation()
    for path in speech_paths[:2]:
        conversation = embedded.add_user_turn(conversation, path)
    assert "young man" in conversation.user_turns[0].text.lower()
    result = embedded.respond(conversation)
    words = re.findall(r"[A-Za-z']+", result.reply_text)
    assert len(words) >= 2, result.reply_text  # a real English reply, not noise or an empty string
    assert result.reply_audio.size > result.sample_rate // 2  # at least half a second of speech
    assert result.path == ("speech" if embedded.speech_path else "text")
    assert result.attention.meaningful == embedded.speech_path
