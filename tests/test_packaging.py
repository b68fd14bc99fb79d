"""The install surface: pyproject's console command, and one Debian package list for setup and Spaces."""

import importlib
import shutil
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_console_command_resolves_to_the_cli():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    module, _, name = project["project"]["scripts"]["es4r"].partition(":")
    assert callable(getattr(importlib.import_module(module), name))
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"]["file"] == ["requirements.txt"]


def test_setup_reads_the_package_lists_spaces_read():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "scripts/install_apt.sh" in setup and "apt-get install" not in setup  # one reader
    listed = (ROOT / "packages.txt").read_text().split()
    assert "espeak-ng" in listed and "ffmpeg" in listed
    if shutil.which("dpkg"):  # on Debian, setup has installed every listed package
        for package in listed:
            assert subprocess.run(["dpkg", "-s", package], capture_output=True).returncode == 0, package


def test_every_planted_fault_still_has_its_target():
    """scripts/mutation_check.py plants each fault by replacing one exact piece of code; when
    the code moves, the fault goes stale and checks nothing (one did, unnoticed, for a day).
    Each target must occur once, and each named test must exist."""
    import importlib.util
    import re
    import sys

    spec = importlib.util.spec_from_file_location("mutation_check", ROOT / "scripts" / "mutation_check.py")
    mutation_check = importlib.util.module_from_spec(spec)
    sys.modules["mutation_check"] = mutation_check  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(mutation_check)
    finally:
        del sys.modules["mutation_check"]
    for fault in mutation_check.FAULTS:
        assert (ROOT / fault.path).read_text().count(fault.old) == 1, f"{fault.name}: target not found once in {fault.path}"
        for test in fault.tests:
            path, _, name = test.partition("::")
            source = (ROOT / path).read_text()
            assert not name or re.search(rf"^def {re.escape(name)}\(", source, re.MULTILINE), f"{fault.name}: no {test}"
