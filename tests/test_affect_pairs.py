"""The reply cue and the affect-pair stage (es4r/training/affect_pairs.py): falling and rising renderings
of one conversation, their audio swapped between the two teacher replies."""

import json
from dataclasses import replace

import pytest
import soundfile
import torch

from es4r.audio import load_audio
from es4r.config import TrainConfig
from es4r.data.manifest import load_manifest, prepare_sample
from es4r.training.affect_pairs import affect_pair_loss, affect_pairs, held_out_margin
from es4r.training.trainer import restrict_training, train
from tests.test_training import _model

GAINS = {"falling": (1.0, 0.5, 0.25), "rising": (0.25, 0.5, 1.0), "flat": (0.5, 0.5, 0.5)}
REPLIES = {"falling": "i am so sorry .", "rising": "that is great !", "flat": "i see ."}


def _corpus(folder, speech_paths, conversations=2, variants=("falling", "rising", "flat")):
    """Conversations whose three speaker turns get louder or quieter, one reply per variant."""
    rows = []
    for c in range(conversations):
        for variant in variants:
            history = []
            for t, (path, gain) in enumerate(zip(speech_paths, GAINS[variant])):
                name = f"c{c}_{variant}_{t}.wav"
                soundfile.write(folder / name, load_audio(path).samples * gain, 16000)
                history.append({"index": 2 * t, "role": "speaker", "utterance": f"turn {t} of {c}", "audio_path": name})
                if t < 2:
                    history.append({"index": 2 * t + 1, "role": "listener", "utterance": "i see ."})
            rows.append({"conversation_id": f"c{c}", "turn_id": 5, "variant": variant, "dialogue_history": history,
                         "response": {"utterance": REPLIES[variant]}})
    path = folder / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_pairs_are_the_falling_and_rising_rows_of_one_conversation(tmp_path, speech_paths):
    samples = load_manifest(_corpus(tmp_path, speech_paths))
    samples = [s for s in samples if not (s.conversation_id == "c1" and s.variant == "rising")]
    pairs = affect_pairs(samples)
    assert [(f.conversation_id, f.variant, r.variant) for f, r in pairs] == [("c0", "falling", "rising")]


@pytest.mark.slow
def test_reply_cue_starts_at_zero_and_follows_the_last_turn(tiny_model, tmp_path, speech_paths):
    samples = load_manifest(_corpus(tmp_path, speech_paths, conversations=1))
    contexts = {}
    for sample in samples:
        item = prepare_sample(sample, 80)
        encoding = tiny_model.encode_speech([item.features])
        speech = encoding.embeddings[0, : int(encoding.lengths[0])]
        with torch.no_grad():
            contexts[sample.variant] = tiny_model.speech_context(
                speech, tiny_model.heard_spans(item.features, encoding), tiny_model.prompt_parts(sample.history_turns()),
                tiny_model.heard_prosody(item.features, encoding))
    assert all(torch.count_nonzero(c.cue) == 0 for c in contexts.values())  # untrained: the cue adds nothing
    assert contexts["falling"].prosody[-1, 0] < -0.5 < 0.5 < contexts["rising"].prosody[-1, 0]
    parts = tiny_model.prompt_parts(samples[0].history_turns())
    middle = contexts["falling"].middle
    with torch.no_grad():
        plain = tiny_model.build_path([parts], [middle], None, [contexts["falling"].speech_flags], pad_left=False)
        tiny_model.cross.cue.weight.normal_()
        try:
            cue = tiny_model.cross.reply_cue(contexts["falling"].prosody)
            cued = tiny_model.build_path([parts], [middle], None, [contexts["falling"].speech_flags],
                                         pad_left=False, cues=[cue])
        finally:
            tiny_model.cross.cue.weight.zero_()
    start = len(parts.prefix_ids) + middle.shape[0]
    changed = (cued.inputs_embeds[0] != plain.inputs_embeds[0]).any(-1).nonzero().flatten().tolist()
    assert changed == list(range(start, start + len(parts.suffix_ids)))  # the reply cue, nothing else


def test_margin_comes_from_the_audio_alone(tiny_dirs, tmp_path, speech_paths):
    model = _model(tiny_dirs).eval()
    model.cross.cue.weight.data.normal_()  # a cue that hears, so the audio matters
    samples = load_manifest(_corpus(tmp_path, speech_paths, conversations=1))
    falling, rising = (prepare_sample(s, 80) for s in affect_pairs(samples)[0])
    with torch.no_grad():
        margin = affect_pair_loss(model, falling, rising).margin
        swapped = affect_pair_loss(model, replace(falling, sample=replace(falling.sample, response=REPLIES["rising"])),
                                   replace(rising, sample=replace(rising.sample, response=REPLIES["falling"]))).margin
        deaf = affect_pair_loss(model, falling, replace(falling, sample=replace(falling.sample,
                                                                                 response=REPLIES["rising"]))).margin
    assert abs(float(margin)) > 1e-3
    assert float(swapped) == pytest.approx(-float(margin), abs=1e-3)  # other reply for each audio: sign flips
    assert float(deaf) == pytest.approx(0.0, abs=1e-3)  # the same audio twice: nothing to hear


def test_cue_only_stage_from_an_older_checkpoint_trains_the_cue_and_learns_to_hear(tiny_dirs, tmp_path, speech_paths):
    from safetensors.torch import load_file, save_file

    from es4r.training.checkpoint import WEIGHTS_FILE, save_es4r_parts

    model = _model(tiny_dirs)
    stage1 = save_es4r_parts(model, tmp_path / "stage1")
    weights = load_file(str(stage1 / WEIGHTS_FILE))
    save_file({k: v for k, v in weights.items() if not k.startswith("cross.cue")}, str(stage1 / WEIGHTS_FILE))

    manifest = _corpus(tmp_path, speech_paths)
    samples = load_manifest(manifest)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.eval()
    start = held_out_margin(model, samples, 80)["affect_margin"]
    config = TrainConfig(manifest=str(manifest), output_dir=str(tmp_path / "run"), preset="tiny", epochs=3,
                         batch_size=1, lr=1e-1, weight_decay=0.0, save_every=1000, max_steps=5,
                         init_from=str(stage1), train_only=("cross.cue",), two_path_weight=0.0,
                         affect_pair_weight=1.0, lr_schedule="constant")
    train(config, model=model)
    changed = sorted(n for n, p in model.named_parameters() if not torch.equal(p, before[n]))
    assert changed == ["cross.cue.weight"]
    model.eval()
    assert held_out_margin(model, samples, 80)["affect_margin"] > start + 1.0  # measured: 0.0 -> 3.5 nats
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert all("pair_margin" in r and r["kl"] == 0.0 for r in log)


def test_train_only_must_name_something(tiny_model):
    with pytest.raises(ValueError, match="matches no trainable parameter"):
        restrict_training(tiny_model, ("cross.nothing",))


def test_shipped_checkpoint_names_no_folder_of_this_machine(tiny_model, tmp_path):
    from es4r.training.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_es4r_parts, save_es4r_parts, ship

    saved = save_es4r_parts(tiny_model, tmp_path / "run" / "final", {"train_config": {"manifest": str(tmp_path / "m")}})
    shipped = ship(saved, tmp_path / "assets", {"ship_gates": {"distinct_replies": {"value": 40, "threshold": 38}}})
    text = (shipped / CONFIG_FILE).read_text()
    assert '"manifest": "m"' in text and "ship_gates" in text

    def strings(value):
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        return [s for v in value for s in strings(v)] if isinstance(value, list) else [value]

    assert not [s for s in strings(json.loads(text)) if isinstance(s, str) and s.startswith("/")]
    assert (shipped / WEIGHTS_FILE).read_bytes() == (saved / WEIGHTS_FILE).read_bytes()
    load_es4r_parts(tiny_model, shipped)  # still loads: the fingerprint, not the paths, decides
