"""Organiser's results: Fleiss' kappa, de-randomised tallies, gold flags, files, CLI."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from es4r.study.cli import add_study_subparsers, main
from es4r.study.demo import write_tone_pairs
from es4r.study.design import DEFAULT_CRITERIA
from es4r.study.export import fleiss_kappa, summarise
from es4r.study.store import StudyStore

SYSTEMS = ("es4r", "baseline")
SAMPLES, GOLD, PER_ITEM = 6, 1, 3


def test_fleiss_kappa_hand_computed():
    # P_i = 1, 1, 0 -> mean 2/3; p_j = 4/9, 4/9, 1/9 -> P_e = 33/81; kappa = 7/16
    assert fleiss_kappa(np.array([[3, 0, 0], [0, 3, 0], [1, 1, 1]])) == pytest.approx(7 / 16)
    # Fleiss (1971) / Wikipedia worked example: 10 items, 14 raters, 5 categories
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0],
             [2, 2, 8, 1, 1], [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2],
             [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(np.array(table)) == pytest.approx(0.210, abs=5e-4)
    assert fleiss_kappa(np.array([[2, 0, 0], [0, 0, 2]])) == pytest.approx(1.0)
    assert math.isnan(fleiss_kappa(np.array([[3, 0, 0], [3, 0, 0]])))
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa(np.array([[3, 0, 0], [1, 0, 0]]))


def choices_for(who: str, system_a: str, gold: bool) -> dict[str, str]:
    """Annotators 0 and 1 prefer es4r on Topic, annotator 2 the baseline; all tie elsewhere.
    On the gold item annotator 2 answers Empathy wrongly."""
    preferred = "baseline" if who == "ann2" else "es4r"
    answers = {c.name: "tie" for c in DEFAULT_CRITERIA}
    answers["Topic"] = "win" if system_a == preferred else "lose"
    if gold:
        answers["Empathy"] = "win" if system_a == preferred else "lose"
    return answers


@pytest.fixture
def finished_study(tmp_path):
    write_tone_pairs(tmp_path / "pairs", SAMPLES, SYSTEMS, gold_samples=GOLD)
    code = main(["create", "--pairs", str(tmp_path / "pairs"), "--systems", *SYSTEMS,
                 "--samples", str(SAMPLES), "--annotators-per-item", str(PER_ITEM),
                 "--seed", "11", "--out", str(tmp_path / "study.db")])
    assert code == 0
    store = StudyStore(tmp_path / "study.db")
    for who in ("ann0", "ann1", "ann2"):
        store.register(who)
        while (item := store.next_item(who)) is not None:
            key = store.rows("SELECT a.system_a, i.gold_json FROM assignments a JOIN items i "
                             "USING (item_id) WHERE annotator_id = ? AND item_id = ?",
                             (who, item.item_id))[0]
            store.submit(who, item.item_id, choices_for(who, key["system_a"],
                                                        key["gold_json"] is not None),
                         require_listening=False)
    return store


def test_tallies_are_derandomised(finished_study):
    sides = finished_study.rows("SELECT DISTINCT system_a FROM assignments")
    assert len(sides) == 2  # both systems were shown as "A": de-randomising matters
    results = summarise(finished_study)
    topic = results.tallies[0]
    assert (topic.criterion, topic.win, topic.tie, topic.lose) == ("Topic", 12, 0, 6)
    assert topic.percent("win") == pytest.approx(200 / 3)
    # every item: [2 win, 0 tie, 1 lose] -> P_i = 1/3, P_e = 5/9 -> kappa = -1/2
    assert topic.kappa == pytest.approx(-0.5) and topic.kappa_items == SAMPLES
    assert all(t.tie == SAMPLES * PER_ITEM and math.isnan(t.kappa) for t in results.tallies[1:])
    flagged = {a.annotator_id for a in results.annotators if a.flagged}
    assert flagged == {"ann2"}
    cleaned = summarise(finished_study, exclude_flagged=True)
    assert (cleaned.tallies[0].win, cleaned.tallies[0].lose) == (12, 0)


def test_export_files_hold_raw_answers(finished_study, tmp_path):
    assert main(["export", "--db", str(finished_study.db_path), "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * (SAMPLES + GOLD)
    for field in ("annotator_id", "annotator_seed", "study_seed", "position", "system_A",
                  "system_B", "seconds_on_item", "plays_A", "plays_B", "choices_A_over_B"):
        assert field in rows[0]
    assert {r["study_seed"] for r in rows} == {11}
    with open(out / "answers.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(rows)
    assert {"Topic (A over B)", "Topic (es4r over baseline)"} <= set(table[0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tallies"][0]["win"] == 12
    png = (out / "tallies.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_cli_reports_bad_input(tmp_path, capsys):
    (tmp_path / "samples.jsonl").write_text('{"sample_id": 3}\n')
    code = main(["create", "--pairs", str(tmp_path), "--systems", *SYSTEMS, "--samples", "1",
                 "--out", str(tmp_path / "s.db")])
    assert code == 2
    assert "samples.jsonl:1" in capsys.readouterr().err
    assert not (tmp_path / "s.db").exists()


def test_subparsers_mount_on_main_cli():
    import argparse

    parser = argparse.ArgumentParser()
    add_study_subparsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["study", "export", "--db", "x.db", "--out", "o"])
    assert args.study_command == "export" and callable(args.func)
