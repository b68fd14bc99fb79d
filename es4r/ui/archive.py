""""Download conversation": one zip with every turn's audio (WAV), transcripts, replies,
strategies, energies, timings and the full settings (seeds included), so a session can be
inspected or reproduced later without the app."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from es4r.conversation import ASSISTANT, USER, Conversation, TurnResult

ARCHIVE_FORMAT_VERSION = 1
WAV_SUBTYPE = "PCM_16"


def _wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(samples, -1.0, 1.0), sample_rate, format="WAV", subtype=WAV_SUBTYPE)
    return buffer.getvalue()


def _paired_turns(conversation: Conversation):
    """(user turn, reply turn or None) in order; a trailing unanswered user turn is kept."""
    pairs, pending = [], None
    for turn in conversation.turns:
        if turn.role == USER:
            if pending is not None:
                pairs.append((pending, None))
            pending = turn
        elif turn.role == ASSISTANT and pending is not None:
            pairs.append((pending, turn))
            pending = None
    if pending is not None:
        pairs.append((pending, None))
    return pairs


def conversation_record(conversation: Conversation, results: Sequence[TurnResult], preset: str) -> dict:
    """The JSON-able description of a session (what `conversation.json` holds)."""
    turns = []
    for index, (user, reply) in enumerate(_paired_turns(conversation), start=1):
        entry = {"turn": index, "transcript": user.text, "energy": user.energy, "input_notes": list(user.notes),
                 "input_conversions": list(user.conversions),
                 "user_audio": f"audio/turn{index:02d}_user.wav"}
        if reply is not None:
            entry.update(reply=reply.text, reply_audio=f"audio/turn{index:02d}_reply.wav")
        if index <= len(results):
            entry["result"] = results[index - 1].summary()
        turns.append(entry)
    return {"format_version": ARCHIVE_FORMAT_VERSION, "app": "ES4R Studio", "preset": preset,
            "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "turns": turns}


def _readable_transcript(record: dict) -> str:
    lines = [f"ES4R Studio conversation ({record['preset']} preset), exported {record['exported']}", ""]
    for turn in record["turns"]:
        lines.append(f"[{turn['turn']}] You: {turn['transcript']}")
        if "reply" in turn:
            strategy = turn.get("result", {}).get("strategy", "?")
            lines.append(f"[{turn['turn']}] ES4R ({strategy}, synthetic voice): {turn['reply']}")
    return "\n".join(lines) + "\n"


def write_archive(conversation: Conversation, results: Sequence[TurnResult], settings_json: str,
                  preset: str, path: str | Path) -> Path:
    """Write the session to `path` (a .zip) and return it. settings_json: ES4RConfig.to_json()."""
    path = Path(path)
    record = conversation_record(conversation, results, preset)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("conversation.json", json.dumps(record, indent=2, ensure_ascii=False))
        archive.writestr("transcript.txt", _readable_transcript(record))
        archive.writestr("settings.json", settings_json)
        for index, (user, reply) in enumerate(_paired_turns(conversation), start=1):
            if user.audio is not None:
                archive.writestr(f"audio/turn{index:02d}_user.wav", _wav_bytes(user.audio, user.sample_rate))
            if reply is not None and reply.audio is not None:
                archive.writestr(f"audio/turn{index:02d}_reply.wav", _wav_bytes(reply.audio, reply.sample_rate))
    return path
