import json
import subprocess
import sys

import soundfile as sf


def test_respond_cli_tiny(speech_paths, tmp_path):
    out = tmp_path / "reply.wav"
    run = subprocess.run(
        [sys.executable, "-m", "es4r", "respond", *map(str, speech_paths[:2]), "--preset", "tiny", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout)
    assert len(result["transcripts"]) == 2 and result["reply_text"]
    assert result["strategy"] in {"comfort", "neutral", "encourage"}
    audio, rate = sf.read(out)
    assert rate == result["sample_rate"] and len(audio) > 0


def test_respond_cli_bad_audio_is_a_message(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    run = subprocess.run([sys.executable, "-m", "es4r", "respond", str(bad), "--preset", "tiny"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    assert "error:" in run.stderr and "Traceback" not in run.stderr


def test_help_explains_flags():
    run = subprocess.run([sys.executable, "-m", "es4r", "respond", "--help"], capture_output=True, text=True, timeout=120)
    for flag in ("--preset", "--out", "--transcripts", "--styletts2", "--checkpoint"):
        assert flag in run.stdout
