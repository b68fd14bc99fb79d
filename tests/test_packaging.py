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
