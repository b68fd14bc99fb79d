"""The situations set (what it holds, its clips) and the empathy corpus (its layout, kept apart
from every test set, and the examples the reply tuning trains on)."""

from collections import Counter

import numpy as np
import pytest
import soundfile

from es4r.data.empathy_corpus import (APART_SIMILARITY, CorpusError, Dialogue, kept_apart, load_dialogues,
                                      reply_examples, training_split)
from es4r.evaluation.reply_checks import ReplyContext, mentions_loss, rule_flags
from es4r.evaluation.situations import KINDS, SituationsReport, SituationReply, load_situations, valence_situations


def test_the_set_has_every_kind_in_two_natural_voices_with_a_clip_per_turn():
    _, situations = load_situations()
    kinds = Counter(s.kind for s in situations)
    assert len(situations) >= 60 and set(kinds) == set(KINDS) and min(kinds.values()) >= 6
    assert all(2 <= len(s.turns) <= 3 for s in situations)
    for kind in KINDS:  # every kind heard in both voices, neither of them espeak-ng
        voices = {s.voice for s in situations if s.kind == kind}
        assert len(voices) == 2 and not any("espeak" in v for v in voices)
    for situation in situations[::9]:  # a sample of clips: real speech, 16 kHz mono, a sensible length
        for clip, text in zip(situation.clips, situation.turns):
            samples, rate = soundfile.read(clip, dtype="float32")
            assert rate == 16_000 and samples.ndim == 1
            seconds = len(samples) / rate
            assert 0.15 < seconds / len(text.split()) < 0.8, (clip.name, seconds)
            assert np.sqrt(np.mean(samples ** 2)) > 0.03


def test_loss_flags_agree_with_what_the_words_say():
    """The set's own loss flags and the word-list reader agree on nearly every item; the
    valence set's grandmother is a loss and its job offer is not."""
    _, situations = load_situations()
    agree = sum(mentions_loss(s.turns) == s.loss for s in situations)
    assert agree >= len(situations) - 2
    by_id = {s.id: s for s in valence_situations()}
    assert by_id["valence_c02"].loss and not by_id["valence_c01"].loss


def test_the_report_counts_flags_openings_and_repeats_per_kind():
    report = SituationsReport("text", [
        SituationReply("a", "death", 1, "x", "x", "I'm so sorry. What was she like?", []),
        SituationReply("a", "death", 2, "y", "y", "I'm so sorry again.", ["assistant_speak"]),
        SituationReply("b", "good_news", 1, "z", "z", "Congratulations, that is huge!", []),
    ])
    rows = report.summary()["kinds"]
    assert rows["death"]["flagged"] == 1 and rows["death"]["repeated_openings"] == 1
    assert rows["good_news"]["flagged"] == 0 and rows["good_news"]["repeated_openings"] == 0
    assert rows["all"]["top_opening"] == "i'm so sorry" and rows["all"]["top_opening_share"] == pytest.approx(2 / 3, abs=1e-3)
    assert len(report.quotes(2, seed=1)) == 2 and report.quotes(2, seed=1) == report.quotes(2, seed=1)


def test_the_corpus_loads_and_every_example_ends_on_a_reply():
    dialogues = load_dialogues()
    assert len(dialogues) >= 500 and len({d.kind for d in dialogues}) >= 10
    examples = reply_examples(dialogues)
    assert len(examples) > 2 * len(dialogues)
    for example in examples[:50]:
        assert example.history[-1][0] == "user" and example.reply


def test_a_bad_corpus_line_is_named(tmp_path):
    (tmp_path / "part_x.jsonl").write_text('{"id": "x", "situation": "s", "kind": "k", "turns": '
                                           '[{"role": "listener", "text": "hi"}]}\n')
    with pytest.raises(CorpusError, match="part_x.jsonl line 1"):
        load_dialogues(tmp_path)


class Words:
    """Stand-in encoder: one-hot words, normalised."""

    def __call__(self, texts):
        import torch

        vocab = sorted({w for t in texts for w in t.split()})
        rows = torch.tensor([[float(w in t.split()) for w in vocab] for t in texts])
        return rows / rows.norm(dim=1, keepdim=True)


def test_a_situation_close_to_a_test_is_left_out_with_all_its_phrasings():
    near = [Dialogue("n-1", "n", "k", (("user", "my rabbit died"), ("assistant", "oh no"))),
            Dialogue("n-2", "n", "k", (("user", "our old pet passed"), ("assistant", "so sad")))]
    far = [Dialogue("f-1", "f", "k", (("user", "new bike today"), ("assistant", "fun")))]
    kept, left_out = kept_apart(near + far, ["my rabbit died yesterday"], Words(), threshold=0.6)
    assert left_out == ["n"] and [d.id for d in kept] == ["f-1"]


@pytest.mark.slow
def test_no_dialogue_trained_on_is_close_to_a_test_situation():
    from es4r.evaluation.metrics import SentenceEncoder

    encoder = SentenceEncoder()
    kept, left_out = training_split(encoder)
    _, situations = load_situations()
    tests = [" ".join(s.turns) for s in situations] + [" ".join(s.turns) for s in valence_situations()]
    similarity = encoder([d.user_text for d in kept]) @ encoder(tests).T
    assert float(similarity.max()) < APART_SIMILARITY
    assert left_out and len(kept) >= 400


def test_the_checker_passes_replies_people_wrote_for_the_conversation():
    """The counterpart of every rule: on the 1,459 hand-written replies of the empathy corpus
    (condolences where someone died, apologies to disappointments, questions, reflections) the
    word rules flag fewer than 1 in 100."""
    from es4r.config import GenerationConfig
    from es4r.evaluation.reply_checks import ReplyContext, rule_flags

    flagged, total = [], 0
    for dialogue in load_dialogues():
        said = []
        for role, text in dialogue.turns:
            if role == "user":
                said.append(text)
                continue
            total += 1
            context = ReplyContext(tuple(said), dialogue.kind == "good_news", mentions_loss(said))
            if flags := rule_flags(text, context, GenerationConfig().system_prompt):
                flagged.append((dialogue.id, flags, text))
    assert len(flagged) / total < 0.01, flagged


def test_the_replies_written_for_how_the_person_sounds_cover_the_corpus_and_pass_the_checker():
    """assets/empathy_corpus/affect_*.jsonl: for every dialogue's last listener turn, a reply for
    a voice that fell and one for a voice that rose — each different from the other and from the
    written reply, and the checker's word rules flag fewer than 1 in 100 (as for the written ones);
    a falling reply never exclaims."""
    from es4r.config import GenerationConfig
    from es4r.data.empathy_corpus import load_affect_replies

    dialogues = load_dialogues()
    replies = load_affect_replies(dialogues)
    last = {(d.id, len(d.turns) - 1) for d in dialogues}
    assert set(replies) == last
    by_id = {d.id: d for d in dialogues}
    flagged = []
    for (dialogue_id, turn), texts in replies.items():
        dialogue = by_id[dialogue_id]
        written = dialogue.turns[turn][1]
        assert len({texts["falling"], texts["rising"], written}) == 3
        assert "!" not in texts["falling"]
        said = [text for role, text in dialogue.turns[:turn] if role == "user"]
        context = ReplyContext(tuple(said), dialogue.kind == "good_news", mentions_loss(said))
        for affect, text in texts.items():
            if flags := rule_flags(text, context, GenerationConfig().system_prompt):
                flagged.append((dialogue_id, affect, flags, text))
    assert len(flagged) / (2 * len(replies)) < 0.01, flagged
