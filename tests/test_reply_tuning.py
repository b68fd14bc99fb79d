"""Reply tuning on the tiny random LLM: the examples are laid out as the app prompts, only the
reply is learnt, and the adapter it writes changes what the loaded LLM computes — and only when
it is named."""

import json

import pytest
import torch

from es4r.config import GenerationConfig, ReplyTuningConfig
from es4r.data.empathy_corpus import Dialogue, ReplyExample, reply_examples
from es4r.modeling.backbones import BackboneError, load_llm
from es4r.modeling.model import prompt_parts
from es4r.presets import resolve_config
from es4r.training.reply_tuning import IGNORE_INDEX, encode_example, tune_replies

PROMPT = GenerationConfig().system_prompt
DIALOGUES = [
    Dialogue(f"d{i}-1", f"d{i}", "k", (("user", f"my exam {i} went badly"), ("assistant", "That stings. What happened?"),
                                        ("user", "I froze on the first question"), ("assistant", "Freezing is awful.")))
    for i in range(6)
]


@pytest.fixture(scope="module")
def tiny_llm():
    return resolve_config("tiny").backbones.llm


def test_an_example_is_the_apps_prompt_then_the_reply_and_only_the_reply_is_learnt(tiny_llm):
    tokenizer = load_llm(tiny_llm, "cpu", "float32").tokenizer
    example = reply_examples(DIALOGUES[:1])[1]
    ids, labels = encode_example(tokenizer, example, PROMPT)
    parts = prompt_parts(tokenizer, example.history, PROMPT)
    prompt = parts.prefix_ids + parts.history_ids + parts.suffix_ids
    reply = tokenizer(example.reply, add_special_tokens=False).input_ids
    assert ids == prompt + reply + [tokenizer.eos_token_id]
    assert labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt) and labels[len(prompt):] == reply + [tokenizer.eos_token_id]
    assert len(example.history) == 3 and example.history[-1] == ("user", "I froze on the first question")


def test_tuning_writes_an_adapter_that_changes_the_llm_only_when_named(tiny_llm, tmp_path):
    config = ReplyTuningConfig(epochs=1, batch_size=4, lr=1e-2, heldout_situations=2, first_layer=0)
    out = tune_replies(tiny_llm, tmp_path / "adapter", config, dialogues=DIALOGUES)
    record = json.loads((out / "reply_tuning.json").read_text())
    assert record["corpus"]["train_examples"] == 8 and record["corpus"]["heldout_examples"] == 4
    assert record["epochs"][0]["heldout_loss"] < record["heldout_loss_before"]  # it learnt the held-out replies' words
    assert "/" not in json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]

    plain = load_llm(tiny_llm, "cpu", "float32").model
    tuned = load_llm(tiny_llm, "cpu", "float32", reply_adapter=str(out)).model
    again = load_llm(tiny_llm, "cpu", "float32").model
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        a, b, c = (m(input_ids=ids).logits for m in (plain, tuned, again))
    assert not torch.allclose(a, b, atol=1e-4) and torch.equal(a, c)
    assert type(tuned) is type(plain)  # the same model class, its tuned layers TunedLinear

    from safetensors.torch import load_file

    from es4r.training.reply_tuning import ship_adapter

    shipped = ship_adapter(out, tmp_path / "shipped")
    assert {v.dtype for v in load_file(str(shipped / "adapter_model.safetensors")).values()} == {torch.float16}
    assert (shipped / "reply_tuning.json").is_file() and not (shipped / "README.md").exists()
    with torch.no_grad():
        d = load_llm(tiny_llm, "cpu", "float32", reply_adapter=str(shipped)).model(input_ids=ids).logits
    assert torch.allclose(d, b, atol=1e-2 * float(b.abs().max())) and not torch.allclose(d, a, atol=1e-4)


def test_a_folder_without_an_adapter_is_refused(tiny_llm, tmp_path):
    with pytest.raises(BackboneError, match="not a LoRA folder"):
        load_llm(tiny_llm, "cpu", "float32", reply_adapter=str(tmp_path))


def test_the_embedded_preset_takes_the_shipped_adapter_unless_told_none(monkeypatch, tmp_path):
    from es4r import presets

    monkeypatch.setattr(presets, "SHIPPED_REPLY_ADAPTER", tmp_path)
    monkeypatch.delenv(presets.REPLY_ADAPTER_ENV, raising=False)
    assert resolve_config("embedded").backbones.reply_adapter is None  # nothing shipped there
    (tmp_path / "adapter_config.json").write_text("{}")
    assert resolve_config("embedded").backbones.reply_adapter == str(tmp_path)
    assert resolve_config("embedded", reply_adapter="none").backbones.reply_adapter is None
    monkeypatch.setenv(presets.REPLY_ADAPTER_ENV, "none")
    assert resolve_config("embedded").backbones.reply_adapter is None
    assert resolve_config("tiny").backbones.reply_adapter is None


def test_the_page_says_when_the_llm_is_reply_tuned(tmp_path):
    from dataclasses import replace

    from es4r.presets import component_statuses

    class Voice:
        status, name = "fallback", "test voice"

    config = resolve_config("tiny")
    plain = component_statuses(config, Voice())["llm"].description
    tuned = component_statuses(replace(config, backbones=replace(config.backbones, reply_adapter=str(tmp_path / "reply_lora"))),
                               Voice())["llm"].description
    assert "reply-tuned" not in plain and "reply-tuned with local folder reply_lora" in tuned and str(tmp_path) not in tuned


def _affect_file(folder, rows):
    (folder / "affect_x.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_replies_written_for_how_the_person_sounds_join_their_turn_with_the_same_history(tmp_path):
    from es4r.data.empathy_corpus import CorpusError, load_affect_replies

    rows = [{"id": "d0-1", "turn": 3, "falling": "Freezing takes it out of you.", "rising": "Froze? Then what!"},
            {"id": "gone-1", "turn": 1, "falling": "a", "rising": "b"}]  # a dialogue left out of training
    replies = load_affect_replies(DIALOGUES, _affect_file(tmp_path, rows))
    assert replies == {("d0-1", 3): {"falling": "Freezing takes it out of you.", "rising": "Froze? Then what!"}}
    examples = reply_examples(DIALOGUES, replies)
    plain = reply_examples(DIALOGUES)
    assert [e for e in examples if e.affect is None] == plain  # the written replies are all still there
    added = [e for e in examples if e.affect is not None]
    assert [(e.dialogue, e.affect, e.reply) for e in added] == [("d0-1", "falling", "Freezing takes it out of you."),
                                                                ("d0-1", "rising", "Froze? Then what!")]
    assert all(e.history == DIALOGUES[0].turns[:3] for e in added)
    for bad in ({"id": "d0-1", "turn": 2, "falling": "x", "rising": "y"},  # a user turn
                {"id": "d0-1", "turn": 3, "falling": "x"},  # one affect missing
                {"id": "d0-1", "turn": 9, "falling": "x", "rising": "y"}):
        with pytest.raises(CorpusError, match="affect_x.jsonl line 1"):
            load_affect_replies(DIALOGUES, _affect_file(tmp_path, [bad]))
    with pytest.raises(CorpusError, match="second line"):
        load_affect_replies(DIALOGUES, _affect_file(tmp_path, [rows[0], rows[0]]))


def test_the_note_decides_between_replies_only_with_affect_replies():
    """A reply written for a voice always closes with that voice's note; with `affect_replies`
    the others get only the calm note (or none); without, any note (run 2's recipe); the
    held-out loss reads the written replies with no note."""
    import random

    from es4r.modeling.affect_reader import AFFECT_NOTES
    from es4r.training.reply_tuning import example_note

    plain = ReplyExample("d0-1", DIALOGUES[0].turns[:3], "Freezing is awful.")
    for affect in ("falling", "rising"):
        written = ReplyExample("d0-1", plain.history, "x", affect)
        for config in (ReplyTuningConfig(), ReplyTuningConfig(note_share=1.0, affect_replies=True)):
            assert example_note(written, config, random.Random(0)) == AFFECT_NOTES[affect]
            assert example_note(written, config, None) == AFFECT_NOTES[affect]
    tuned = ReplyTuningConfig(note_share=0.5, affect_replies=True)
    draw = random.Random(1)
    notes = [example_note(plain, tuned, draw) for _ in range(400)]
    assert set(notes) == {None, AFFECT_NOTES["flat"]} and 150 < notes.count(None) < 250
    old = ReplyTuningConfig(note_share=1.0)
    assert {example_note(plain, old, random.Random(k)) for k in range(60)} == set(AFFECT_NOTES.values())
    assert example_note(plain, tuned, None) is None and example_note(plain, ReplyTuningConfig(), random.Random(0)) is None
