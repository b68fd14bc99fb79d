"""The evaluate and bench commands on the tiny preset."""

import csv
import json

import pytest

from es4r.pipeline import ES4RPipeline
from es4r.systems import SYSTEMS, system_variant
from es4r.training.checkpoint import save_es4r_parts
from tests.test_training import _rows, _write_manifest


@pytest.fixture(scope="module")
def speech_pipeline(tmp_path_factory, tiny_pipeline):
    """Tiny pipeline with an (untrained, saved) ES4R checkpoint, so every system can run."""
    folder = save_es4r_parts(tiny_pipeline.model, tmp_path_factory.mktemp("ckpt") / "es4r")
    return ES4RPipeline.from_preset("tiny", es4r_checkpoint=str(folder))


def test_variants_are_configs_over_shared_weights(speech_pipeline):
    """Each ablation is its own config over the same weights; the pipeline it came from is
    never edited."""
    pipeline = speech_pipeline
    variants = {name: system_variant(pipeline, name) for name in ("no_dual", "no_cross", "no_empathetic_tts", "es4r_text")}
    assert not variants["no_dual"].model.dual.config.enabled and not variants["no_dual"].config.dual.enabled
    assert not variants["no_cross"].model.cross.config.enabled and not variants["no_cross"].config.cross.enabled
    assert not variants["no_empathetic_tts"].config.strategy.empathetic_tts
    assert not variants["es4r_text"].speech_path
    assert pipeline.speech_path and pipeline.model.dual.config.enabled and pipeline.model.cross.config.enabled
    assert pipeline.config.strategy.empathetic_tts and pipeline.model.config is pipeline.config
    for variant in variants.values():  # the same tensors, not copies
        shared = dict(variant.model.named_parameters())
        assert all(shared[name] is value for name, value in pipeline.model.named_parameters())


def test_ablations_change_what_the_llm_reads(speech_pipeline, speech_paths, monkeypatch):
    """With trained-like (non-identity) ES4R weights, each ablation changes the LLM's input on
    the path users run (pipeline.think -> model.generate), and switching back restores it."""
    import torch

    from es4r.conversation import Conversation

    model = speech_pipeline.model
    saved = {name: value.clone() for name, value in model.state_dict().items() if name.startswith(("dual.", "cross."))}
    read = []
    generate = model.llm.generate
    monkeypatch.setattr(model.llm, "generate", lambda **kw: read.append(kw["inputs_embeds"].clone()) or generate(**kw))
    conversation = Conversation()
    for path in speech_paths[:2]:
        conversation = speech_pipeline.add_user_turn(conversation, path, transcript="i feel sad")
    try:
        torch.manual_seed(1)
        with torch.no_grad():
            for name, value in model.named_parameters():
                if name.startswith(("dual.", "cross.")) and value.is_floating_point():
                    value.add_(torch.randn_like(value) * 0.3)
        inputs = {}
        for name in ("es4r", "no_dual", "no_cross", "es4r"):
            read.clear()
            system_variant(speech_pipeline, name).think(conversation)
            inputs.setdefault(name, []).append(read[0])
    finally:
        model.load_state_dict(saved, strict=False)
    first, again = inputs["es4r"]
    assert torch.equal(first, again)  # the variants switch back
    for name in ("no_dual", "no_cross"):
        assert first.shape != inputs[name][0].shape or not torch.allclose(first, inputs[name][0]), name


def test_growth_check_on_constructed_timings():
    from es4r.bench import BenchRow, growth_check

    def row(turns: int, seconds: float) -> BenchRow:
        return BenchRow(turns, 0.5, seconds - 0.5, 1.0, 1.0, 1.0, 1.0, {}, 1.0, 1.0, 1.0, 1.0, 1.0, 1, 1)

    assert growth_check([row(1, 2.0), row(4, 6.0)]) == "1->4 turns: time x3.00 (linear would be x4): within linear"
    assert growth_check([row(1, 2.0), row(4, 10.0)]) == "1->4 turns: time x5.00 (linear would be x4): ABOVE linear"


def test_the_listed_reply_is_the_repeat_of_median_length():
    """The bench lists one reply per row beside median token counts: the reply of that length."""
    from types import SimpleNamespace

    from es4r.bench import _median_length

    runs = [(1.0, 40, 0, 0, "long"), (0.5, 10, 0, 0, "short"), (0.7, 20, 0, 0, "middle")]
    assert _median_length(runs, lambda run: run[1])[4] == "middle"
    turns = [SimpleNamespace(tokens=n, reply_text=str(n)) for n in (8, 46, 21, 30)]
    assert _median_length(turns, lambda turn: turn.tokens).reply_text == "21"  # the lower middle of an even count


def test_evaluate_all_systems(speech_pipeline, tmp_path):
    from es4r.evaluation.run import evaluate

    said_rows = _rows(tmp_path)[:2]
    said_rows[1]["dialogue_history"][-1]["utterance"] = ""  # no transcript: the recogniser's words, marked
    manifest = _write_manifest(tmp_path, said_rows)
    output = evaluate(speech_pipeline, manifest, list(SYSTEMS), tmp_path / "eval", bertscore_model=None)
    assert set(output.table) == set(SYSTEMS)
    rows = list(csv.DictReader(output.csv.open()))
    assert [r["system"] for r in rows] == list(SYSTEMS)
    for row in rows:
        assert 0.0 <= float(row["bleu1"]) <= 1.0 and 0.0 <= float(row["dist1"]) <= 1.0
    assert "| system |" in output.markdown.read_text()
    samples = [json.loads(line) for line in output.samples_file.read_text().splitlines()]
    from es4r.evaluation.valence import top_opening

    for name in SYSTEMS:  # the most common 4-word opening over the system's replies
        opening, share = top_opening([sample["systems"][name]["text"] for sample in samples])
        assert output.table[name]["top_opening"] == opening and output.table[name]["top_opening_share"] == share
    assert len(samples) == 2
    for sample in samples:
        assert set(sample["systems"]) == set(SYSTEMS) and sample["reference"]
        for system in sample["systems"].values():
            assert (tmp_path / "eval" / system["audio_path"]).stat().st_size > 1000
        assert (tmp_path / "eval" / sample["context"][0]["audio_path"]).exists()
    # the A/B study reads these outputs as pairs
    from es4r.study.stimuli import load_pairs

    pairs = load_pairs(tmp_path / "eval")
    assert len(pairs) == 2
    # the study shows what was said: the manifest's words, the recogniser's only where none exist
    said = pairs[0].context[-1]
    assert said.utterance == said_rows[0]["dialogue_history"][-1]["utterance"] and not said.recognised
    heard = pairs[1].context[-1]
    assert heard.recognised and heard.utterance == samples[1]["context"][-1]["utterance"]
    assert [t.utterance for t in pairs[1].context[:-1]] == [t["utterance"] for t in said_rows[1]["dialogue_history"][:-1]]


def test_speech_systems_need_a_checkpoint(tmp_path, tiny_pipeline):
    from es4r.evaluation.run import evaluate

    manifest = _write_manifest(tmp_path, _rows(tmp_path)[:1])
    with pytest.raises(ValueError, match="need a trained ES4R checkpoint"):
        evaluate(tiny_pipeline, manifest, ["es4r"], tmp_path / "eval")


class _Yardstick:
    """Stands in for es4r.user_cascade.UserCascade (whose packages CI does not install):
    records what it was asked to answer and answers in fixed times."""

    def __init__(self):
        self.asked, self.primed = [], []

    def as_after(self, history):
        self.primed.append(len(history))

    def respond(self, history, recording):
        from es4r.user_cascade import CascadeTurn

        self.asked.append((list(history), len(recording)))
        return CascadeTurn("heard", "A reply.", 10, 0.1, 0.2, 0.5, 1.0, 50.0)


def test_bench_rows(speech_pipeline, tmp_path):
    from es4r.bench import format_table, growth_check, replies_list, run_bench, write_json, yardstick_table

    yardstick = _Yardstick()
    rows = run_bench(speech_pipeline, history_lengths=(1, 2), repeats=1, user_cascade=yardstick)
    # the yardstick answered the same histories: none before turn 1, turn 1 and its reply before turn 2
    assert [len(history) for history, _ in yardstick.asked] == [0, 0, 2] and all(n > 0 for _, n in yardstick.asked)
    assert yardstick.primed == [0, 1]  # each measured turn starts where answering the turn before left it
    assert all(r.cascade_total_s == 1.0 and r.cascade_first_audio_s == 0.5 for r in rows)
    words, audio, whole = rows[1].waits(speech=True)
    assert 0 < words <= whole and 0 < audio <= whole + 1e-9
    table = yardstick_table(rows, speech=True)
    assert f"| 2 | {words:.2f} / 0.20 | {audio:.2f} / 0.50 | {whole:.2f} / 1.00 | {audio / 0.5:.2f} | {whole:.2f} |" in table
    assert table.splitlines()[-1].endswith(f" | {whole / rows[1].speech_tokens:.3f} / 0.100 |")  # per reply token
    assert [r.turns for r in rows] == [1, 2]
    for row in rows:
        assert row.es4r_s > 0 and row.cascade_s > 0 and row.ratio > 0 and row.peak_rss_mb > 0
        assert row.stages["whisper_encoder"] > 0 and row.stages["llm"] > 0 and row.stages["tts"] > 0
        assert row.speech_path_s > 0 and row.text_path_s > 0 and row.speech_tokens > 0 and row.text_tokens > 0
        assert row.path_ratio == row.speech_path_s / row.text_path_s
        assert 0 < row.speech_first_words_s <= row.speech_path_s and 0 < row.text_first_words_s <= row.text_path_s
        assert 0 < row.speech_first_audio_s <= row.speech_path_s and 0 < row.text_first_audio_s <= row.text_path_s
    assert speech_pipeline.speech_path  # measuring the text path switched nothing on the pipeline itself
    listed = replies_list(rows, speech=True)  # what each wrote, beside the times that follow its length
    assert all(r.speech_reply and r.text_reply and repr(r.speech_reply) in listed for r in rows)
    assert listed.count("cascade: 'A reply.'") == 2
    assert "| turns |" in format_table(rows) and "linear" in growth_check(rows)
    write_json(rows, tmp_path / "bench.json", {"preset": "tiny"})
    assert json.loads((tmp_path / "bench.json").read_text())["rows"][1]["turns"] == 2
