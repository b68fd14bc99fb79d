"""The StyleTTS2 code copied from the PyPI `styletts2` package (es4r/voice/styletts2_diffusion.py,
styletts2_generators.py, the symbol table and PL-BERT sizes): the voice speaks without the package,
and, where the package is installed, the copies give its weights and outputs for a seed."""

import json
import shutil
import subprocess
import sys
import warnings
from functools import partial
from pathlib import Path

import pytest
import torch
import yaml

from es4r.voice import styletts2_diffusion as ours_diffusion
from es4r.voice import styletts2_generators as ours_generators
from es4r.voice.styletts2 import KARRAS_RHO, SIGMA_MAX, SIGMA_MIN, SYMBOLS
from es4r.voice.styletts2_checkpoint import OFFICIAL_PLBERT, TINY_GENERATORS

ROOT = Path(__file__).resolve().parent.parent
STYLE_DIM = 16  # one half of the tiny model's style (acoustic or prosodic)
EMBEDDING = 32  # tiny PL-BERT width
TRANSFORMER = {"num_layers": 1, "num_heads": 2, "head_features": 8, "multiplier": 2}

# Runs in a fresh interpreter where `styletts2` (and the einops packages only it used) cannot be
# imported: a None entry in sys.modules makes `import` fail and find_spec report "not installed".
WITHOUT_PACKAGE = """
import sys
BLOCKED = ("styletts2", "einops", "einops_exts")
sys.modules.update(dict.fromkeys(BLOCKED))
import json
import numpy as np
import soundfile as sf
import torch
from es4r.config import default_strategy_table
from es4r.voice.styletts2 import StyleTTS2Engine, make_tiny_styletts2_checkpoint

torch.set_num_threads(1)
folder, speech = sys.argv[1], sys.argv[2]
try:
    import styletts2
    sys.exit("styletts2 was importable")
except ImportError:
    pass
samples, rate = sf.read(speech, dtype="float32")
report = {}
for decoder in ("hifigan", "istftnet"):
    engine = StyleTTS2Engine.from_pretrained(str(make_tiny_styletts2_checkpoint(f"{folder}/{decoder}", decoder=decoder)))
    style = engine.extract_style(samples, rate)
    wave = engine.synthesize("I am here for you, always.", style, default_strategy_table()["neutral"], seed=0).waveform
    report[decoder] = {"finite": bool(np.isfinite(wave).all()), "samples": int(wave.size),
                       "rms": float(np.sqrt(np.mean(wave.astype(np.float64) ** 2)))}
report["loaded"] = sorted(name for name in BLOCKED if sys.modules.get(name) is not None)
print(json.dumps(report))
"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_the_voice_speaks_without_the_styletts2_package(tmp_path):
    speech = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(speech), "I have been feeling a bit lonely lately."], check=True)
    run = subprocess.run([sys.executable, "-c", WITHOUT_PACKAGE, str(tmp_path), str(speech)],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report.pop("loaded") == []
    for decoder, wave in report.items():
        assert wave["finite"] and wave["samples"] > 0 and wave["rms"] > 1e-4, (decoder, wave)


# ---- the copies against the package, where it is installed ----------------------------------
def _package(module: str):
    return pytest.importorskip(module, reason="the styletts2 package (and einops-exts) to compare with")


def _seeded(build, seed: int = 0):
    """build() under a fixed seed, torch's weight-norm deprecation silenced, global RNG untouched."""
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.manual_seed(seed)
        return build()


def _same_weights(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    mine, package = ours.state_dict(), theirs.state_dict()
    assert set(mine) == set(package)
    for key, value in package.items():
        assert torch.equal(mine[key], value), key


def test_symbols_and_plbert_sizes_are_the_packages():
    text_utils = _package("styletts2.text_utils")
    assert list(SYMBOLS) == text_utils.symbols
    plbert = Path(text_utils.__file__).parent / "Utils" / "PLBERT" / "config.yml"
    assert OFFICIAL_PLBERT == yaml.safe_load(plbert.read_text())["model_params"]


def test_denoiser_and_sampler_give_the_packages_styles():
    modules = _package("styletts2.Modules.diffusion.modules")
    sampler = _package("styletts2.Modules.diffusion.sampler")
    sizes = dict(channels=2 * STYLE_DIM, context_features=2 * STYLE_DIM, context_embedding_features=EMBEDDING,
                 **TRANSFORMER)
    ours = _seeded(lambda: ours_diffusion.StyleTransformer1d(**sizes))
    theirs = _seeded(lambda: modules.StyleTransformer1d(**sizes))
    _same_weights(ours, theirs)
    ours_sampler = ours_diffusion.DiffusionSampler(
        ours_diffusion.KDiffusion(ours, sigma_data=0.2), sampler=ours_diffusion.ADPM2Sampler(),
        sigma_schedule=ours_diffusion.KarrasSchedule(SIGMA_MIN, SIGMA_MAX, KARRAS_RHO))
    package_sampler = sampler.DiffusionSampler(
        sampler.KDiffusion(theirs, sigma_distribution=sampler.LogNormalDistribution(-3.0, 1.0), sigma_data=0.2),
        sampler=sampler.ADPM2Sampler(), sigma_schedule=sampler.KarrasSchedule(SIGMA_MIN, SIGMA_MAX, KARRAS_RHO),
        clamp=False)
    inputs = _seeded(lambda: (torch.randn(2, 1, 2 * STYLE_DIM), torch.randn(2, 7, EMBEDDING),
                              torch.randn(2, 2 * STYLE_DIM)))
    noise, embedding, features = inputs
    with torch.no_grad():
        for steps, scale in ((2, 1.0), (5, 1.0), (5, 2.0)):
            kwargs = dict(noise=noise, embedding=embedding, features=features, embedding_scale=scale, num_steps=steps)
            assert torch.equal(ours_sampler.sigma_schedule(steps, "cpu"), package_sampler.sigma_schedule(steps, "cpu"))
            mine = _seeded(partial(ours_sampler, **kwargs), seed=steps)
            package = _seeded(partial(package_sampler, **kwargs), seed=steps)
            assert torch.equal(mine, package), (steps, scale)


@pytest.mark.parametrize("kind", ["hifigan", "istftnet"])
def test_generators_give_the_packages_weights_and_audio(kind):
    package = _package(f"styletts2.Modules.{kind}")
    sizes = {k: v for k, v in TINY_GENERATORS[kind].items() if k != "type"}
    ours_class = {"hifigan": ours_generators.HiFiGANGenerator, "istftnet": ours_generators.ISTFTNetGenerator}[kind]
    ours = _seeded(lambda: ours_class(STYLE_DIM, **sizes))
    theirs = _seeded(lambda: package.Generator(STYLE_DIM, **sizes))
    _same_weights(ours, theirs)
    frames = 12
    features, style = _seeded(lambda: (torch.randn(1, sizes["upsample_initial_channel"], frames),
                                       torch.randn(1, STYLE_DIM)))
    f0 = torch.linspace(0.0, 300.0, frames)[None]  # unvoiced (at most 10 Hz) at the start, then voiced
    with torch.no_grad():  # the same audio, and the random stream left where the package leaves it
        mine, after = _seeded(lambda: (ours.eval()(features, style, f0), torch.rand(4)), seed=1)
        reference, package_after = _seeded(lambda: (theirs.eval()(features, style, f0), torch.rand(4)), seed=1)
    assert torch.equal(mine, reference) and torch.equal(after, package_after)


@pytest.mark.parametrize("upsample", [False, True])
def test_adain_residual_block_is_the_packages(upsample):
    istftnet = _package("styletts2.Modules.istftnet")
    ours = _seeded(lambda: ours_generators.AdainResBlk1d(24, 12, STYLE_DIM, upsample=upsample, dropout_p=0.2))
    official = True if upsample else "none"  # the package's values ("none" means no upsampling)
    theirs = _seeded(lambda: istftnet.AdainResBlk1d(24, 12, STYLE_DIM, upsample=official, dropout_p=0.2))
    _same_weights(ours, theirs)
    x, style = _seeded(lambda: (torch.randn(2, 24, 9), torch.randn(2, STYLE_DIM)))
    with torch.no_grad():
        assert torch.equal(ours.eval()(x, style), theirs.eval()(x, style))
