"""The study page's handlers in process, on a tone study: a reopened page shows the lock as the
store has it, and a play report that races the page's resume changes nothing on the page."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

from es4r.study.build import build_study
from es4r.study.demo import write_tone_pairs
from es4r.study.design import DEFAULT_CRITERIA
from es4r.study.ui import LOCKED_NOTE, UNLOCKED_NOTE, AnnotatorPlace, build_study_tab

SYSTEMS = ("es4r", "baseline")


@pytest.fixture
def study(tmp_path: Path):
    """(store, page handlers by name, each handler's outputs by elem_id)."""
    write_tone_pairs(tmp_path / "pairs", 2, SYSTEMS)
    store = build_study(tmp_path / "pairs", tmp_path / "study.db", SYSTEMS, DEFAULT_CRITERIA, 2, 3, seed=7)  # 3 annotators per item
    with gr.Blocks() as page:
        build_study_tab(tmp_path / "study.db", page)
    fns = {fn.name: fn for fn in page.fns.values()}
    return store, fns


def _by_id(fn, values: list) -> dict:
    """A handler's returned values keyed by its outputs' elem_id ("session" for the gr.State)."""
    return {"session" if isinstance(block, gr.State) else (block.elem_id or block._id): value
            for block, value in zip(fn.outputs, values)}


def _hear(store, who: str, item_id: int, side: str) -> None:
    seconds = store.hearing(who, item_id)[side].clip_seconds
    start = time.time() - seconds - 1
    store.log_play(who, item_id, side, "play", at=start, from_s=0.0)
    store.log_play(who, item_id, side, "ended", at=start + seconds + 0.5, from_s=0.0, to_s=seconds)


def _reopen(fns, who: str) -> dict:
    request = SimpleNamespace(query_params={"resume": who})
    return _by_id(fns["on_load"], fns["on_load"].fn(AnnotatorPlace(), request))


def test_a_reopened_page_shows_what_the_store_has_heard_of_the_item(study):
    store, fns = study
    for who in ("ann1", "ann2"):
        store.register(who)
    item = store.next_item("ann1")
    _hear(store, "ann1", item.item_id, "A")
    _hear(store, "ann1", item.item_id, "B")
    shown = _reopen(fns, "ann1")
    assert shown["session"].item_id == item.item_id and shown["session"].heard == {"A", "B"}
    assert shown["study-lock-note"] == UNLOCKED_NOTE
    assert shown["study-next"]["interactive"] is True
    assert all(shown[f"study-crit-{i}"]["interactive"] is True for i in range(len(DEFAULT_CRITERIA)))
    # the counterparts: one reply heard names what is left; nothing heard is the short line
    other = store.next_item("ann2")
    _hear(store, "ann2", other.item_id, "B")
    half = _reopen(fns, "ann2")
    assert half["session"].heard == {"B"} and half["study-lock-note"].startswith("**Locked:**")
    assert half["study-lock-note"] != LOCKED_NOTE and half["study-next"]["interactive"] is False
    store.register("ann3")
    fresh = _reopen(fns, "ann3")
    assert fresh["study-lock-note"] == LOCKED_NOTE and fresh["study-next"]["interactive"] is False
    assert not any(fresh[f"study-crit-{i}"]["interactive"] for i in range(len(DEFAULT_CRITERIA)))


def test_a_report_that_races_the_resume_keeps_its_events_and_leaves_the_page_alone(study):
    """A report read with the page's place before the resume set it (no item): its stretches are
    stored, and nothing is written back to the page, the place included — an old place written
    back stranded the page (every later report was ignored, the lock never opened)."""
    store, fns = study
    store.register("ann1")
    item = store.next_item("ann1")
    seconds = store.hearing("ann1", item.item_id)["A"].clip_seconds
    now = time.time()
    report = {"clip": item.clip_a, "page": "p1", "events": [
        {"event": "play", "from": 0.0, "to": None, "seq": 1, "at": now - seconds - 1},
        {"event": "ended", "from": 0.0, "to": seconds, "seq": 2, "at": now}]}
    on_report = fns["on_report"]
    out = on_report.fn(AnnotatorPlace("ann1"), json.dumps(report))
    assert all(value == gr.skip() for value in out)
    assert store.hearing("ann1", item.item_id)["A"].complete  # kept all the same
    # with the place set, the same page's next report updates the lock
    place = AnnotatorPlace("ann1", item.item_id)
    out = _by_id(on_report, on_report.fn(place, json.dumps({**report, "events": report["events"][1:]})))
    assert out["session"].heard == {"A"} and out["study-lock-note"].startswith("**Locked:**")
