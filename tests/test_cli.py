import json
import subprocess
import sys

import pytest
import soundfile as sf


@pytest.mark.slow
def test_respond_cli_tiny(speech_paths, tmp_path):
    out = tmp_path / "replies" / "reply.wav"  # a folder that does not exist yet is made
    run = subprocess.run(
        [sys.executable, "-m", "es4r", "respond", *map(str, speech_paths[:2]), "--preset", "tiny", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stderr.strip() == "", "without --verbose only the result is printed"
    result = json.loads(run.stdout)
    assert len(result["transcripts"]) == 2 and result["reply_text"]
    assert result["strategy"] in {"comfort", "neutral", "encourage"}
    audio, rate = sf.read(out)
    assert rate == result["sample_rate"] and len(audio) > 0


def test_respond_cli_bad_audio_is_a_message(tmp_path, capsys):
    from es4r.cli import main

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    assert main(["respond", str(bad), "--preset", "tiny"]) == 2  # refused before any model loads
    captured = capsys.readouterr()
    assert captured.out == "" and "error:" in captured.err and "Traceback" not in captured.err


def test_respond_checks_every_input_before_loading_models(tmp_path, speech_paths, monkeypatch, capsys):
    from es4r.cli import main
    from es4r.pipeline import ES4RPipeline

    def no_models(*args, **kwargs):
        raise AssertionError("models were loaded before the inputs were checked")

    monkeypatch.setattr(ES4RPipeline, "from_preset", no_models)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    for turns, expected in (([speech_paths[0], tmp_path], "turn 2 ({}) is a directory, not an audio file"),
                            ([tmp_path / "missing.wav"], "turn 1 ({}) does not exist"),
                            ([speech_paths[0], speech_paths[1], bad], "turn 3 ({}):")):
        assert main(["-v", "respond", *map(str, turns), "--preset", "tiny"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: " + expected.format(turns[-1])) and len(err.splitlines()) == 1, err


def test_respond_checks_the_output_path_before_loading_models(tmp_path, speech_paths, monkeypatch, capsys):
    """A reply path soundfile cannot write (no audio extension, a folder) is refused up front,
    in one line, instead of failing after the whole pipeline ran."""
    from es4r.cli import main
    from es4r.pipeline import ES4RPipeline

    def no_models(*args, **kwargs):
        raise AssertionError("models were loaded before --out was checked")

    monkeypatch.setattr(ES4RPipeline, "from_preset", no_models)
    for out, expected in ((tmp_path / "reply", "needs an audio file extension"), (tmp_path, "is a directory")):
        assert main(["-v", "respond", str(speech_paths[0]), "--preset", "tiny", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: --out {out} ") and expected in err and len(err.splitlines()) == 1, err


def test_help_explains_flags():
    run = subprocess.run([sys.executable, "-m", "es4r", "respond", "--help"], capture_output=True, text=True, timeout=120)
    for flag in ("--preset", "--out", "--transcripts", "--styletts2", "--checkpoint"):
        assert flag in run.stdout


def test_unloadable_backbone_is_one_line_naming_the_ways_out(speech_paths, capsys, monkeypatch):
    from es4r.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["-v", "respond", str(speech_paths[0]), "--preset", "paper"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "openai/whisper-large-v3" in err[0] and "--preset embedded" in err[0]


def test_app_start_with_an_unloadable_backbone_is_one_line(capsys, monkeypatch):
    """`python3 app.py` on backbones that cannot load: exit 2 and one line, no traceback (the
    app's own main(), in-process; offline, so the paper preset's hub ids cannot load)."""
    import app

    monkeypatch.setenv("ES4R_PRESET", "paper")
    monkeypatch.setattr(app, "_pipeline", None)
    with pytest.raises(SystemExit) as stopped:
        app.main([])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: could not load the Whisper model")
