"""The data steps as commands (es4r/data/cli.py): `corpus`, `teacher-targets`, `valence-set`,
`situations-set`, `examples`. Bad input is one line and exit status 2 before anything loads;
each command's real run is made small (a slice of the text source, one conversation on the
tiny preset, two clips) and its files are opened."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.cli_run import assert_refused, run_cli
from tests.conftest import CLIPS

NEEDS_CHITCHAT = pytest.mark.skipif(importlib.util.find_spec("chitchat_dataset") is None,
                                    reason="needs chitchat-dataset==0.9.0 (the text source)")


@pytest.fixture
def no_model_loads(monkeypatch):
    """A refusal must come before any weights load."""
    def fail(*_, **__):
        raise AssertionError("a model was loaded for input that is refused")

    monkeypatch.setattr("es4r.presets.load_model", fail)
    monkeypatch.setattr("es4r.presets.resolve_config", fail)


def test_corpus_refuses_bad_counts_and_sources_in_one_line(tmp_path, capsys):
    out = str(tmp_path / "corpus")
    assert_refused(capsys, ["corpus", "--out", out, "--train", "-1"], "--train and --heldout must be >= 0")
    assert_refused(capsys, ["corpus", "--out", out, "--workers", "0"], "--workers >= 1")
    assert_refused(capsys, ["corpus", "--out", out, "--source", str(tmp_path / "none.json")], "is not a file")
    assert run_cli(capsys, ["corpus", "--out", out, "--voices", "piper"])[0] == 2  # argparse: not a pool
    assert not (tmp_path / "corpus").exists()


def test_the_voice_pools_named_on_the_command_line_are_the_builders():
    from es4r.data.cli import VOICE_POOLS
    from es4r.data.corpus import VOICE_POOLS as POOLS

    assert tuple(POOLS) == VOICE_POOLS


@NEEDS_CHITCHAT
@pytest.mark.slow
def test_corpus_builds_three_rows_a_conversation_and_prints_its_card(tmp_path, capsys):
    from es4r.data.corpus_source import find_source

    raw = json.loads(find_source().read_text(encoding="utf-8"))
    source = tmp_path / "dataset.json"
    source.write_text(json.dumps({key: raw[key] for key in sorted(raw)[:400]}))  # a slice, quick to load
    out = tmp_path / "corpus"
    code, printed, _ = run_cli(capsys, ["corpus", "--out", str(out), "--train", "1", "--heldout", "1", "--seed", "7",
                                     "--voices", "espeak", "--source", str(source)])
    assert code == 0
    card = json.loads(printed)
    assert card == json.loads((out / "card.json").read_text())
    for split in ("train", "heldout"):
        rows = [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]
        assert sorted(r["variant"] for r in rows) == ["falling", "flat", "rising"]
        assert len({r["conversation_id"] for r in rows}) == 1
        clip = out / next(t["audio_path"] for t in rows[0]["dialogue_history"] if t.get("audio_path"))
        info = soundfile.info(str(clip))
        assert info.samplerate == 16_000 and info.channels == 1 and info.duration > 0.3


def _teacher_manifest(folder: Path) -> Path:
    """One conversation in its three variants, its audio beside the manifest."""
    folder.mkdir(parents=True)
    clip, text = CLIPS["0880"]
    shutil.copy(clip, folder / clip.name)
    rows = [{"conversation_id": "c1", "turn_id": 1, "variant": variant,
             "dialogue_history": [{"index": 0, "role": "speaker", "utterance": text, "audio_path": clip.name}],
             "response": {"utterance": "i am sorry to hear that ."}} for variant in ("falling", "rising", "flat")]
    path = folder / "heldout.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_teacher_targets_refuses_bad_input_before_a_model_loads(tmp_path, capsys, no_model_loads):
    manifest = _teacher_manifest(tmp_path / "corpus")
    out = str(tmp_path / "targets.jsonl")
    assert_refused(capsys, ["teacher-targets", str(manifest), out, "--batch-size", "0"], "--batch-size must be at least 1")
    assert_refused(capsys, ["teacher-targets", str(manifest), out, "--max-sentences", "0"], "--max-sentences must be at least 1")
    assert_refused(capsys, ["teacher-targets", str(manifest), out, "--limit", "0"], "--limit must be at least 1")
    assert_refused(capsys, ["teacher-targets", str(manifest), out, "--recheck"], "--recheck works on targets already written")
    assert_refused(capsys, ["teacher-targets", str(manifest), out, "--redo-echoes"], "--redo-echoes works on targets")
    assert_refused(capsys, ["teacher-targets", str(tmp_path / "none.jsonl"), out], "does not exist")
    assert run_cli(capsys, ["teacher-targets", str(manifest), out, "--preset", "huge"])[0] == 2
    assert not Path(out).exists()


@pytest.mark.slow
def test_teacher_targets_write_resume_and_recheck_on_the_tiny_preset(tmp_path, capsys):
    from es4r.config import GenerationConfig
    from es4r.data.corpus import affect_hint

    manifest = _teacher_manifest(tmp_path / "corpus")
    out = tmp_path / "targets" / "heldout_teacher.jsonl"
    argv = ["teacher-targets", str(manifest), str(out), "--preset", "tiny", "--batch-size", "2", "--max-sentences", "1"]
    code, printed, _ = run_cli(capsys, argv)
    assert code == 0 and json.loads(printed) == {"targets": str(out), "written": 3}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["variant"] for r in rows] == ["falling", "rising", "flat"]
    for row in rows:
        assert row["human_response"] == "i am sorry to hear that ."
        assert row["affect_hint"] == affect_hint(row["variant"])  # training's teacher reads it from here
        assert row["teacher"]["batch_size"] == 2 and row["teacher"]["max_sentences"] == 1
        assert row["response"]["utterance"] == (row["human_response"] if row["teacher"].get("failed")
                                                else row["response"]["utterance"])
        audio = row["dialogue_history"][0]["audio_path"]
        assert audio == "../corpus/librivox_0880.wav" and (out.parent / audio).is_file()  # rebased onto OUT

    before = out.read_text()
    code, printed, _ = run_cli(capsys, argv)  # resumable: every row is done, no model loads
    assert code == 0 and json.loads(printed)["written"] == 0 and out.read_text() == before

    recited = dict(rows[1], response={"utterance": GenerationConfig().system_prompt}, teacher={"llm": "x"})
    out.write_text("".join(json.dumps(r) + "\n" for r in (rows[0], recited, rows[2])))
    code, printed, _ = run_cli(capsys, ["teacher-targets", str(manifest), str(out), "--recheck"])
    assert code == 0 and json.loads(printed) == {"targets": str(out), "rows": 3, "rejected": 1}
    rechecked = [json.loads(line) for line in out.read_text().splitlines()]
    assert rechecked[1]["response"]["utterance"] == "i am sorry to hear that ." and rechecked[1]["teacher"]["failed"]
    assert rechecked[0] == rows[0] and rechecked[2] == rows[2]


def _set_folder(tmp_path: Path, source: Path, items: list[dict]) -> Path:
    folder = tmp_path / source.name
    folder.mkdir()
    spec = json.loads((source / "set.json").read_text())
    (folder / "set.json").write_text(json.dumps(dict(spec, items=items)))
    return folder


def test_the_set_builders_refuse_a_folder_without_its_set_in_one_line(tmp_path, capsys):
    for command, flag in (("valence-set", "--folder"), ("situations-set", "--folder")):
        assert_refused(capsys, [command, flag, str(tmp_path)], "holds no set.json")
    assert_refused(capsys, ["examples", "--out", str(tmp_path / "missing")], "is not a folder")


def test_valence_set_speaks_missing_clips_as_16_bit_flac_and_keeps_the_rest(tmp_path, capsys):
    from es4r.data.test_sets import VALENCE_SET

    items = [i for i in json.loads((VALENCE_SET / "set.json").read_text())["items"] if i["voice"].startswith("espeak:")]
    folder = _set_folder(tmp_path, VALENCE_SET, items[:2])
    code, printed, _ = run_cli(capsys, ["valence-set", "--folder", str(folder)])
    assert code == 0 and json.loads(printed)["written"] == 2
    for item in items[:2]:
        info = soundfile.info(str(folder / item["audio"]))
        assert (info.samplerate, info.channels, info.format, info.subtype) == (16_000, 1, "FLAC", "PCM_16")
    assert json.loads(run_cli(capsys, ["valence-set", "--folder", str(folder)])[1])["written"] == 0
    assert json.loads(run_cli(capsys, ["valence-set", "--folder", str(folder), "--force"])[1])["written"] == 2


def test_situations_set_writes_each_voice_into_the_set_and_levelled_ogg_clips(tmp_path, capsys):
    from es4r.data.spoken_sets import SITUATION_VOICES, TARGET_RMS_DB
    from es4r.data.test_sets import SITUATIONS, load_situations

    first = json.loads((SITUATIONS / "set.json").read_text())["items"][0]
    item = {k: first[k] for k in ("id", "kind", "loss")} | {"turns": first["turns"][:1]}  # no voice, no clips yet
    folder = _set_folder(tmp_path, SITUATIONS, [item])
    code, printed, _ = run_cli(capsys, ["situations-set", "--folder", str(folder)])
    assert code == 0 and json.loads(printed)["written"] == 1
    _, situations = load_situations(folder)  # the set loads: one clip per turn, its voice named
    assert situations[0].voice == SITUATION_VOICES[0] and len(situations[0].clips) == 1
    samples, rate = soundfile.read(str(situations[0].clips[0]))
    assert rate == 16_000 and samples.ndim == 1
    rms_db = 20 * np.log10(np.sqrt(np.mean(samples ** 2)))
    assert TARGET_RMS_DB - 1.5 < rms_db < TARGET_RMS_DB + 1.0 or np.abs(samples).max() > 0.85  # levelled, or peak-limited


def test_the_second_voice_missing_is_one_line_with_its_install_command(tmp_path, capsys, monkeypatch):
    from es4r.data.test_sets import SITUATIONS

    monkeypatch.setattr("es4r.voice.kokoro_english.DATA_PACKAGE", "es4r_no_such_package")
    example_folder = tmp_path / "examples"
    example_folder.mkdir()
    assert_refused(capsys, ["examples", "--out", str(example_folder)], "requirements-situations.txt")
    assert not list(example_folder.iterdir())  # both voices load before a file is written
    items = [{"id": f"small_talk_0{n}", "kind": "small_talk", "loss": False, "turns": ["Nice weather today."]}
             for n in (1, 2)]  # the second of a kind is Kokoro's
    folder = _set_folder(tmp_path, SITUATIONS, items)
    assert_refused(capsys, ["situations-set", "--folder", str(folder)], "requirements-situations.txt")


class _StandInKokoro:
    """Kokoro's interface with a tone for speech (the packages are an optional install)."""

    def __init__(self, voice: str = "jf_gongitsune"):
        self.name = f"kokoro:{voice}"

    def speak(self, text: str, speed: float = 1.1) -> np.ndarray:
        t = np.arange(int(24_000 * 0.05 * len(text.split()) / speed)) / 24_000
        return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def test_examples_are_16_bit_wavs_whose_loudness_tells_their_story(tmp_path, capsys, monkeypatch):
    from es4r.data.spoken_sets import EXAMPLE_TURNS

    monkeypatch.setattr("es4r.voice.kokoro_english.KokoroEnglish", _StandInKokoro)
    code, printed, _ = run_cli(capsys, ["examples", "--out", str(tmp_path)])
    assert code == 0 and json.loads(printed)["written"] == len(EXAMPLE_TURNS)
    rms = {}
    for name in EXAMPLE_TURNS:
        info = soundfile.info(str(tmp_path / f"{name}.wav"))
        assert (info.samplerate, info.channels, info.subtype) == (16_000, 1, "PCM_16")
        samples, _ = soundfile.read(str(tmp_path / f"{name}.wav"))
        assert np.abs(samples).max() <= 0.951
        rms[name] = np.sqrt(np.mean(samples ** 2))
    assert rms["rough_week_1"] > rms["rough_week_2"] > rms["rough_week_3"]  # energy falls: comfort
    assert rms["good_news_2"] > rms["good_news_1"]  # energy rises: encourage
