"""The ship-gate measures on constructed inputs: each can fail."""

import numpy as np
import pytest
import torch

from es4r.data.manifest import HistoryTurn, Sample
from es4r.evaluation.gates import (
    affect_test, along_teacher_axis, between_dialogue_cosine, binomial_p, centred_spread, direction_test,
    group_by_conversation, metric_rows,
)


def _sample(cid: str, variant: str | None) -> Sample:
    return Sample(cid, 1, (HistoryTurn(0, "speaker", "hello", None),), f"reply {cid} {variant}", variant=variant)


def test_held_out_rows_group_by_conversation_and_variants_take_turns():
    samples = [_sample(c, v) for c in ("a", "b", "c", "d") for v in ("falling", "rising", "flat")]
    groups = group_by_conversation(samples)
    assert list(groups) == ["a", "b", "c", "d"] and set(groups["a"]) == {"falling", "rising", "flat"}
    assert [s.variant for s in metric_rows(groups)] == ["falling", "rising", "flat", "falling"]
    with pytest.raises(ValueError, match="lack one of the variants"):
        group_by_conversation(samples[:-1])


def test_speech_vector_measures_tell_a_constant_prompt_from_varied_input():
    torch.manual_seed(0)
    varied = [torch.randn(6, 16) + 3.0 for _ in range(8)]  # a shared offset, as the adapter's LayerNorm bias gives
    constant = [torch.ones(6, 16) * 3.0 + 0.01 * torch.randn(6, 16) for _ in range(8)]
    assert between_dialogue_cosine(constant) > 0.99 and between_dialogue_cosine(varied) < 0.99
    assert centred_spread(constant) < 0.01 < centred_spread(varied)


def test_affect_test_counts_differences_and_which_teacher_each_reply_is_closer_to():
    teacher_falling = ["I'm so sorry you feel tired and sad today.", "That sounds exhausting, I'm sorry."]
    teacher_rising = ["That's wonderful, I'm so glad you're excited!", "How exciting, congratulations!"]
    matched = affect_test(["I'm sorry you are so tired.", "I'm sorry, that sounds exhausting."],
                          ["I'm so glad, that's wonderful!", "Congratulations, how exciting!"],
                          teacher_falling, teacher_rising)
    assert matched["differ"] == 2 and matched["closer"] == 2 and matched["closer_share"] == 1.0
    swapped = affect_test(["I'm so glad, that's wonderful!", "Congratulations, how exciting!"],
                          ["I'm sorry you are so tired.", "I'm sorry, that sounds exhausting."],
                          teacher_falling, teacher_rising)
    assert swapped["differ"] == 2 and swapped["closer"] == 0
    same = affect_test(["I hear you."] * 2, ["I hear you."] * 2, teacher_falling, teacher_rising)
    assert same["differ"] == 0 and same["closer_share"] == 0.0 and same["teacher_differ"] == 2
    prompt = "You are a warm, empathetic listener. Reply to the user in one or two short sentences."
    recited = ["You're a warm, empathetic listener. Reply to the user kindly.", teacher_falling[1]]
    judged = affect_test(["I'm so glad, that's wonderful!", "I'm sorry, that sounds exhausting."],
                         ["I'm sorry you are so tired.", "Congratulations, how exciting!"],
                         recited, teacher_rising, prompt)
    assert judged["differ"] == 2 and judged["broken_references"] == 1  # a recited prompt is no reference
    assert judged["closer"] == 1 and judged["closer_share"] == 1.0
    # the gate: with two conversations each one's axis is the other's teacher difference
    assert matched["direction"]["ordered"] == 2 and swapped["direction"]["ordered"] == 0
    assert same["direction"]["ordered"] == 0 and same["direction"]["mean_gap"] == 0.0
    assert matched["teacher_direction"]["ordered"] == 2
    assert judged["direction"]["judged"] == 1  # the recited reference is set aside here too


def test_binomial_p_is_the_chance_a_coin_orders_as_many():
    assert binomial_p(0, 10) == 1.0 and binomial_p(10, 10) == 2 ** -10 and binomial_p(0, 0) == 1.0
    assert abs(binomial_p(27, 38) - 0.0073) < 0.0005  # assets/REPLY_TUNING.md's held-out figure
    assert all(binomial_p(k, 40) > binomial_p(k + 1, 40) for k in range(40))


def _unit(x: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(x, dim=-1).numpy()


def test_the_axis_is_the_other_conversations_teacher_difference_and_identical_replies_never_order():
    torch.manual_seed(0)
    n, d = 12, 32
    shift = torch.zeros(d)
    shift[0] = 2.0  # "rising" replies lean along the first dimension
    base = torch.randn(n, d)
    teacher = np.stack([_unit(base - shift + 0.3 * torch.randn(n, d)), _unit(base + shift + 0.3 * torch.randn(n, d))], 1)
    student_base = torch.randn(n, d)
    hearing = np.stack([_unit(student_base - shift), _unit(student_base + shift)], 1)
    deaf = np.stack([_unit(student_base), _unit(student_base)], 1)
    assert direction_test(hearing, teacher)["ordered"] == n and direction_test(hearing, teacher)["p"] < 0.05
    assert direction_test(deaf, teacher)["ordered"] == 0 and direction_test(deaf, teacher)["p"] == 1.0
    assert direction_test(hearing[:, ::-1], teacher)["ordered"] == 0  # falling and rising swapped
    # a conversation's own references never set its axis: changing them leaves its own value alone
    other = teacher.copy()
    other[3] = other[3, ::-1]
    assert np.allclose(along_teacher_axis(hearing, teacher)[3], along_teacher_axis(hearing, other)[3])
    assert not np.allclose(along_teacher_axis(hearing, teacher)[4], along_teacher_axis(hearing, other)[4])


def test_replies_that_ignore_the_affect_order_about_half_the_time():
    torch.manual_seed(1)
    n, d = 400, 32
    shift = torch.zeros(d)
    shift[0] = 2.0
    base = torch.randn(n, d)
    teacher = np.stack([_unit(base - shift), _unit(base + shift)], 1)
    noise = np.stack([_unit(torch.randn(n, d)), _unit(torch.randn(n, d))], 1)  # different, unrelated to the affect
    share = direction_test(noise, teacher)["share"]
    assert 0.42 < share < 0.58 and direction_test(noise[:40], teacher[:40])["p"] > 0.01


def test_teacher_replies_that_recite_the_prompt_are_rejected():
    from es4r.config import GenerationConfig
    from es4r.data.teacher import echoes_prompt

    prompt = GenerationConfig().system_prompt
    assert echoes_prompt("You're a warm, empathetic listener. Reply to the user in one or two sentences: hi", prompt)
    assert not echoes_prompt("I'm so sorry to hear that. Would you like to talk about what happened?", prompt)
    assert not echoes_prompt("That sounds exciting! Where would you travel first?", prompt)


def test_a_regenerated_teacher_reply_cannot_recite_the_prompt(tiny_model, monkeypatch):
    from es4r.config import GenerationConfig
    from es4r.data.teacher import hinted_replies, prompt_ban

    tokenizer, prompt = tiny_model.tokenizer, GenerationConfig().system_prompt
    ban = {tuple(window) for window in prompt_ban(tokenizer, prompt)}

    def windows(text: str) -> set[tuple[int, ...]]:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        return {tuple(ids[i : i + 3]) for i in range(len(ids) - 2)}

    assert windows("You're a warm, empathetic listener. Reply to the user") & ban  # recited, contracted
    assert windows("I'm just a warm, empathetic listener.") & ban  # recited mid-sentence
    assert not windows("I'm so sorry to hear that. Would you like to talk about it?") & ban
    seen = {}
    generate = tiny_model.llm.generate
    monkeypatch.setattr(tiny_model.llm, "generate", lambda **kw: seen.update(kw) or generate(**kw))
    hinted_replies(tiny_model, [_sample("c1", "falling")], ban_prompt=True)
    assert {tuple(window) for window in seen["bad_words_ids"]} == ban
    seen.clear()
    hinted_replies(tiny_model, [_sample("c1", "falling")])
    assert seen and "bad_words_ids" not in seen  # the teacher of a first pass decodes as the app does


def test_gate_report_shows_each_systems_most_common_opening():
    """The 25 % opening rule (issue: replies people accept) is read off the same 40 held-out
    replies as the gates: each system's row names its most common four-word opening and share."""
    from es4r.evaluation.gates import GateReport, report_markdown
    from es4r.evaluation.valence import top_opening

    replies = ["I'm so glad you're well.", "I'm so glad you're here!", "That sounds hard.", "Tell me more."]
    opening, share = top_opening(replies)
    assert (opening, share) == ("i'm so glad you're", 0.5)
    metrics = {"bleu1": 0.3, "rougeL": 0.3, "bertscore": 0.6, "dist2": 0.7, "distinct": 4,
               "top_opening": opening, "top_opening_share": share}
    report = GateReport(systems={"text": metrics}, references=["a", "b", "c", "d"],
                        gates={"distinct_replies": {"value": 4, "threshold": 3, "passed": True}})
    text = report_markdown(report, "ckpt")
    assert "| text |" in text and "50% \"i'm so glad you're\"" in text and "**PASSED**" in text


def test_frozen_references_replace_the_replies_and_refuse_another_corpus(tmp_path):
    import json

    from es4r.data.manifest import ManifestError
    from es4r.evaluation.references import apply_references, export_references

    rows = [{"conversation_id": c, "turn_id": 1, "variant": v, "response": {"utterance": f"frozen {c} {v}"},
             "teacher": {"llm": "x"}} for c in ("a", "b") for v in ("falling", "rising")]
    manifest = tmp_path / "teacher.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    frozen = tmp_path / "references.jsonl"
    assert export_references(manifest, frozen) == 4
    samples = [_sample(c, v) for c in ("a", "b") for v in ("falling", "rising")]
    judged = apply_references(samples, frozen)
    assert [s.response for s in judged] == [f"frozen {c} {v}" for c in ("a", "b") for v in ("falling", "rising")]
    assert [s.history for s in judged] == [s.history for s in samples]
    with pytest.raises(ManifestError, match="1 of its rows have no reference"):
        apply_references(samples + [_sample("c", "falling")], frozen)
    with pytest.raises(ManifestError, match="2 references have no row"):
        apply_references(samples[:2], frozen)


def test_the_frozen_reference_files_hold_two_disjoint_sets_of_forty_conversations():
    """The issue's 40 held-out conversations and the 40 fresh ones, three variants each, with no
    conversation in both: the fresh check is out of sample only if that holds."""
    import json
    from collections import Counter
    from pathlib import Path

    assets, sets = Path(__file__).resolve().parents[1] / "assets", {}
    for name in ("heldout", "fresh"):
        rows = [json.loads(line) for line in (assets / f"{name}_references.jsonl").read_text().splitlines()]
        assert all(row["reply"].strip() for row in rows)
        variants = Counter(row["conversation_id"] for row in rows)
        assert len(variants) == 40 and set(variants.values()) == {3}
        assert {row["variant"] for row in rows} == {"falling", "rising", "flat"}
        sets[name] = set(variants)
    assert not sets["heldout"] & sets["fresh"]


def test_gate_report_runs_the_reply_checker_with_loss_read_from_the_persons_words():
    """Held-out corpus rows carry no labels: condolence is judged against what the person said
    (flagged after a complaint about work, not after a death), and the table shows it."""
    import torch

    from es4r.evaluation.gates import GateReport, reply_checks, report_markdown

    def row(cid: str, said: str) -> Sample:
        return Sample(cid, 1, (HistoryTurn(0, "speaker", said, None),), "ref", variant="flat")

    def encoder(texts):  # every text the same unit vector: relevance 1, nothing "ignores the situation"
        return torch.nn.functional.normalize(torch.ones(len(texts), 4), dim=-1)

    rows = [row("a", "Work has been crushing me this week."), row("b", "My dad died on Sunday.")]
    sorry = ["I'm sorry for your loss.", "I'm sorry for your loss."]
    checks = reply_checks(sorry, rows, "You are a listener.", encoder)
    assert checks["flagged"] == 1 and checks["by_failure"] == {"condolence_without_loss": 1}
    assert checks["examples"][0]["reply"] == sorry[0]
    fine = reply_checks(["That sounds like a draining week.", "I'm so sorry about your dad."], rows,
                        "You are a listener.", encoder)
    assert fine["flagged"] == 0 and fine["top_opening_share"] == 0.5
    text = report_markdown(GateReport(checks={"trained": checks}), "ckpt")
    assert "| trained | 1/2 (50%) | condolence_without_loss 1 |" in text
