"""The listen lock counts audio actually heard: the played stretches, joined, must cover the
clip but a sliver (es4r.study.listening), whatever the seeking — pure logic, then the store."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from es4r.study.listening import MAX_UNHEARD_FRACTION, MAX_UNHEARD_SECONDS, describe, hearing, join

CLIP = 2.0  # seconds


def test_one_play_to_the_end_is_heard_and_nothing_played_is_not():
    assert hearing([(0.0, CLIP)], CLIP).complete
    assert not hearing([], CLIP).complete
    assert describe("B", hearing([], CLIP)) == "Reply B: not played yet."


def test_seeking_to_the_end_is_not_hearing_it():
    """The issue's cases: 0.4 s played, then a seek to 97 % and the last bit; or two seeks."""
    state = hearing([(0.0, 0.4), (0.97 * CLIP, CLIP)], CLIP)
    assert not state.complete
    assert state.unheard == ((0.4, 0.97 * CLIP),)
    assert "1.5 s of 2.0 s not heard yet (0.4–1.9 s)" in describe("A", state)
    assert not hearing([(0.97 * CLIP, CLIP), (0.97 * CLIP, CLIP)], CLIP).complete


def test_pause_and_resume_covers_the_clip():
    assert hearing([(0.0, 0.7), (0.7, 1.3), (1.3, CLIP)], CLIP).complete
    assert hearing([(0.0, 1.2), (0.9, CLIP)], CLIP).complete  # rewound a little: overlap is fine


def test_the_allowance_is_the_smaller_of_a_sliver_and_a_tenth():
    gap = MAX_UNHEARD_SECONDS - 0.01
    assert hearing([(0.0, 1.0), (1.0 + gap, 10.0)], 10.0).complete  # under 0.3 s of a 10 s clip
    assert not hearing([(0.0, 1.0), (1.0 + MAX_UNHEARD_SECONDS + 0.05, 10.0)], 10.0).complete
    short = 1.0  # a tenth of it, 0.1 s, is the limit
    assert hearing([(0.0, short - MAX_UNHEARD_FRACTION * short + 0.01)], short).complete
    assert not hearing([(0.0, short - 0.2)], short).complete


def test_a_stretch_longer_than_the_time_since_the_first_play_does_not_count():
    """A report the player cannot have made (2 s heard 0.2 s after pressing play)."""
    assert not hearing([(0.0, CLIP)], CLIP, wall_seconds=0.2).complete
    assert hearing([(0.0, CLIP)], CLIP, wall_seconds=CLIP - 0.5).complete  # late delivery allowed
    assert "faster than it can play" in describe("A", hearing([(0.0, CLIP)], CLIP, wall_seconds=0.2))


spans = st.lists(st.tuples(st.floats(-1.0, 3.0), st.floats(-1.0, 3.0)), max_size=8)


@settings(max_examples=200, deadline=None)
@given(spans)
def test_joined_stretches_are_sorted_disjoint_inside_the_clip_and_cover_the_same_points(raw):
    joined = join(raw, CLIP)
    assert all(0.0 <= a < b <= CLIP for a, b in joined)
    assert all(joined[i][1] < joined[i + 1][0] for i in range(len(joined) - 1))
    for point in [k * CLIP / 97 for k in range(98)]:  # a point is covered by both or neither
        inside = any(min(a, b) < point < max(a, b) for a, b in raw)
        assert inside <= any(a <= point <= b for a, b in joined)
    state = hearing(raw, CLIP)
    assert state.heard_seconds + sum(b - a for a, b in state.unheard) == pytest.approx(CLIP)


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 0.95), st.floats(0.05, 1.0))
def test_skipping_any_stretch_longer_than_the_allowance_locks(skip_from, skip_length):
    """Whatever is skipped, and however the rest is played, a skip of over 0.3 s is caught."""
    skip_to = min(CLIP, skip_from * CLIP + skip_length * CLIP)
    state = hearing([(0.0, skip_from * CLIP), (skip_to, CLIP)], CLIP)
    assert state.complete == (skip_to - skip_from * CLIP <= min(MAX_UNHEARD_SECONDS, 0.1 * CLIP) + 1e-9)


def test_the_store_keeps_each_reported_event_once_and_unlocks_on_coverage(tmp_path):
    from tests.test_study_store import all_answers, make_study
    from es4r.study.store import NotListened

    store = make_study(tmp_path, samples=2)
    store.register("ann1")
    item = store.next_item("ann1")
    seconds = {side: store.hearing("ann1", item.item_id)[side].clip_seconds for side in "AB"}
    start = time.time()

    def played(side, event, a, b, at, seq):
        return store.log_play("ann1", item.item_id, side, event, at=start + at, from_s=a, to_s=b, page="p1", seq=seq)

    # A: played 40 %, paused, seeked to 97 %, played the end → locked, and the page says what is left
    played("A", "play", 0.0, None, 0.0, 1)
    played("A", "pause", 0.0, 0.4 * seconds["A"], 0.4 * seconds["A"], 2)
    played("A", "play", 0.97 * seconds["A"], None, 3.0, 3)
    played("A", "ended", 0.97 * seconds["A"], seconds["A"], 3.1, 4)
    assert not played("A", "ended", 0.97 * seconds["A"], seconds["A"], 3.1, 4)  # a repeated report: kept once
    # B: played to the end in two goes (pause, resume)
    played("B", "play", 0.0, None, 4.0, 5)
    played("B", "pause", 0.0, seconds["B"] / 2, 4.0 + seconds["B"] / 2, 6)
    played("B", "play", seconds["B"] / 2, None, 6.0, 7)
    played("B", "ended", seconds["B"] / 2, seconds["B"], 6.0 + seconds["B"] / 2, 8)
    assert store.listened("ann1", item.item_id) == {"B"}
    with pytest.raises(NotListened, match="every part of both replies"):
        store.submit("ann1", item.item_id, all_answers())
    played("A", "play", 0.4 * seconds["A"], None, 8.0, 9)  # the skipped part, heard
    played("A", "ended", 0.4 * seconds["A"], seconds["A"], 8.0 + 0.6 * seconds["A"], 10)
    assert store.listened("ann1", item.item_id) == {"A", "B"}
    assert store.submit("ann1", item.item_id, all_answers())
    plays = store.rows("SELECT plays_a, plays_b FROM responses")[0]
    assert (plays["plays_a"], plays["plays_b"]) == (3, 2)  # the log says what the players did
    assert len(store.rows("SELECT 1 FROM play_events")) == 10


def test_a_late_play_report_does_not_lock_out_a_listener(tmp_path):
    """On a busy server the 'play' report can arrive just before the 'ended' one (a browser test
    stalled so at a load average of 20): the page's own clock times the stretch."""
    from tests.test_study_store import make_study

    store = make_study(tmp_path, samples=2)
    store.register("ann1")
    item = store.next_item("ann1")
    seconds = store.hearing("ann1", item.item_id)["A"].clip_seconds
    arrived = time.time()  # both reports reached the server at once
    store.log_play("ann1", item.item_id, "A", "play", at=arrived, from_s=0.0, page="p", seq=1, played_at=10.0)
    store.log_play("ann1", item.item_id, "A", "ended", at=arrived + 0.01, from_s=0.0, to_s=seconds, page="p", seq=2,
                   played_at=10.0 + seconds)
    store.log_play("ann1", item.item_id, "B", "play", at=arrived, from_s=0.0)  # no page clock: server times
    store.log_play("ann1", item.item_id, "B", "ended", at=arrived + 0.01, from_s=0.0, to_s=seconds)
    state = store.hearing("ann1", item.item_id)
    assert state["A"].wall_seconds == pytest.approx(seconds)  # timed as the player played it
    assert state["B"].wall_seconds == pytest.approx(0.01, abs=1e-3)  # the counterpart: as it arrived
    assert state["A"].complete
