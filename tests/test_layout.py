"""Where runnable code lives (issue 38): product steps are `python -m es4r` commands,
developer tools run as `python -m scripts.<name>`, one-off measurements as
`python -m experiments.<name>`, all from the repository root, so no file edits `sys.path`."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE_FOLDERS = ("es4r", "scripts", "experiments", "tests")
NEW_COMMANDS = ("corpus", "teacher-targets", "gates", "valence-set", "situations-set", "examples")
COMMANDS = ("respond", "train", "tune-replies", "evaluate", "bench", "situations", "study", *NEW_COMMANDS)
# scripts/<name>.py that became commands or experiments: no text may send anyone there.
MOVED = ("build_spoken_corpus", "make_teacher_targets", "check_gates", "build_valence_set", "build_situations",
         "build_examples", "affect_ceiling", "compare_llms", "decode_floor", "decode_runtimes", "valence_check")


def path_edits(source: str) -> list[int]:
    """Lines that touch `sys.path` in code (not in strings or comments)."""
    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Attribute) and node.attr == "path"
            and isinstance(node.value, ast.Name) and node.value.id == "sys"]


def _python_files() -> list[Path]:
    return [ROOT / "app.py", *(p for folder in SOURCE_FOLDERS for p in sorted((ROOT / folder).rglob("*.py")))]


def test_no_file_edits_sys_path():
    found = {str(p.relative_to(ROOT)): lines for p in _python_files() if (lines := path_edits(p.read_text()))}
    assert not found, f"sys.path edited at {found}; run the file as a module from the root (python -m ...)"


def test_the_scan_sees_an_edit_and_ignores_words():
    assert path_edits("import sys\nsys.path.insert(0, '.')\n") == [2]
    assert path_edits("from sys import argv\nimport sys as s\nx = sys.path[0]\n") == [3]
    assert path_edits("'''sys.path.insert'''\n# sys.path.append\n") == []


def test_help_lists_every_command(capsys):
    from es4r.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    listed = capsys.readouterr().out
    missing = [c for c in COMMANDS if not re.search(rf"^\s+{re.escape(c)}\s", listed, re.MULTILINE)]
    assert not missing, f"not in `python -m es4r --help`: {missing}\n{listed}"
    for command in NEW_COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0 and f"python -m es4r {command}" in capsys.readouterr().out


def test_the_data_commands_parse_without_importing_models_or_voices():
    """`python -m es4r --help` reads es4r/data/cli.py: it names its choices itself and imports
    torch, numpy and the voices only inside the handlers."""
    code = ("import sys, argparse, es4r.data.cli as c; p = argparse.ArgumentParser(); "
            "c.add_data_subparsers(p.add_subparsers()); "
            "print(sorted(m for m in ('torch', 'numpy', 'es4r.data.corpus', 'es4r.voice') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_the_whole_help_imports_neither_torch_nor_transformers():
    """`python -m es4r --help` answers at once: every command's parser is built without the model
    stack (its counterpart: each command still runs it, tested with the command)."""
    code = ("import sys, es4r.cli as c; p = c.build_parser(); p.format_help(); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def _guarded(path: Path) -> bool:
    """True when importing the file runs nothing: its work sits under `if __name__ == "__main__":`."""
    return any(isinstance(node, ast.If) and "__name__" in ast.unparse(node.test) for node in ast.parse(path.read_text()).body)


def test_every_experiment_is_in_its_readme_and_runs_as_a_module():
    readme = (ROOT / "experiments" / "README.md").read_text()
    assert (ROOT / "experiments" / "__init__.py").is_file() and (ROOT / "scripts" / "__init__.py").is_file()
    experiments = sorted(p for p in (ROOT / "experiments").glob("*.py") if p.name != "__init__.py")
    assert experiments
    for path in experiments:
        assert f"python -m experiments.{path.stem}" in readme, f"experiments/README.md does not say how to run {path.name}"
        assert f"python -m experiments.{path.stem}" in path.read_text(), f"{path.name}'s docstring names another way"
        assert _guarded(path), path
    for path in sorted((ROOT / "scripts").glob("*.py")):
        assert path.name == "__init__.py" or _guarded(path), path


def _tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    files = [ROOT / name for name in listed if name and (ROOT / name).is_file()]
    return [f for f in files if f.suffix in (".md", ".py", ".yaml", ".yml", ".json", ".txt", ".toml", ".sh", "")
            and f.stat().st_size < 2_000_000 and f.name != "test_layout.py"]


def test_no_text_sends_anyone_to_a_moved_script_or_runs_a_script_by_path():
    moved = re.compile(r"scripts/(" + "|".join(MOVED) + r")\.py")
    by_path = re.compile(r"python3? scripts/\w+\.py")  # scripts/ on sys.path instead of the root: es4r not found
    stale = []
    for path in _tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        stale += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in (*moved.finditer(text), *by_path.finditer(text))]
    assert not stale, stale
