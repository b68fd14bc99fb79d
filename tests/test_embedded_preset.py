"""The default a newcomer gets: the embedded preset on packaged weights, offline."""

import re

import pytest

from es4r.config import FALLBACK, TRAINED
from es4r.conversation import Conversation
from es4r.pipeline import ES4RPipeline
from es4r.presets import CHECKPOINT_ENV, SHIPPED_CHECKPOINT, resolve_checkpoint, resolve_config


@pytest.fixture(scope="module")
def embedded(embedded_untrained):
    """What a newcomer gets: the shipped checkpoint when one ships, else the untrained parts
    (the session's shared pipeline, loaded once)."""
    if resolve_config("embedded").backbones.es4r_checkpoint:
        return ES4RPipeline.from_preset("embedded")
    return embedded_untrained


@pytest.fixture(scope="module")
def embedded_speech(embedded, tmp_path_factory, monkeypatch_module):
    """A checkpoint for the embedded backbones (the parts at initialisation, saved through the
    training code's writer), loaded the way a user names one: ES4R_CHECKPOINT=folder."""
    from es4r.training.checkpoint import save_es4r_parts

    folder = tmp_path_factory.mktemp("embedded_checkpoint")
    save_es4r_parts(embedded.model, folder, {"step": 0})
    monkeypatch_module.setenv(CHECKPOINT_ENV, str(folder))
    return ES4RPipeline.from_preset("embedded")


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_components_are_named_honestly(embedded):
    components = embedded.components
    assert components["asr"].status == TRAINED and components["llm"].status == TRAINED
    assert components["voice"].status == FALLBACK  # no StyleTTS2 checkpoint installs offline
    shipped = (SHIPPED_CHECKPOINT / "es4r_config.json").exists()
    assert embedded.speech_path == shipped  # a checkpoint in assets/ switches the speech path on
    if not shipped:
        assert "text path" in components["es4r_modules"].description


@pytest.mark.slow
def test_checkpoint_named_by_env_switches_on_the_speech_path(embedded_speech, speech_paths):
    assert embedded_speech.speech_path
    assert embedded_speech.components["es4r_modules"].status == TRAINED
    conversation = embedded_speech.add_user_turn(Conversation(), speech_paths[0])
    result = embedded_speech.respond(conversation)
    assert result.path == "speech" and result.summary()["attention_meaningful"]
    assert re.findall(r"[A-Za-z']+", result.reply_text) and result.reply_audio.size > 0


@pytest.mark.slow
def test_answers_real_speech(embedded, speech_paths):
    conversation = Conversation()
    for path in speech_paths[:2]:
        conversation = embedded.add_user_turn(conversation, path)
    assert "young man" in conversation.user_turns[0].text.lower()
    result = embedded.respond(conversation)
    words = re.findall(r"[A-Za-z']+", result.reply_text)
    assert len(words) >= 2, result.reply_text  # a real English reply, not noise or an empty string
    assert result.reply_audio.size > result.sample_rate // 2  # at least half a second of speech
    assert result.path == embedded.path
    assert result.summary()["attention_meaningful"] == embedded.speech_path


def test_none_forces_the_text_path():
    assert resolve_checkpoint("none") is None and resolve_checkpoint("runs/x/final") == "runs/x/final"


@pytest.mark.slow
def test_generation_stops_once_the_kept_sentences_are_written(embedded, monkeypatch):
    """The LLM stops when the reply holds max_sentences confirmed sentences: the reply is the
    one the full generation is trimmed to, from fewer decoded tokens."""
    import es4r.modeling.model as modeling
    from es4r.reply_text import trim_reply

    # One kept sentence: the reply-tuned LLM ends its own replies after two sentences (it learnt
    # replies of one or two), so only a shorter cut shows the stop saving tokens.
    from dataclasses import replace

    model, sentences = embedded.model, 1
    generation = replace(embedded.config.generation, max_sentences=sentences)
    history = [("user", "I had a really rough week at work."), ("user", "We are having a baby!")]
    stopped = [model.generate([turn], None, generation)[0] for turn in history]
    full_kwargs = modeling.generation_kwargs

    def without_stop(*args, **kwargs):
        found = full_kwargs(*args, **kwargs)
        found.pop("stopping_criteria")
        return found

    monkeypatch.setattr(modeling, "generation_kwargs", without_stop)
    full = [model.generate([turn], None, generation)[0] for turn in history]
    assert [trim_reply(g.text, sentences) for g in stopped] == [trim_reply(g.text, sentences) for g in full]
    assert all(len(s.token_ids) <= len(f.token_ids) for s, f in zip(stopped, full))
    assert sum(len(s.token_ids) for s in stopped) < sum(len(f.token_ids) for f in full)  # measured before the reply tuning: 40 + 35 vs 44 + 45 tokens
