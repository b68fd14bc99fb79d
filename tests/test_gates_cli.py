"""`python -m es4r gates` (es4r/evaluation/cli.py over es4r/evaluation/gate_run.py): exit status
0 when every gate passes, 1 when one fails, 2 for bad input (one line, before a model loads);
a checkpoint is shipped only when all pass; the reports are written and printed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.cli_run import assert_refused, run_cli
from es4r.evaluation.gates import GateReport
from tests.conftest import CLIPS

VARIANTS = ("falling", "rising", "flat")


def _held_out(folder: Path, conversations: int = 1, variants: tuple[str, ...] = VARIANTS) -> Path:
    """Teacher rows: each conversation in its variants, a real clip per speaker turn."""
    folder.mkdir(parents=True, exist_ok=True)
    clips = list(CLIPS.values())
    for clip, _ in clips:
        shutil.copy(clip, folder / clip.name)
    replies = {"falling": "i am so sorry , that sounds hard .", "rising": "that is wonderful news !",
               "flat": "tell me more about it ."}
    rows = [{"conversation_id": f"c{n}", "turn_id": 1, "variant": variant,
             "dialogue_history": [{"index": 0, "role": "speaker", "utterance": clips[n % 3][1],
                                   "audio_path": clips[n % 3][0].name}],
             "response": {"utterance": f"{replies[variant]} ({n})"}, "teacher": {"llm": "test"}}
            for n in range(conversations) for variant in variants]
    path = folder / "heldout_teacher.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_pipeline):
    """The tiny preset's untrained ES4R parts, saved as a checkpoint."""
    from es4r.training.checkpoint import save_es4r_parts

    return save_es4r_parts(tiny_pipeline.model, tmp_path_factory.mktemp("ckpt") / "final")


@pytest.fixture
def no_model_loads(monkeypatch):
    def fail(*_, **__):
        raise AssertionError("a model was loaded for input that is refused")

    monkeypatch.setattr("es4r.evaluation.gate_run.gate_model", fail)


def test_bad_input_is_one_line_and_status_2_before_a_model_loads(tmp_path, capsys, no_model_loads):
    manifest = _held_out(tmp_path / "corpus")
    assert_refused(capsys, ["gates", str(manifest)], "name a checkpoint, or pass --corpus-checks")
    assert_refused(capsys, ["gates", str(manifest), str(tmp_path)], "is not an ES4R checkpoint folder")
    assert_refused(capsys, ["gates", str(tmp_path / "none.jsonl"), "--export-references", str(tmp_path / "r.jsonl")],
             "does not exist")
    assert_refused(capsys, ["gates", str(tmp_path / "none.jsonl"), "--corpus-checks"], "does not exist")
    assert_refused(capsys, ["gates", str(manifest), "--corpus-checks", "--references", str(tmp_path / "none.jsonl")],
             "--references")
    partial = _held_out(tmp_path / "partial", variants=("falling", "rising"))
    assert_refused(capsys, ["gates", str(partial), "--corpus-checks"], "lack one of the variants")
    assert run_cli(capsys, ["gates", str(manifest), "--preset", "huge"])[0] == 2  # argparse's choices
    assert not (tmp_path / "runs").exists()


def test_export_references_then_judge_against_them(tmp_path, capsys, monkeypatch):
    manifest = _held_out(tmp_path / "corpus", conversations=2)
    frozen = tmp_path / "references.jsonl"
    code, printed, _ = run_cli(capsys, ["gates", str(manifest), "--export-references", str(frozen)])
    assert code == 0 and json.loads(printed) == {"references": str(frozen), "rows": 6}
    seen = {}
    monkeypatch.setattr("es4r.evaluation.gate_run.gate_model", lambda preset, checkpoint: None)
    monkeypatch.setattr("es4r.evaluation.gate_run.corpus_checks",
                        lambda model, samples: seen.setdefault("responses", [s.response for s in samples]) and {})
    rows = [json.loads(line) for line in frozen.read_text().splitlines()]
    assert [r["reply"] for r in rows] == [json.loads(line)["response"]["utterance"]
                                          for line in manifest.read_text().splitlines()]
    frozen.write_text("".join(json.dumps(dict(r, reply="frozen")) + "\n" for r in rows))
    assert run_cli(capsys, ["gates", str(manifest), "--corpus-checks", "--references", str(frozen),
                         "--out", str(tmp_path / "out")])[0] == 0
    assert seen["responses"] == ["frozen"] * 6  # the frozen text replaced the manifest's replies


def _report(passed: bool) -> GateReport:
    gate = {"value": 40, "threshold": 38, "passed": passed}
    return GateReport(systems={"trained": {"bleu1": 0.4, "rougeL": 0.3, "bertscore": 0.6, "dist2": 0.7, "distinct": 40,
                                           "top_opening": "i am so sorry", "top_opening_share": 0.2}},
                      references=["a"], gates={"distinct_replies": gate})


@pytest.mark.parametrize("passed", [True, False])
def test_exit_status_says_whether_every_gate_passed_and_only_then_ships(tmp_path, capsys, monkeypatch, checkpoint,
                                                                        passed):
    manifest = _held_out(tmp_path / "corpus")
    monkeypatch.setattr("es4r.evaluation.gate_run.gate_model", lambda preset, checkpoint: None)
    monkeypatch.setattr("es4r.evaluation.gate_run.evaluate_gates", lambda model, checkpoint, samples: _report(passed))
    out, shipped = tmp_path / "gates", tmp_path / "es4r_embedded"
    code, printed, _ = run_cli(capsys, ["gates", str(manifest), str(checkpoint), "--out", str(out), "--ship", str(shipped)])
    assert code == (0 if passed else 1)
    assert printed.strip() == (out / "gates.md").read_text().strip()
    assert ("**PASSED**" in printed) == passed
    assert json.loads((out / "gates.json").read_text())["gates"]["distinct_replies"]["passed"] == passed
    assert (shipped / "es4r_config.json").is_file() == passed
    if passed:
        record = json.loads((shipped / "es4r_config.json").read_text())
        assert record["ship_gates"] == {"distinct_replies": {"value": 40, "threshold": 38}}


@pytest.mark.slow
def test_a_real_gate_run_on_the_tiny_preset_writes_its_report_and_fails_on_one_conversation(tmp_path, capsys,
                                                                                          checkpoint):
    manifest = _held_out(tmp_path / "corpus")
    out = tmp_path / "gates"
    code, printed, _ = run_cli(capsys, ["gates", str(manifest), str(checkpoint), "--preset", "tiny", "--out", str(out)])
    assert code == 1  # one conversation gives one distinct reply; the gate asks for 38
    report = json.loads((out / "gates.json").read_text())
    assert not report["gates"]["distinct_replies"]["passed"]
    assert set(report["replies"]) == {"untrained", "text", "cascade", "trained", "no_dual", "no_cross", "no_note"}
    assert printed.strip() == (out / "gates.md").read_text().strip() and "distinct_replies" in printed
    # gate 4's direction test, with the systems that should not pass it measured beside it
    assert set(report["gates"]) == {"distinct_replies", "bleu1_vs_text", "rougeL_vs_text", "bertscore_vs_text",
                                    "speech_cosine", "affect_differ", "affect_direction"}
    direction = report["affect"]["direction"]
    assert report["gates"]["affect_direction"]["value"] == round(direction["share"], 3)
    assert set(report["affect"]["counterparts"]) == {"untrained", "no_note"}
    for row in ("| trained |", "| the teacher's own |", "| untrained |", "| no_note |"):
        assert row in printed


def test_corpus_checks_before_training_write_their_figures(tmp_path, capsys):
    manifest = _held_out(tmp_path / "corpus", conversations=5)  # five: the probes' grouped five-fold split
    out = tmp_path / "checks"
    code, printed, _ = run_cli(capsys, ["gates", str(manifest), "--corpus-checks", "--preset", "tiny", "--out", str(out)])
    assert code == 0
    checks = json.loads((out / "corpus_checks.json").read_text())
    assert checks == json.loads(printed)
    assert checks["conversations"] == 5 and checks["teacher_all_three_differ"] == 5 and checks["probe_turns"] == 15
    assert set(checks["probe_r2"]) == {"log_energy", "frames_per_char"}
