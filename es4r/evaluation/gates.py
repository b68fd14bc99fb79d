"""Ship gates for a trained ES4R checkpoint, rerunnable by anyone (`python -m es4r gates`).

A checkpoint becomes the embedded default only when, on the held-out spoken corpus
(falling / rising / flat variants of each conversation, teacher replies as references;
see assets/DATA_CARD.md):

1. its speech path gives distinct replies (>= 38 of 40 conversations): no constant prompt;
2. BLEU-1, ROUGE-L and BERTScore each >= the text path's minus 0.01;
3. its speech vectors still depend on the input: the between-dialogue cosine of the
   adapter's mean vectors stays within 0.05 of the untrained modules' (a constant soft
   prompt shows as ~1.0; see `between_dialogue_cosine`);
4. it hears affect: each conversation rendered falling vs rising (same words) gets different
   replies in >= 30 of 40, and its replies move the way the teacher's do: along the axis from
   the teacher's falling to its rising replies (MiniLM, made from the *other* conversations'
   references), the rising reply lies further than the falling one in >= 60 % of the
   conversations, with a one-sided binomial p < 0.05 against a coin (`direction_test`). A deaf
   system fails it: identical replies never order, replies that ignore the affect order half
   the time. The untrained and `no_note` systems are measured the same way beside it.
   (Until 2026-12-07 the second half asked each reply to be nearer its own variant's teacher
   reply than the other's — `closer_share`, still reported: a test of replication that the
   teacher passes by writing the same words again and a student writing other content fails
   whatever its affect does; see assets/REPLY_TUNING.md.)

Replies are generated from the manifest transcripts (ASR errors are not what is measured)
with the app's decoding. Before training, `corpus_checks` reports whether the corpus holds
the signal at all: do the hinted teacher's replies differ across variants, and does a
linear probe read per-turn energy and pace off the frozen Whisper encoder (R^2)."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from es4r.data.manifest import PreparedSample, Sample, prepare_sample
from es4r.modeling.model import LOG_MEL_FLOOR_BELOW_MAX, ES4RModel
from es4r.reply_text import trim_reply

logger = logging.getLogger(__name__)

VARIANTS = ("falling", "rising", "flat")


@dataclass(frozen=True)
class Thresholds:
    distinct_min: int = 38
    metric_margin: float = 0.01
    cosine_margin: float = 0.05
    affect_differ_min: int = 30
    affect_direction_share: float = 0.6
    affect_direction_p: float = 0.05


@dataclass
class GateReport:
    systems: dict[str, dict] = field(default_factory=dict)  # system -> metrics
    replies: dict[str, list[str]] = field(default_factory=dict)  # system -> replies on the metric rows
    references: list[str] = field(default_factory=list)
    affect: dict = field(default_factory=dict)
    diversity: dict[str, float] = field(default_factory=dict)
    checks: dict[str, dict] = field(default_factory=dict)  # system -> reply checks (es4r/evaluation/reply_checks.py)
    gates: dict[str, dict] = field(default_factory=dict)  # name -> {passed, value, threshold}

    @property
    def passed(self) -> bool:
        return bool(self.gates) and all(g["passed"] for g in self.gates.values())


def group_by_conversation(samples: list[Sample]) -> dict[str, dict[str, Sample]]:
    """conversation id -> variant -> sample, in manifest order; every variant must be present."""
    groups: dict[str, dict[str, Sample]] = defaultdict(dict)
    for sample in samples:
        groups[sample.conversation_id][sample.variant or "flat"] = sample
    incomplete = [cid for cid, variants in groups.items() if set(variants) != set(VARIANTS)]
    if incomplete:
        raise ValueError(f"{len(incomplete)} held-out conversation(s) lack one of the variants {VARIANTS} "
                         f"(e.g. {incomplete[0]}); build the corpus with `python -m es4r corpus`")
    return dict(groups)


def metric_rows(groups: dict[str, dict[str, Sample]]) -> list[Sample]:
    """One row per conversation for the text metrics, the variants taken in turn (balanced)."""
    return [variants[VARIANTS[k % 3]] for k, variants in enumerate(groups.values())]


@torch.no_grad()
def speech_reply(model: ES4RModel, item: PreparedSample) -> tuple[str, torch.Tensor]:
    """The speech path's reply and the adapter's speech vectors (S, W) of one sample."""
    generated, encoding = model.generate(item.sample.history_turns(), item.features)
    vectors = encoding.embeddings[0, : int(encoding.lengths[0])].float().cpu()
    return trim_reply(generated.text, model.config.generation.max_sentences), vectors


@torch.no_grad()
def text_reply(model: ES4RModel, sample: Sample) -> str:
    generated, _ = model.generate(sample.history_turns(), None)
    return trim_reply(generated.text, model.config.generation.max_sentences)


def between_dialogue_cosine(vectors: list[torch.Tensor]) -> float:
    """Mean cosine between the dialogues' mean speech vectors (1.0 = one constant prompt).
    Not mean-centred on purpose: centred dialogue means sum to zero, so their mean pairwise
    cosine is about -1/(n-1) whatever the model does."""
    means = torch.nn.functional.normalize(torch.stack([v.mean(0) for v in vectors]), dim=-1)
    cos = means @ means.T
    n = cos.shape[0]
    return float((cos.sum() - cos.diagonal().sum()) / (n * (n - 1)))


def centred_spread(vectors: list[torch.Tensor]) -> float:
    """How far the dialogues' mean vectors sit from their average, relative to their size:
    a scale-free companion of the cosine (0 = a constant prompt)."""
    means = torch.stack([v.mean(0) for v in vectors])
    return float((means - means.mean(0)).norm(dim=-1).mean() / means.norm(dim=-1).mean())


def binomial_p(hits: int, n: int) -> float:
    """One-sided P(X >= hits) for X ~ Binomial(n, 1/2): how often a coin orders as many."""
    from math import comb

    return sum(comb(n, k) for k in range(hits, n + 1)) / 2 ** n if n else 1.0


def along_teacher_axis(pairs: np.ndarray, teacher: np.ndarray) -> np.ndarray:
    """Per conversation, how much further the rising reply of `pairs` lies than its falling one
    along the teacher's falling -> rising axis: the mean of the *other* conversations' teacher
    (rising - falling) differences, so a conversation's own references never set its axis.
    `pairs`, `teacher`: (n, 2, d) unit sentence vectors, falling then rising. 0 for identical replies."""
    differences = teacher[:, 1] - teacher[:, 0]
    axes = (differences.sum(0, keepdims=True) - differences) / max(len(teacher) - 1, 1)
    return ((pairs[:, 1] - pairs[:, 0]) * axes).sum(-1)


def direction_test(pairs: np.ndarray, teacher: np.ndarray) -> dict:
    """Gate 4's second half on (n, 2, d) reply vectors: in how many conversations the rising
    reply lies further along the teacher's axis (`along_teacher_axis`) than the falling one, the
    share and its binomial p."""
    along = along_teacher_axis(pairs, teacher)
    ordered = int((along > 0).sum())
    return {"ordered": ordered, "judged": len(along), "share": ordered / len(along) if len(along) else 0.0,
            "p": binomial_p(ordered, len(along)), "mean_gap": float(along.mean()) if len(along) else 0.0}


def affect_vectors(falling: list[str], rising: list[str]) -> np.ndarray:
    """(n, 2, d) unit MiniLM vectors of each conversation's falling and rising reply."""
    from es4r.evaluation.metrics import sentence_embeddings

    return sentence_embeddings([t for pair in zip(falling, rising) for t in pair]).reshape(len(falling), 2, -1)


def affect_test(falling: list[str], rising: list[str], teacher_falling: list[str], teacher_rising: list[str],
                system_prompt: str | None = None) -> dict:
    """Gate 4 on replies to the same conversations rendered falling vs rising. With the
    `system_prompt`, a pair whose teacher reply recites it (es4r.data.teacher.echoes_prompt: the
    small LLM's failure, not a reply) has no reference: it is counted in `differ` but set aside
    from `direction` and `closer_share` and reported as `broken_references`. `direction`: the
    gate (`direction_test`), and `teacher_direction` the teacher's own pairs measured the same
    way — what a student can reach."""
    from es4r.data.teacher import echoes_prompt
    from es4r.evaluation.metrics import sentence_embeddings

    differ = [i for i, (a, b) in enumerate(zip(falling, rising)) if a.strip() != b.strip()]
    recited = {i for i in range(len(falling)) if system_prompt and (
        echoes_prompt(teacher_falling[i], system_prompt) or echoes_prompt(teacher_rising[i], system_prompt))}
    broken = [i for i in differ if i in recited]
    judged = [i for i in differ if i not in broken]
    closer, pairs = [], []
    if judged:
        texts = [t for i in judged for t in (falling[i], rising[i], teacher_falling[i], teacher_rising[i])]
        vectors = sentence_embeddings(texts).reshape(len(judged), 4, -1)
        for i, (f, r, tf, tr) in zip(judged, vectors):
            closer.append(bool(f @ tf > f @ tr and r @ tr > r @ tf))
            pairs.append({"falling": falling[i], "rising": rising[i], "teacher_falling": teacher_falling[i],
                          "teacher_rising": teacher_rising[i], "closer": closer[-1],
                          "falling_to_own": float(f @ tf), "falling_to_other": float(f @ tr),
                          "rising_to_own": float(r @ tr), "rising_to_other": float(r @ tf)})
    usable = [i for i in range(len(falling)) if i not in recited]
    own = affect_vectors([falling[i] for i in usable], [rising[i] for i in usable])
    teacher = affect_vectors([teacher_falling[i] for i in usable], [teacher_rising[i] for i in usable])
    return {"conversations": len(falling), "differ": len(differ), "broken_references": len(broken),
            "direction": direction_test(own, teacher), "teacher_direction": direction_test(teacher, teacher),
            "closer": int(sum(closer)),
            "closer_share": (sum(closer) / len(closer)) if closer else 0.0,
            "teacher_differ": sum(a.strip() != b.strip() for a, b in zip(teacher_falling, teacher_rising)),
            "pairs": pairs}


def corpus_checks(model: ES4RModel, samples: list[Sample]) -> dict:
    """Before training: (a) how often the hinted teacher replies (the manifest responses)
    differ across the three variants of a conversation; (b) linear probes (ridge, 5-fold
    cross-validation grouped by conversation) of per-turn log energy and speaking rate from
    the frozen Whisper encoder's time-averaged output of each speaker turn."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import GroupKFold, cross_val_predict

    groups = group_by_conversation(samples)
    all_differ = sum(len({v[x].response for x in VARIANTS}) == 3 for v in groups.values())
    falling_rising = sum(v["falling"].response != v["rising"].response for v in groups.values())
    features, energy, rate, owner = [], [], [], []
    encoder = model.whisper.model.get_encoder()
    for cid, variants in groups.items():
        for variant in VARIANTS:
            item = prepare_sample(variants[variant], model.whisper.n_mels)
            speaker = [(t, f) for t, f in zip(item.sample.history, item.features) if t.role == "speaker"]
            for (turn, mel), turn_energy in zip(speaker, item.energies):
                features.append(_encoder_mean(encoder, mel, model.max_frames))
                energy.append(np.log(turn_energy))
                rate.append(mel.shape[1] / max(len(turn.utterance), 1))  # frames (10 ms) per character
                owner.append(cid)
    x = np.stack(features)
    probes = {}
    for name, target in (("log_energy", np.array(energy)), ("frames_per_char", np.array(rate))):
        predicted = cross_val_predict(RidgeCV(alphas=np.logspace(-2, 4, 13)), x, target, groups=owner,
                                      cv=GroupKFold(n_splits=5))
        residual = ((target - predicted) ** 2).sum()
        probes[name] = 1.0 - residual / ((target - target.mean()) ** 2).sum()
    return {"conversations": len(groups), "teacher_all_three_differ": all_differ,
            "teacher_falling_vs_rising_differ": falling_rising, "probe_turns": len(energy),
            "probe_r2": {k: round(float(v), 3) for k, v in probes.items()}}


@torch.no_grad()
def _encoder_mean(encoder, mel: torch.Tensor, window: int) -> np.ndarray:
    """The frozen encoder's output over one turn (padded as ES4RModel pads), averaged over time."""
    frames = min(mel.shape[1], window)
    padded = torch.full((mel.shape[0], window), float(mel[:, :frames].max()) - LOG_MEL_FLOOR_BELOW_MAX)
    padded[:, :frames] = mel[:, :frames]
    dtype = next(encoder.parameters()).dtype
    hidden = encoder(padded[None].to(dtype)).last_hidden_state[0]
    return hidden[: -(-frames // 2)].float().mean(0).numpy()


def evaluate_gates(model: ES4RModel, checkpoint: str, samples: list[Sample],
                   thresholds: Thresholds = Thresholds(), bertscore_model: str | None = "auto") -> GateReport:
    """Replies of every system on the held-out rows, the metrics, and the four gates.
    `model` must hold the untrained ES4R parts; the checkpoint is loaded into it half-way."""

    from es4r.evaluation.metrics import SentenceEncoder, corpus_metrics
    from es4r.evaluation.valence import top_opening
    from es4r.systems import cascade_reply, variant_config
    from es4r.training.checkpoint import load_es4r_parts

    groups = group_by_conversation(samples)
    rows = metric_rows(groups)
    prepared = {id(s): prepare_sample(s, model.whisper.n_mels) for s in rows}
    report = GateReport(references=[s.response for s in rows])
    vectors: dict[str, list[torch.Tensor]] = {}

    def speech_system(name: str, system: ES4RModel = model) -> None:
        replies, vecs = zip(*(speech_reply(system, prepared[id(s)]) for s in rows))
        report.replies[name], vectors[name] = list(replies), list(vecs)
        logger.info("%s: %d replies", name, len(replies))

    def variant_replies(name: str, system: ES4RModel) -> tuple[list[str], list[str]]:
        """Falling and rising replies of every conversation (the metric rows' reused)."""
        known = dict(zip((id(s) for s in rows), report.replies[name]))
        falling, rising = [], []
        for variants in groups.values():
            for variant, out in (("falling", falling), ("rising", rising)):
                sample = variants[variant]
                out.append(known.get(id(sample)) or speech_reply(system, prepare_sample(sample, model.whisper.n_mels))[0])
        return falling, rising

    teacher = ([v["falling"].response for v in groups.values()], [v["rising"].response for v in groups.values()])
    prompt = model.config.generation.system_prompt

    def counterpart(name: str, system: ES4RModel) -> dict:
        """The affect test of a system that should not pass it (the gate's counterpart)."""
        result = affect_test(*variant_replies(name, system), *teacher, prompt)
        return {"differ": result["differ"], "direction": result["direction"]}

    model.eval()
    speech_system("untrained")
    counterparts = {"untrained": counterpart("untrained", model)}  # before the checkpoint is loaded into it
    report.replies["text"] = [text_reply(model, s) for s in rows]
    report.replies["cascade"] = [cascade_reply(model, model.config.generation, s.history_turns())[0] for s in rows]
    load_es4r_parts(model, checkpoint)
    speech_system("trained")
    ablations = {name: model.with_config(variant_config(model.config, name)) for name in ("no_dual", "no_cross", "no_note")}
    for name, system in ablations.items():
        speech_system(name, system)
    counterparts["no_note"] = counterpart("no_note", ablations["no_note"])

    for name, replies in report.replies.items():
        metrics = corpus_metrics(replies, report.references, bertscore_model=bertscore_model).as_dict()
        report.systems[name] = {k: metrics.get(k) for k in ("bleu1", "rougeL", "bertscore", "dist2")}
        report.systems[name]["distinct"] = len({r.strip().lower() for r in replies})
        report.systems[name]["top_opening"], report.systems[name]["top_opening_share"] = top_opening(replies)
    encoder = SentenceEncoder()
    report.checks = {name: reply_checks(replies, rows, model.config.generation.system_prompt, encoder)
                     for name, replies in report.replies.items()}
    report.diversity = {f"{name}_{kind}": fn(vecs) for name, vecs in vectors.items()
                        for kind, fn in (("cos_between", between_dialogue_cosine), ("spread", centred_spread))}

    falling, rising = variant_replies("trained", model)
    report.affect = affect_test(falling, rising, *teacher, prompt)
    report.affect["counterparts"] = counterparts
    report.affect["examples"] = [{"falling": f, "rising": r} for f, r in list(zip(falling, rising))[:5]]
    report.affect.update(reader_accuracy(model, samples))
    report.affect["one_way"] = {  # each direction alone, for the report (the gate needs both)
        "falling_closer_to_own": sum(p["falling_to_own"] > p["falling_to_other"] for p in report.affect["pairs"]),
        "rising_closer_to_own": sum(p["rising_to_own"] > p["rising_to_other"] for p in report.affect["pairs"])}

    t, text = report.systems["trained"], report.systems["text"]
    direction = report.affect["direction"]
    report.gates = {
        "distinct_replies": _gate(t["distinct"], thresholds.distinct_min, t["distinct"] >= thresholds.distinct_min),
        **{f"{m}_vs_text": _gate(t[m], text[m] - thresholds.metric_margin, t[m] >= text[m] - thresholds.metric_margin)
           for m in ("bleu1", "rougeL", "bertscore")},
        "speech_cosine": _gate(report.diversity["trained_cos_between"],
                               report.diversity["untrained_cos_between"] + thresholds.cosine_margin,
                               abs(report.diversity["trained_cos_between"] - report.diversity["untrained_cos_between"])
                               <= thresholds.cosine_margin),
        "affect_differ": _gate(report.affect["differ"], thresholds.affect_differ_min,
                               report.affect["differ"] >= thresholds.affect_differ_min),
        "affect_direction": {**_gate(round(direction["share"], 3), thresholds.affect_direction_share,
                                     direction["share"] >= thresholds.affect_direction_share
                                     and direction["p"] < thresholds.affect_direction_p),
                             "p": round(direction["p"], 4), "p_threshold": thresholds.affect_direction_p},
    }
    return report


def reply_checks(replies: list[str], rows: list[Sample], system_prompt: str, encoder) -> dict:
    """The situations set's checker (es4r/evaluation/reply_checks.py) on one system's held-out
    replies. Corpus conversations carry no labels: whether a death or loss was said is read from
    the person's words (`mentions_loss`), and `apology_to_good_news` is not judged (no row is
    marked good news). Relevance uses the packaged sentence encoder."""
    from collections import Counter

    from es4r.evaluation.reply_checks import ReplyContext, check_replies, mentions_loss, top_opening

    contexts = []
    for sample in rows:
        said = tuple(t.utterance for t in sample.speaker_turns)
        contexts.append(ReplyContext(said, good_news=False, loss=mentions_loss(said)))
    checked = check_replies(replies, contexts, system_prompt, encoder)
    flagged = [c for c in checked if c.flags]
    head, share = top_opening(replies)
    return {"replies": len(replies), "flagged": len(flagged), "flagged_share": round(len(flagged) / max(len(replies), 1), 4),
            "by_failure": dict(Counter(f for c in checked for f in c.flags)),
            "top_opening": head, "top_opening_share": round(share, 4),
            "examples": [{"reply": c.reply, "flags": c.flags} for c in flagged[:5]]}


def reader_accuracy(model: ES4RModel, samples: list[Sample]) -> dict:
    """How often the checkpoint's affect reader (es4r/modeling/affect_reader.py) hears each held-out
    rendering's variant; empty when the model has no fitted reader."""
    from es4r.training.reader_fit import accuracy, trends_and_labels

    reader = getattr(model.cross, "reader", None)
    if reader is None or not bool(reader.fitted):
        return {}
    trends, labels = trends_and_labels(reader, [prepare_sample(s, model.whisper.n_mels) for s in samples])
    return {"reader_accuracy": round(accuracy(reader, trends, labels), 4), "reader_rows": len(labels)}


def _gate(value, threshold, passed: bool) -> dict:
    return {"value": value, "threshold": threshold, "passed": bool(passed)}


def report_markdown(report: GateReport, checkpoint: str) -> str:
    """The side-by-side table, the gates, and the three best and worst trained replies
    (MiniLM cosine to the reference)."""
    from es4r.evaluation.metrics import sentence_embeddings

    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = [f"# Ship gates for `{checkpoint}`", "", f"**{'PASSED' if report.passed else 'FAILED'}**", "",
             "| system | BLEU-1 | ROUGE-L | BERTScore | Dist-2 | distinct replies | most common 4-word opening |",
             "|---|---|---|---|---|---|---|"]
    for name, m in report.systems.items():
        opening = f"{m['top_opening_share']:.0%} \"{m['top_opening']}\"" if "top_opening" in m else "-"
        lines.append(f"| {name} | {fmt(m['bleu1'])} | {fmt(m['rougeL'])} | {fmt(m['bertscore'])} | "
                     f"{fmt(m['dist2'])} | {m['distinct']}/{len(report.references)} | {opening} |")
    lines += ["", "| gate | value | threshold | passed |", "|---|---|---|---|"]
    with_p = lambda g, key: f" (p < {g[key]})" if key == "p_threshold" else f" (p {g[key]:.4f})"  # noqa: E731
    lines += [f"| {name} | {fmt(g['value'])}{with_p(g, 'p') if 'p' in g else ''} | "
              f"{fmt(g['threshold'])}{with_p(g, 'p_threshold') if 'p_threshold' in g else ''} | "
              f"{'yes' if g['passed'] else 'NO'} |" for name, g in report.gates.items()]
    lines += ["", "Speech-vector diversity: " + ", ".join(f"{k} {v:.3f}" for k, v in report.diversity.items())]
    affect = report.affect
    if "direction" in affect:
        lines += ["", "## Affect: does the reply move the way the teacher's does? (gate 4)", "",
                  "Rising reply further than the falling one along the teacher's falling -> rising axis "
                  "(MiniLM; the axis from the other conversations' teacher replies).", "",
                  "| replies | falling and rising differ | rising further along | share | p (one-sided, vs a coin) |",
                  "|---|---|---|---|---|"]
        rows = [("trained", affect["differ"], affect["direction"]),
                ("the teacher's own", affect["teacher_differ"], affect["teacher_direction"]),
                *((name, c["differ"], c["direction"]) for name, c in affect.get("counterparts", {}).items())]
        lines += [f"| {name} | {differ}/{affect['conversations']} | {d['ordered']}/{d['judged']} | {d['share']:.0%} | "
                  f"{d['p']:.4f} |" for name, differ, d in rows]
    lines += ["", "Affect test, the rest: " + ", ".join(
        f"{k} {v}" for k, v in affect.items()
        if k not in ("pairs", "examples", "direction", "teacher_direction", "counterparts"))]
    pairs = report.affect.get("pairs", [])
    if pairs:
        lines += ["", "## Falling vs rising (same words), first five pairs that differ",
                  "| falling reply | rising reply | each closer to its own teacher reply |", "|---|---|---|"]
        lines += [f"| {p['falling']} | {p['rising']} | {'yes' if p['closer'] else 'no'} |" for p in pairs[:5]]
    if report.checks:
        lines += ["", "## Reply checks (es4r/evaluation/reply_checks.py)", "",
                  "| system | flagged | by failure | most common 3-word opening |", "|---|---|---|---|"]
        for name, c in report.checks.items():
            failures = ", ".join(f"{k} {v}" for k, v in c["by_failure"].items()) or "-"
            lines.append(f"| {name} | {c['flagged']}/{c['replies']} ({c['flagged_share']:.0%}) | {failures} | "
                         f"{c['top_opening_share']:.0%} \"{c['top_opening']}\" |")
    trained = report.replies.get("trained", [])
    if trained:
        ref = sentence_embeddings(report.references)
        hyp = sentence_embeddings(trained)
        order = np.argsort((ref * hyp).sum(-1))
        for title, picks in (("Best", order[::-1][:3]), ("Worst", order[:3])):
            lines += ["", f"## {title} three trained replies (MiniLM cosine to the reference)"]
            lines += [f"- reply: \"{trained[i]}\" — reference: \"{report.references[i]}\"" for i in picks]
    return "\n".join(lines) + "\n"
