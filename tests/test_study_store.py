"""The study database: WAL durability, no lost or doubled answers, blinding, listening gate."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from es4r.study.build import build_study
from es4r.study.demo import write_tone_pairs
from es4r.study.design import DEFAULT_CRITERIA
from es4r.study.store import NotListened, StudyError, StudyFull, StudyStore

SYSTEMS = ("es4r", "baseline")
REPO = Path(__file__).resolve().parents[1]


def make_study(tmp_path: Path, samples: int = 6, per_item: int = 2, gold: int = 0,
               per_annotator: int | None = None) -> StudyStore:
    write_tone_pairs(tmp_path / "pairs", samples, SYSTEMS, gold_samples=gold)
    return build_study(tmp_path / "pairs", tmp_path / "study.db", SYSTEMS, DEFAULT_CRITERIA,
                       samples, per_item, per_annotator, seed=7)


def all_answers(choice: str = "win") -> dict[str, str]:
    return {criterion.name: choice for criterion in DEFAULT_CRITERIA}


def answer_everything(store: StudyStore, who: str) -> int:
    count = 0
    while (item := store.next_item(who)) is not None:
        assert store.submit(who, item.item_id, all_answers(), require_listening=False)
        count += 1
    return count


def test_database_is_durable_wal(tmp_path):
    store = make_study(tmp_path)
    with store._connect() as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert db.execute("PRAGMA busy_timeout").fetchone()[0] > 0
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_resume_never_repeats_an_item(tmp_path):
    store = make_study(tmp_path, samples=4)
    assert store.register("ann1").total == 4
    first = store.next_item("ann1")
    assert store.submit("ann1", first.item_id, all_answers(), require_listening=False)
    assert not store.submit("ann1", first.item_id, all_answers("lose"), require_listening=False)
    reopened = StudyStore(tmp_path / "study.db")  # a server restart
    assert reopened.register("ann1").done == 1  # returning annotator keeps their plan
    seen = {first.item_id}
    while (item := reopened.next_item("ann1")) is not None:
        assert item.item_id not in seen
        seen.add(item.item_id)
        reopened.submit("ann1", item.item_id, all_answers(), require_listening=False)
    assert len(seen) == 4
    kept = reopened.rows("SELECT choice FROM judgements WHERE item_id = ? AND criterion = 'Topic'",
                         (first.item_id,))
    assert [row["choice"] for row in kept] == ["win"]  # the first answer stands


def test_page_data_never_names_the_systems_or_a_file(tmp_path):
    """The page gets clips by opaque token: no system, file or folder name; a token serves only
    the clip it was made for, and a made-up one nothing."""
    store = make_study(tmp_path, samples=4)
    store.register("ann1")
    item = store.next_item("ann1")
    shown = repr(item).lower()
    assert not any(system in shown for system in SYSTEMS)
    assert "stimuli" not in shown and ".wav" not in shown and str(tmp_path).lower() not in shown
    owner = store.clip(item.clip_a)
    assert (owner.annotator_id, owner.item_id, owner.part) == ("ann1", item.item_id, "A")
    assert owner.path.parent == store.stimuli_dir and owner.path.is_file()
    assert store.next_item("ann1").clip_a == item.clip_a  # shown again: the same token
    assert store.clip("not-a-token") is None
    store.register("ann2")
    assert item.clip_a not in repr(store.next_item("ann2"))  # tokens are per annotator
    key = store.rows("SELECT system_a FROM assignments WHERE item_id = ?", (item.item_id,))
    assert key[0]["system_a"] in SYSTEMS  # the key exists, server-side only


def test_a_schema_1_study_is_upgraded_in_place_keeping_its_events(tmp_path):
    store = make_study(tmp_path, samples=2)
    store.register("ann1")
    item = store.next_item("ann1")
    with sqlite3.connect(store.db_path) as db:  # back to how schema 1 looked
        db.executescript("DROP TABLE clips; DROP TABLE play_events; CREATE TABLE play_events ("
                         "event_id INTEGER PRIMARY KEY, annotator_id TEXT NOT NULL, item_id INTEGER NOT NULL,"
                         " side TEXT NOT NULL, event TEXT NOT NULL, at REAL NOT NULL);"
                         f"INSERT INTO play_events VALUES (1, 'ann1', {item.item_id}, 'A', 'play', 1.0);"
                         "UPDATE meta SET value = '1' WHERE key = 'schema_version';")
    upgraded = StudyStore(store.db_path)
    assert upgraded.rows("SELECT value FROM meta WHERE key = 'schema_version'")[0][0] == "2"
    assert [tuple(r) for r in upgraded.rows("SELECT event, at, from_s FROM play_events")] == [("play", 1.0, None)]
    assert upgraded.listened("ann1", item.item_id) == set()  # an old 'ended' proves no stretch
    assert upgraded.next_item("ann1").clip_a


def test_answers_unlock_only_after_both_replies_heard(tmp_path):
    store = make_study(tmp_path, samples=2)
    store.register("ann1")
    item = store.next_item("ann1")
    with pytest.raises(NotListened):
        store.submit("ann1", item.item_id, all_answers())
    replies = json.loads(store.rows("SELECT replies_json FROM items WHERE item_id = ?",
                                    (item.item_id,))[0][0])
    seconds = max(replies[system]["seconds"] for system in SYSTEMS)
    start = time.time()
    store.log_play("ann1", item.item_id, "A", "play", at=start, from_s=0.0)
    store.log_play("ann1", item.item_id, "A", "seek", at=start + 0.01, from_s=0.0, to_s=0.01)  # seeked to the end
    store.log_play("ann1", item.item_id, "A", "ended", at=start + 0.02, from_s=seconds - 0.01, to_s=seconds)
    store.log_play("ann1", item.item_id, "B", "play", at=start, from_s=0.0)
    store.log_play("ann1", item.item_id, "B", "ended", at=start + seconds, from_s=0.0, to_s=seconds)
    assert store.listened("ann1", item.item_id) == {"B"}
    with pytest.raises(NotListened):
        store.submit("ann1", item.item_id, all_answers())
    store.log_play("ann1", item.item_id, "A", "play", at=start + seconds, from_s=0.0)
    store.log_play("ann1", item.item_id, "A", "ended", at=start + seconds * 2, from_s=0.0, to_s=seconds)
    assert store.submit("ann1", item.item_id, all_answers())
    plays = store.rows("SELECT plays_a, plays_b FROM responses")[0]
    assert (plays["plays_a"], plays["plays_b"]) == (2, 1)


WRITER = textwrap.dedent("""
    import sys
    from es4r.study.design import DEFAULT_CRITERIA
    from es4r.study.store import StudyStore
    store = StudyStore(sys.argv[1])
    answers = {c.name: "tie" for c in DEFAULT_CRITERIA}
    saved = 0
    for who in range(1000):
        store.register(f"w{who}")
        while (item := store.next_item(f"w{who}")) is not None:
            store.submit(f"w{who}", item.item_id, answers, require_listening=False)
            saved += 1
            print(saved, flush=True)
""")
KILL_AFTER = 25  # answers reported committed before SIGKILL


def test_sigkill_mid_study_loses_no_submitted_answer(tmp_path):
    make_study(tmp_path, samples=6, per_item=1000)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "study.db")],
                              stdout=subprocess.PIPE, text=True, env=env)
    reported = 0
    for line in writer.stdout:
        reported = int(line)
        if reported >= KILL_AFTER:
            writer.send_signal(signal.SIGKILL)
            break
    writer.wait()
    assert writer.returncode == -signal.SIGKILL
    store = StudyStore(tmp_path / "study.db")
    with store._connect() as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        responses = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        judgements = db.execute("SELECT COUNT(*) FROM judgements").fetchone()[0]
    assert responses >= reported >= KILL_AFTER  # everything reported as saved is there
    assert judgements == responses * len(DEFAULT_CRITERIA)  # no half-saved item
    # the killed annotator resumes after their last saved item
    last = store.rows("SELECT annotator_id FROM annotators ORDER BY slot DESC LIMIT 1")[0][0]
    before = store.progress(last).done
    item = store.next_item(last)
    if item is not None:
        assert store.submit(last, item.item_id, all_answers(), require_listening=False)
        assert store.progress(last).done == before + 1


def _annotate(db_path: str, who: str, shared_item: int, results) -> None:
    store = StudyStore(db_path)
    try:
        store.register(who)
    except StudyFull:
        results.put((who, "full", 0))
        return
    results.put((who, "done", answer_everything(store, who)))
    try:  # everybody also races to answer the same item as annotator "shared"
        won = store.submit("shared", shared_item, all_answers("lose"), require_listening=False)
        results.put((who, "race", int(won)))
    except sqlite3.OperationalError as error:  # pragma: no cover - would be a failure
        results.put((who, "error", str(error)))


def test_concurrent_annotators_never_overwrite_each_other(tmp_path):
    workers = 6
    store = make_study(tmp_path, samples=6, per_item=3, per_annotator=4)
    store.register("shared")  # takes one slot per item it holds
    shared_item = store.next_item("shared").item_id
    results = multiprocessing.get_context("spawn").Queue()
    processes = [multiprocessing.get_context("spawn").Process(
        target=_annotate, args=(str(store.db_path), f"p{n}", shared_item, results))
        for n in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    outcomes = []
    while not results.empty():
        outcomes.append(results.get(timeout=5))
    races = [value for _, kind, value in outcomes if kind == "race"]
    assert not [o for o in outcomes if o[1] == "error"]
    assert sum(races) == 1  # exactly one process saved the shared item
    counts = store.rows("SELECT item_id, COUNT(*) AS n FROM assignments GROUP BY item_id")
    assert max(row["n"] for row in counts) <= 3  # quota held under concurrent enrolment
    answered = store.rows("SELECT COUNT(*) FROM responses WHERE annotator_id != 'shared'")[0][0]
    assert answered == sum(value for _, kind, value in outcomes if kind == "done")
    assert answered == 6 * 3 - store.progress("shared").total  # every needed slot filled


def test_annotator_ids_are_normalised(tmp_path):
    store = make_study(tmp_path, samples=2)
    first = store.register("  Rater07 ")
    again = store.register("rater07")
    assert first.total == again.total
    assert [r["annotator_id"] for r in store.rows("SELECT annotator_id FROM annotators")] == ["rater07"]
    with pytest.raises(StudyError, match="capitals and surrounding spaces are ignored"):
        store.register("rater 07")


def test_the_page_labels_recognised_words_and_shows_transcripts_as_they_are():
    """Context bubbles carry the pairs file's words literally (no HTML runs); recogniser output
    says so; a clip is named by its token alone."""
    from types import SimpleNamespace

    from es4r.study.ui import RECOGNISED_NOTE, _conversation

    item = SimpleNamespace(context=[
        {"role": "speaker", "utterance": "I lost my <b>job</b>.", "clip": "tok1", "recognised": False},
        {"role": "listener", "utterance": "Oh no.", "clip": None},  # a study built before the flag
        {"role": "speaker", "utterance": "i lost my jab", "clip": None, "recognised": True}])
    shown = _conversation(item)
    assert "I lost my &lt;b&gt;job&lt;/b&gt;." in shown and "<b>" not in shown
    assert shown.count(RECOGNISED_NOTE) == 1 and shown.index("i lost my jab") < shown.index(RECOGNISED_NOTE)
    assert 'src="clip/tok1"' in shown and shown.count("<audio") == 1


def test_reply_text_is_shown_as_written_never_as_html_or_markdown():
    import markdown_it

    from es4r.study.ui import _literal

    written = "<b>Great</b> news! *Really* 1. fine_thing & [link](x)"
    rendered = markdown_it.MarkdownIt().render(_literal(written))
    assert "<b>" not in rendered and "<em>" not in rendered and "<a " not in rendered and "<ol" not in rendered
    assert "&lt;b&gt;Great&lt;/b&gt;" in rendered and "*Really*" in rendered and "[link](x)" in rendered
