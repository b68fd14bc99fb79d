"""The affect reader (es4r/modeling/affect_reader.py): it hears the trend of the user's loudness and
rate on real clips, says so when it cannot, is fitted on a corpus's variants, and its note reaches
the speech path's prompt (never the text path's) and the checkpoint."""

import random
import re

import pytest
import torch

from es4r.audio import load_audio, log_mel
from es4r.data.manifest import load_manifest, prepare_sample
from es4r.modeling.affect_reader import (AFFECT_NOTES, AFFECTS, AffectReader, AffectReading, affect_note,
                                         all_affect_notes, slope)
from es4r.systems import variant_config
from es4r.training.reader_fit import fit_affect_reader
from tests.test_affect_pairs import GAINS, _corpus


def _turns(speech_paths, gains, texts=("turn 0", "turn 1", "turn 2")):
    return [(torch.from_numpy(log_mel(load_audio(p).samples * g, 80)), t) for p, g, t in zip(speech_paths, gains, texts)]


def test_slope_is_the_change_per_turn():
    assert slope([1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert slope([3.0, 3.0]) == pytest.approx(0.0)
    assert slope([0.0, 2.0, 1.0, 3.0]) == pytest.approx(0.8)


def test_a_trend_that_agrees_with_its_class_keeps_the_teachers_note_word_for_word():
    """The speech path and the teacher were trained on these exact notes: where the measured
    directions are the ones a class claims, not a character of them changes."""
    teacher = {
        "falling": "The user sounds tired and sad: their voice got quieter and slower with every turn.",
        "rising": "The user sounds excited and energetic: their voice got louder and faster with every turn.",
        "flat": "The user sounds calm and steady.",
    }
    assert AFFECT_NOTES == teacher
    assert affect_note("falling", (-0.9, -0.3)) == teacher["falling"]
    assert affect_note("rising", (1.2, 0.01)) == teacher["rising"]
    for trend in ((1.0, 1.0), (-1.0, 1.0), (0.0, 0.0), None):  # flat claims no direction, whatever was measured
        assert affect_note("flat", trend) == teacher["flat"]
    assert AffectReading("rising", "", trend=(0.5, 0.2)).note == teacher["rising"]


def test_a_trend_against_its_class_is_told_as_measured():
    # the good_news_1 -> 2: louder (+0.84) and slower (-6.52), read as rising
    assert (AffectReading("rising", "", trend=(0.84, -6.52)).note
            == "The user sounds excited and energetic: their voice got louder but slower over their turns.")
    assert (affect_note("falling", (-0.4, 0.7))
            == "The user sounds tired and sad: their voice got quieter but faster over their turns.")
    # neither direction supports the class: no feeling is claimed, only what was measured
    assert affect_note("rising", (-0.2, -0.1)) == "The user's voice got quieter and slower over their turns."
    assert all(affect_note(a, None) == AFFECT_NOTES[a] for a in AFFECTS)  # no trend: the class's note


def test_the_notes_direction_words_are_the_signs_of_the_trend():
    draw = random.Random(0)
    values = [0.0, 1e-9, -1e-9, 0.84, -6.52] + [draw.uniform(-8, 8) for _ in range(40)]
    for _ in range(2000):
        trend = (draw.choice(values), draw.choice(values))
        for affect in ("falling", "rising"):
            words = re.findall(r"louder|quieter|faster|slower", affect_note(affect, trend))
            assert words == ["louder" if trend[0] > 0 else "quieter", "faster" if trend[1] > 0 else "slower"]
        assert not re.findall(r"louder|quieter|faster|slower", affect_note("flat", trend))
    assert len(all_affect_notes()) == 9 and set(AFFECT_NOTES.values()) <= set(all_affect_notes())


def test_trend_follows_the_clips_loudness(speech_paths):
    reader = AffectReader(level_scale=0.15, rate_scale=0.12)
    falling = reader.trend(_turns(speech_paths, GAINS["falling"]))
    rising = reader.trend(_turns(speech_paths, GAINS["rising"]))
    # each turn 6 dB apart: about one level unit per turn (the clips' own loudness differs a little)
    assert falling[0] < -0.5 and rising[0] > 0.5
    assert float(rising[1]) == pytest.approx(float(falling[1]), abs=1e-6)  # same clips, same texts: same rate
    assert reader.trend(_turns(speech_paths, GAINS["falling"])[:1]) is None  # one turn has no trend


def test_an_unfitted_reader_or_one_turn_gives_no_note_and_says_why(speech_paths):
    reader = AffectReader(0.15, 0.12)
    reading = reader.read(_turns(speech_paths, GAINS["falling"]))
    assert reading.note is None and "not trained" in reading.reason
    reader.fitted.fill_(1.0)
    reading = reader.read(_turns(speech_paths, GAINS["falling"])[:1])
    assert reading.note is None and "a trend needs 2" in reading.reason


def test_fitted_on_a_corpus_it_reads_new_dialogues(tmp_path, speech_paths, tiny_model):
    items = [prepare_sample(s, 80) for s in load_manifest(_corpus(tmp_path, speech_paths, conversations=2))]
    reader = AffectReader(0.15, 0.12)
    report = fit_affect_reader(reader, items, items[:3])
    assert report["rows"] == 6 and report["train_accuracy"] == 1.0 and report["val_accuracy"] == 1.0
    assert bool(reader.fitted) and not any(p.requires_grad for p in reader.parameters())
    for variant, gains in (("falling", (0.9, 0.45, 0.2)), ("rising", (0.2, 0.45, 0.9)), ("flat", (0.4, 0.4, 0.4))):
        reading = reader.read(_turns(speech_paths, gains, ("a b c", "d e f", "g h i")))
        assert reading.affect == variant and reading.note == affect_note(variant, reading.trend)
        # the clips get slower (same words, longer clips): the rising note says so, the falling one is the teacher's
        assert reading.trend[1] < 0 and reading.note == {"falling": AFFECT_NOTES["falling"], "flat": AFFECT_NOTES["flat"],
                                                         "rising": "The user sounds excited and energetic: their voice "
                                                                   "got louder but slower over their turns."}[variant]
        assert reading.probabilities[variant] == max(reading.probabilities.values())


def test_no_variants_no_fit(tmp_path, speech_paths):
    rows = [prepare_sample(s, 80) for s in load_manifest(_corpus(tmp_path, speech_paths, 1, ("falling",)))]
    reader = AffectReader(0.15, 0.12)
    assert fit_affect_reader(reader, rows) is None and not bool(reader.fitted)


def test_the_note_closes_the_speech_paths_prompt_only(tmp_path, speech_paths, tiny_model):
    from es4r.training.checkpoint import load_es4r_parts, save_es4r_parts

    items = [prepare_sample(s, 80) for s in load_manifest(_corpus(tmp_path, speech_paths, conversations=1))]
    reader = tiny_model.cross.reader
    saved = {k: v.clone() for k, v in reader.state_dict().items()}
    try:
        falling = next(i for i in items if i.sample.variant == "falling")
        history = falling.sample.history_turns()
        unfitted, reading = tiny_model.speech_prompt_parts(history, falling.features)
        assert reading.note is None and unfitted == tiny_model.prompt_parts(history)
        fit_affect_reader(reader, items)
        parts, reading = tiny_model.speech_prompt_parts(history, falling.features)
        assert reading.affect == "falling"
        assert parts == tiny_model.prompt_parts(history, hint=AFFECT_NOTES["falling"])
        assert AFFECT_NOTES["falling"] in tiny_model.tokenizer.decode(parts.suffix_ids)
        spoken, _ = tiny_model.generate(history, falling.features)
        assert spoken.affect.affect == "falling"
        # every turn heard, the listener's too (the app encodes its own spoken replies): the reader hears the user's only
        loud = torch.from_numpy(log_mel(load_audio(speech_paths[0]).samples, 80))
        everything = [f if f is not None else loud for f in falling.features]
        assert tiny_model.read_affect(history, everything).turns == 3 < len(history)
        written, _ = tiny_model.generate(history, None)
        assert written.affect is None  # the text path hears nothing
        ablated = tiny_model.with_config(variant_config(tiny_model.config, "no_note"))
        assert ablated.speech_prompt_parts(history, falling.features) == (tiny_model.prompt_parts(history), None)
        save_es4r_parts(tiny_model, tmp_path / "ckpt")
        fitted = {k: v.clone() for k, v in reader.state_dict().items()}
        reader.load_state_dict(saved)
        load_es4r_parts(tiny_model, tmp_path / "ckpt")
        assert all(torch.equal(reader.state_dict()[k], v) for k, v in fitted.items())
    finally:
        reader.load_state_dict(saved)


def test_the_trainer_fits_the_reader_before_step_0_and_keeps_it(tmp_path, speech_paths, tiny_dirs):
    import json

    from es4r.config import TrainConfig
    from es4r.training.trainer import train
    from tests.test_training import _model

    model = _model(tiny_dirs)
    manifest = _corpus(tmp_path, speech_paths, conversations=1)
    config = TrainConfig(manifest=str(manifest), output_dir=str(tmp_path / "run"), preset="tiny", epochs=2,
                         batch_size=3, lr=1e-2, save_every=1, max_steps=1)
    train(config, model=model)
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["affect_reader"]["train_accuracy"] == 1.0 and log[0]["step"] == 0
    reader = model.cross.reader
    assert bool(reader.fitted)
    fitted = {k: v.clone() for k, v in reader.state_dict().items()}
    train(TrainConfig(**{**config.__dict__, "max_steps": 2}), model=_model(tiny_dirs))  # resumes from last/
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert sum("affect_reader" in r for r in log) == 1  # fitted once; the resumed run keeps it
    from es4r.training.checkpoint import load_es4r_parts

    again = _model(tiny_dirs)
    load_es4r_parts(again, tmp_path / "run" / "final")
    assert all(torch.equal(again.cross.reader.state_dict()[k], v) for k, v in fitted.items())


def test_the_gate_report_says_how_often_the_reader_hears_the_variant(tmp_path, speech_paths, tiny_dirs):
    from es4r.evaluation.gates import reader_accuracy
    from tests.test_training import _model

    model = _model(tiny_dirs)
    samples = load_manifest(_corpus(tmp_path, speech_paths, conversations=1))
    assert reader_accuracy(model, samples) == {}  # unfitted: nothing to report
    fit_affect_reader(model.cross.reader, [prepare_sample(s, 80) for s in samples])
    assert reader_accuracy(model, samples) == {"reader_accuracy": 1.0, "reader_rows": 3}
