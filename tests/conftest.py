"""Shared fixtures: tiny random backbones (built once per session) and real speech clips."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

# Offline before any test module imports huggingface_hub, which reads these once at import:
# set later (in a fixture) they would not stop a hub lookup from waiting on the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Each pytest-xdist worker compiles numba functions (librosa's) into its own cache folder:
# two processes writing numba's cache beside librosa at once corrupted it, and every later
# run that loaded it crashed (segmentation fault in librosa.pyin; seen in a fresh venv).
# The workers share the machine's cores: each runs torch on its share (two workers on two
# cores, each with torch's default of every core, measured 237 s for the suite against 155 s).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["NUMBA_CACHE_DIR"] = str(Path(tempfile.gettempdir()) / f"es4r-numba-{os.environ['PYTEST_XDIST_WORKER']}")
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))

# Property tests (hypothesis): no per-example deadline (two busy cores make timings noisy) and
# fifty examples a rule, which keeps each such test to a second or two.
settings.register_profile("es4r", deadline=None, max_examples=50)
settings.load_profile("es4r")

DATA = Path(__file__).parent / "data"
CLIPS = {
    "0880": (DATA / "librivox_0880.wav", "he was not an ill disposed young man"),
    "0890": (DATA / "librivox_0890.wav", "unless to be rather cold hearted and rather selfish is to be ill disposed"),
    "0930": (DATA / "librivox_0930.wav", "he might even have been made amiable himself"),
}


@pytest.fixture(scope="session", autouse=True)
def _prepared_cache():
    """The weights `scripts/setup.sh` prepared are reused: tests read the app's cache
    ($ES4R_CACHE, else ~/.cache/es4r), so nothing is converted twice."""
    from es4r.embedded.setup import cache_root

    os.environ.setdefault("ES4R_CACHE", str(cache_root()))
    yield


@pytest.fixture(scope="session")
def embedded_untrained():
    """The embedded preset with the ES4R parts at initialisation (text path), whatever ships:
    loaded once for every test module that reads it (about 5 s on two cores)."""
    from es4r.pipeline import ES4RPipeline

    return ES4RPipeline.from_preset("embedded", es4r_checkpoint="none")


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    from es4r.modeling.backbones import make_tiny_llm, make_tiny_whisper

    root = tmp_path_factory.mktemp("tiny")
    return {"whisper": make_tiny_whisper(root / "whisper"), "llm": make_tiny_llm(root / "llm")}


def _tiny_es4r_model(tiny_dirs):
    """A tiny ES4R model over the session's random backbones, its own parts seeded."""
    import torch

    from es4r.config import preset_config
    from es4r.modeling.backbones import load_llm, load_whisper
    from es4r.modeling.model import ES4RModel

    torch.manual_seed(0)
    whisper = load_whisper(str(tiny_dirs["whisper"]), "cpu")
    llm = load_llm(str(tiny_dirs["llm"]), "cpu")
    return ES4RModel(whisper, llm, preset_config("tiny")).eval()


@pytest.fixture(scope="session")
def tiny_model(tiny_dirs):
    return _tiny_es4r_model(tiny_dirs)


@pytest.fixture(scope="session")
def bos_tokenizer(tiny_model):
    """The tiny LLM's tokenizer made to open every text with a special token (as Llama's adds
    its BOS), and that token's id: code that tokenizes a reply's words must not take it in."""
    import copy

    from tokenizers.processors import TemplateProcessing

    tokenizer = copy.deepcopy(tiny_model.tokenizer)
    start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    tokenizer._tokenizer.post_processor = TemplateProcessing(single="<|im_start|> $A",
                                                             special_tokens=[("<|im_start|>", start)])
    assert tokenizer("hi").input_ids[0] == start
    return tokenizer, start


@pytest.fixture
def loud_plora_model(tiny_dirs):
    """A fresh tiny ES4R model (its own, so a test may change its weights) whose PLoRA update
    is large, so a reply that lost PLoRA at the speech positions would change."""
    import torch

    def make(std: float = 1.0):
        model = _tiny_es4r_model(tiny_dirs)
        with torch.no_grad():
            for name, weight in model.llm.named_parameters():
                if "lora_B" in name:
                    torch.nn.init.normal_(weight, std=std)
        return model

    return make


@pytest.fixture(scope="session")
def speech_paths() -> list[Path]:
    return [CLIPS[k][0] for k in ("0880", "0890", "0930")]


@pytest.fixture(scope="session")
def tiny_pipeline():
    """One tiny-preset pipeline shared by the tests that only read from it."""
    from es4r.pipeline import ES4RPipeline

    return ES4RPipeline.from_preset("tiny")
