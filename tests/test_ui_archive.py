""""Download conversation" (es4r/ui/archive.py) on constructed conversations: the zip is opened
and every file in it checked against the turns that produced it."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import soundfile as sf

from es4r.conversation import ASSISTANT, USER, Conversation, Turn, TurnResult
from es4r.ui.archive import ARCHIVE_FORMAT_VERSION, conversation_record, write_archive

RATE, VOICE_RATE = 16_000, 24_000


def _user(k: int, **changes) -> Turn:
    audio = (0.5 * np.sin(np.arange(RATE // 4) * (k + 1) / 10)).astype(np.float32)
    return Turn(USER, f"what I said {k}", audio, RATE, energy=0.1 * k, **changes)


def _reply(k: int) -> Turn:
    return Turn(ASSISTANT, f"my reply {k}", np.linspace(-1.5, 1.5, VOICE_RATE // 5, dtype=np.float32), VOICE_RATE)


def _result(k: int, strategy: str) -> TurnResult:
    return TurnResult(transcripts=[f"what I said {k}"], reply_text=f"my reply {k}", reply_audio=np.zeros(4, np.float32),
                      sample_rate=VOICE_RATE, energies=[0.1 * k], strategy=strategy, strategy_reason="because",
                      strategy_params={}, fusion_weights=[1.0],
                      timings={"llm": 0.5},
                      components={}, path="text", voice="piper", seed=k)


def test_the_record_pairs_each_turn_with_its_reply_and_result():
    conversation = Conversation((_user(1, notes=("clipped",), conversions=("resampled",)), _reply(1),
                                 _user(2), _user(3), _reply(3), _reply(4), _user(5)))
    results = [_result(1, "neutral"), _result(2, "comfort")]
    record = conversation_record(conversation, results, "tiny")
    assert record["format_version"] == ARCHIVE_FORMAT_VERSION and record["app"] == "ES4R Studio"
    assert record["preset"] == "tiny" and record["exported"][:2] == "20"
    turns = record["turns"]
    assert [t["turn"] for t in turns] == [1, 2, 3, 4]  # an unanswered turn is kept; a reply without a turn is not
    assert [t["transcript"] for t in turns] == ["what I said 1", "what I said 2", "what I said 3", "what I said 5"]
    assert [t.get("reply") for t in turns] == ["my reply 1", None, "my reply 3", None]
    assert turns[0] == {"turn": 1, "transcript": "what I said 1", "energy": 0.1, "input_notes": ["clipped"],
                        "input_conversions": ["resampled"], "user_audio": "audio/turn01_user.wav",
                        "reply": "my reply 1", "reply_audio": "audio/turn01_reply.wav",
                        "result": results[0].summary()}
    assert turns[1]["result"] == results[1].summary() and "reply_audio" not in turns[1]
    assert "result" not in turns[2] and "result" not in turns[3]
    assert json.loads(json.dumps(record)) == record


def _unzip(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in archive.infolist())
        return {name: archive.read(name) for name in archive.namelist()}


def test_the_zip_holds_what_the_turns_said_and_how_they_sounded(tmp_path):
    conversation = Conversation((_user(1), _reply(1), _user(2), _reply(2), _user(3)))
    results = [_result(1, "neutral"), _result(2, "comfort")]
    settings = json.dumps({"seed": 123, "preset": "tiny"})
    path = write_archive(conversation, results, settings, "tiny", str(tmp_path / "session.zip"))
    assert path == tmp_path / "session.zip"
    files = _unzip(path)
    assert sorted(files) == ["audio/turn01_reply.wav", "audio/turn01_user.wav", "audio/turn02_reply.wav",
                             "audio/turn02_user.wav", "audio/turn03_user.wav", "conversation.json",
                             "settings.json", "transcript.txt"]
    assert files["settings.json"].decode() == settings
    record = json.loads(files["conversation.json"])
    assert [t["transcript"] for t in record["turns"]] == ["what I said 1", "what I said 2", "what I said 3"]
    assert files["conversation.json"].decode().startswith('{\n  "format_version"')  # indented for reading
    transcript = files["transcript.txt"].decode().split("\n")
    assert transcript == [f"ES4R Studio conversation (tiny preset), exported {record['exported']}", "",
                          "[1] You: what I said 1", "[1] ES4R (neutral, synthetic voice): my reply 1",
                          "[2] You: what I said 2", "[2] ES4R (comfort, synthetic voice): my reply 2",
                          "[3] You: what I said 3", ""]
    for name, turn in (("audio/turn02_user.wav", conversation.turns[2]), ("audio/turn01_reply.wav", conversation.turns[1])):
        audio, rate = sf.read(io.BytesIO(files[name]), dtype="float32")
        assert rate == turn.sample_rate and sf.info(io.BytesIO(files[name])).subtype == "PCM_16"
        # what was said, to 16-bit precision, and clipped to [-1, 1] rather than wrapped
        assert np.allclose(audio, np.clip(turn.audio, -1.0, 1.0), atol=1 / 2 ** 14)


def test_unicode_survives_and_a_reply_without_result_has_no_strategy(tmp_path):
    conversation = Conversation((Turn(USER, "ça va — 😢", np.zeros(160, np.float32), RATE, energy=0.0),
                                 Turn(ASSISTANT, "je suis là", None, None)))
    files = _unzip(write_archive(conversation, [], "{}", "p", tmp_path / "a.zip"))
    assert "ça va — 😢" in files["conversation.json"].decode()  # not \\u-escaped
    assert sorted(name for name in files if name.startswith("audio/")) == ["audio/turn01_user.wav"]
    assert "[1] ES4R (?, synthetic voice): je suis là" in files["transcript.txt"].decode()


@pytest.mark.parametrize("turns", [(), (Turn(ASSISTANT, "hello?"),)])
def test_an_empty_conversation_exports_no_turns(tmp_path, turns):
    files = _unzip(write_archive(Conversation(turns), [], "{}", "p", tmp_path / "empty.zip"))
    assert json.loads(files["conversation.json"])["turns"] == []
    assert not [name for name in files if name.startswith("audio/")]
