"""Study design: input validation, counterbalancing, seeds, loudness normalisation."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import soundfile
from hypothesis import given
from hypothesis import strategies as st

from es4r.study.demo import write_tone_pairs
from es4r.study.design import (DEFAULT_CRITERIA, ItemLoad, annotator_seed, balanced_coins,
                               criteria_by_name, pick_samples, plan_annotator, to_systems)
from es4r.study.build import LEVEL_FLOOR_LU
from es4r.study.stimuli import (StudyInputError, integrated_loudness, load_pairs,
                                normalise_clip)

SYSTEMS = ("es4r", "baseline")
SINE_HZ = 997  # BS.1770's reference tone
RATE = 48_000


def test_pairs_format_errors_name_file_and_line(tmp_path):
    write_tone_pairs(tmp_path, 3, SYSTEMS)
    samples = load_pairs(tmp_path)
    assert [s.sample_id for s in samples] == ["tone0", "tone1", "tone2"]
    assert samples[0].replies["es4r"].audio_path.is_file()
    lines = (tmp_path / "samples.jsonl").read_text().splitlines()
    broken = {
        "{not json": "not valid JSON",
        json.dumps({**json.loads(lines[1]), "sample_id": "tone0"}): "already used on line 1",
        json.dumps({**json.loads(lines[1]), "context": [{"role": "narrator", "utterance": ""}]}):
            "role must be one of",
        json.dumps({**json.loads(lines[1]), "systems": {
            "es4r": {"text": "x", "audio_path": "missing.wav"}, "b": {"text": "y"}}}):
            "does not exist",
    }
    for bad, message in broken.items():
        (tmp_path / "samples.jsonl").write_text("\n".join([lines[0], bad]) + "\n")
        with pytest.raises(StudyInputError, match=message) as error:
            load_pairs(tmp_path)
        assert "samples.jsonl:2" in str(error.value)


def test_criteria_defaults_are_the_papers():
    assert [c.name for c in DEFAULT_CRITERIA] == ["Topic", "Emotion", "Specific", "Action",
                                                  "Empathy", "DMOS-Q", "DMOS-C", "DMOS-E"]
    assert criteria_by_name(["DMOS-E", "Topic"])[0].kind == "speech"
    with pytest.raises(ValueError, match="choose from"):
        criteria_by_name(["Fluency"])
    with pytest.raises(ValueError, match=r"criteria listed twice in \['Topic', 'Emotion', 'Topic'\]"):
        criteria_by_name(["Topic", "Emotion", "Topic"])


def test_seeds_are_reproducible_and_distinct():
    assert annotator_seed(7, 0) == annotator_seed(7, 0)
    assert len({annotator_seed(7, slot) for slot in range(50)}) == 50
    assert annotator_seed(7, 0) != annotator_seed(8, 0)
    assert sum(balanced_coins(11, 3)) == 5
    # the sides follow the seed, not the sample order: other seeds, other orders; one seed, one order
    assert len({tuple(balanced_coins(20, seed)) for seed in range(6)}) == 6
    assert balanced_coins(20, 4) == balanced_coins(20, 4) and balanced_coins(20, 4) != sorted(balanced_coins(20, 4))
    assert pick_samples(["a", "b", "c", "d"], 2, 1) == pick_samples(["a", "b", "c", "d"], 2, 1)
    with pytest.raises(ValueError, match="lower --samples"):
        pick_samples(["a"], 2, 0)
    for count in (0, -1):
        with pytest.raises(ValueError, match="at least 1"):
            pick_samples(["a"], count, 0)


def test_sides_and_order_are_counterbalanced():
    items, per_item = 10, 4
    coins = balanced_coins(items, 5)
    assigned = Counter()
    sides = {item: Counter() for item in range(items)}
    orders = []
    for slot in range(per_item):
        loads = [ItemLoad(i, coins[i], assigned[i], False) for i in range(items)]
        plan = plan_annotator(loads, SYSTEMS, per_item, items, annotator_seed(1, slot))
        assert sorted(a.item_id for a in plan) == list(range(items))  # each item once
        assert Counter(a.system_a for a in plan)[SYSTEMS[0]] == items // 2  # half each side
        for a in plan:
            assigned[a.item_id] += 1
            sides[a.item_id][a.system_a] += 1
        orders.append([a.item_id for a in plan])
    assert all(counts[SYSTEMS[0]] == per_item // 2 for counts in sides.values())
    assert len({tuple(order) for order in orders}) == per_item  # each annotator's own order
    full = [ItemLoad(i, coins[i], per_item, False) for i in range(items)]
    assert plan_annotator(full, SYSTEMS, per_item, items, 0) == []  # study full


def test_partial_plans_spread_annotators_and_include_gold():
    loads = [ItemLoad(i, False, 0, i == 5) for i in range(6)]
    plan = plan_annotator(loads, SYSTEMS, 2, 3, seed=4)
    assert len(plan) == 4 and 5 in {a.item_id for a in plan}  # 3 regular + the gold item
    assert to_systems("win", "baseline", SYSTEMS) == "lose"
    assert to_systems("tie", "baseline", SYSTEMS) == "tie"
    assert to_systems("win", "es4r", SYSTEMS) == "win"


@given(st.lists(st.text(min_size=1, max_size=4), min_size=1, max_size=12, unique=True), st.data(),
       st.integers(0, 2**32))
def test_picked_samples_are_the_asked_count_in_input_order_for_any_seed(ids, data, seed):
    count = data.draw(st.integers(1, len(ids)))
    picked = pick_samples(ids, count, seed)
    assert len(picked) == len(set(picked)) == count and set(picked) <= set(ids)
    assert picked == [i for i in ids if i in picked]  # kept in input order
    assert picked == pick_samples(ids, count, seed)
    if count == len(ids):
        assert picked == ids


@given(st.integers(1, 16), st.integers(1, 5), st.integers(0, 2**32))
def test_the_design_is_balanced_for_any_seed_and_size(items, per_item, seed):
    """Annotators who each see every item: every item reaches exactly `per_item` of them, each
    sees every item once at its own place (0, 1, ...), sides alternate per item across
    annotators, and within one annotator each system is "A" on half the items (to one)."""
    coins = balanced_coins(items, seed)
    assert sum(coins) == items // 2
    assigned, sides, slot = Counter(), {i: [] for i in range(items)}, 0
    while plan := plan_annotator([ItemLoad(i, coins[i], assigned[i], False) for i in range(items)], SYSTEMS,
                                 per_item, items, annotator_seed(seed, slot)):
        assert [a.position for a in plan] == list(range(items)) and sorted(a.item_id for a in plan) == list(range(items))
        assert all({a.system_a, a.system_b} == set(SYSTEMS) for a in plan)
        assert abs(2 * sum(a.system_a == SYSTEMS[0] for a in plan) - items) <= 1
        for a in plan:
            assigned[a.item_id] += 1
            sides[a.item_id].append(a.system_a)
        slot += 1
    assert slot == per_item and all(assigned[i] == per_item for i in range(items))
    for item, shown in sides.items():  # the k-th annotator of an item sees it flipped when k is odd
        first = SYSTEMS[1] if coins[item] else SYSTEMS[0]
        assert shown == [first if k % 2 == 0 else ({*SYSTEMS} - {first}).pop() for k in range(per_item)]


@given(st.integers(2, 16), st.integers(1, 4), st.integers(1, 15), st.integers(0, 2**32))
def test_partial_plans_keep_coverage_even_and_never_over_ask(items, per_item, per_annotator, seed):
    per_annotator = min(per_annotator, items - 1)
    assigned, slot = Counter(), 0
    while plan := plan_annotator([ItemLoad(i, False, assigned[i], False) for i in range(items)], SYSTEMS,
                                 per_item, per_annotator, annotator_seed(seed, slot)):
        assert len(plan) <= per_annotator
        assert plan == plan_annotator([ItemLoad(i, False, assigned[i], False) for i in range(items)], SYSTEMS,
                                      per_item, per_annotator, annotator_seed(seed, slot))  # one seed, one plan
        for a in plan:
            assigned[a.item_id] += 1
        counts = [assigned[i] for i in range(items)]
        assert max(counts) - min(counts) <= 1 and max(counts) <= per_item
        slot += 1
    assert all(assigned[i] == per_item for i in range(items))


def test_loudness_matches_bs1770_reference():
    time = np.arange(3 * RATE) / RATE
    sine = np.sin(2 * np.pi * SINE_HZ * time)
    assert integrated_loudness(sine, RATE) == pytest.approx(-3.01, abs=0.05)
    assert integrated_loudness(0.1 * sine, RATE) == pytest.approx(-23.01, abs=0.05)
    assert integrated_loudness(np.zeros(RATE), RATE) == -np.inf


def test_normalised_copies_match_in_loudness(tmp_path):
    write_tone_pairs(tmp_path / "pairs", 1, SYSTEMS)  # second system is 20 dB quieter
    loud, quiet = (tmp_path / "pairs" / name / "0.wav" for name in SYSTEMS)
    source_gap = abs(integrated_loudness(*soundfile.read(loud)) -
                     integrated_loudness(*soundfile.read(quiet)))
    assert source_gap > 15
    cache = tmp_path / "cache"
    clips = [normalise_clip(path, cache, target_lufs=-26.0) for path in (loud, quiet)]
    for clip in clips:
        measured = integrated_loudness(*soundfile.read(clip.path))
        assert measured == pytest.approx(-26.0, abs=0.3)
        assert not any(system in clip.path.name for system in SYSTEMS)
    stamp = clips[0].path.stat().st_mtime_ns
    again = normalise_clip(loud, cache, target_lufs=-26.0)
    assert again.path == clips[0].path and again.path.stat().st_mtime_ns == stamp  # cached
    silent = tmp_path / "silent.wav"
    soundfile.write(silent, np.zeros(RATE), RATE)
    with pytest.raises(StudyInputError, match="silent"):
        normalise_clip(silent, cache)


def _levels(store) -> list[tuple[float, float]]:
    """(LUFS, peak) of every reply stimulus in a study."""
    out = []
    for row in store.rows("SELECT replies_json FROM items"):
        for reply in json.loads(row[0]).values():
            samples, rate = soundfile.read(store.stimuli_dir / reply["audio"])
            out.append((integrated_loudness(samples, rate), float(np.max(np.abs(samples)))))
    return out


def test_a_peaky_clip_lowers_the_whole_study_instead_of_being_limited_alone(tmp_path):
    """One system's clip with a click in it would pass -1 dBFS at -23 LUFS; it used to be
    peak-limited alone (quieter than the other system's); now every clip is levelled lower."""
    from es4r.study.build import build_study
    from es4r.study.stimuli import PEAK_CEILING, TARGET_LUFS

    write_tone_pairs(tmp_path / "even", 3, SYSTEMS)
    even = build_study(tmp_path / "even", tmp_path / "even.db", SYSTEMS, DEFAULT_CRITERIA, 3, 1)
    assert even.spec.target_lufs == TARGET_LUFS  # the counterpart: nothing to lower, nothing lowered
    assert all(abs(lufs - TARGET_LUFS) < 0.1 for lufs, _ in _levels(even))
    write_tone_pairs(tmp_path / "peaky", 3, SYSTEMS)
    _add_click(tmp_path / "peaky" / SYSTEMS[1] / "1.wav", amplitude=0.05)  # about -29 LUFS, a peak of 0.9
    peaky = build_study(tmp_path / "peaky", tmp_path / "peaky.db", SYSTEMS, DEFAULT_CRITERIA, 3, 1)
    assert TARGET_LUFS - LEVEL_FLOOR_LU < peaky.spec.target_lufs < TARGET_LUFS - 1
    levels = _levels(peaky)
    assert max(lufs for lufs, _ in levels) - min(lufs for lufs, _ in levels) < 0.1  # all equally loud
    assert all(abs(lufs - peaky.spec.target_lufs) < 0.1 for lufs, _ in levels)
    assert max(peak for _, peak in levels) <= PEAK_CEILING + 1e-3  # and nothing clipped


def _add_click(clip, amplitude: float) -> None:
    """The tone at `amplitude` with one sample at 0.9: quiet overall, a high peak."""
    samples, rate = soundfile.read(clip)
    samples = amplitude * samples / np.max(np.abs(samples))
    samples[len(samples) // 2] = 0.9
    soundfile.write(clip, samples, rate, subtype="PCM_16")


def test_a_clip_that_would_hold_the_whole_study_far_under_its_target_is_named_and_refused(tmp_path):
    """A click in a very quiet clip would level every clip of the study more than 8 LU under
    the target (about -35 LUFS for -23): refused, naming the clip and the flag that accepts the lower
    level; with that flag the study is built, every clip equally loud at it."""
    from es4r.study.build import build_study
    from es4r.study.stimuli import TARGET_LUFS
    from es4r.study.store import StudyError

    write_tone_pairs(tmp_path / "pairs", 3, SYSTEMS)
    clip = tmp_path / "pairs" / SYSTEMS[0] / "2.wav"
    _add_click(clip, amplitude=0.02)  # about -37 LUFS
    with pytest.raises(StudyError, match=r"--target-lufs -\d+$") as refused:
        build_study(tmp_path / "pairs", tmp_path / "refused.db", SYSTEMS, DEFAULT_CRITERIA, 3, 1)
    assert str(clip) in str(refused.value) and str(tmp_path / "pairs" / SYSTEMS[1]) not in str(refused.value)
    assert not (tmp_path / "refused.db").exists()
    offered = float(str(refused.value).rsplit(" ", 1)[1])
    assert TARGET_LUFS - 2 * LEVEL_FLOOR_LU < offered < TARGET_LUFS - LEVEL_FLOOR_LU
    accepted = build_study(tmp_path / "pairs", tmp_path / "accepted.db", SYSTEMS, DEFAULT_CRITERIA, 3, 1,
                           target_lufs=offered)
    levels = _levels(accepted)
    assert all(abs(lufs - accepted.spec.target_lufs) < 0.1 for lufs, _ in levels)
    assert offered - 1 < accepted.spec.target_lufs <= offered
