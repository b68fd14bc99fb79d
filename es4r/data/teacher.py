"""The affect-aware teacher: training targets the speech path can only reach by hearing.

Human chit-chat lines do not depend on how something was said, so a speech path trained on
them learns to ignore the audio (the collapsed CPU runs, assets/TRAINING_CPU.md). Here the
target of each affect variant of a conversation is the reply of ES4R's own text path (same
LLM, same empathetic system prompt, same decoding) given one more sentence after the
history: how the person sounds, derived from the variant's planned energy/pace trajectory
(es4r.data.corpus.AFFECT_HINTS).
The speech path is trained on these replies without the hint (paper, Sec. 3.2: the text
path is the teacher), so the only way to match them is to hear the trajectory."""

from __future__ import annotations

import logging
import re

import torch

from es4r.config import GenerationConfig
from es4r.data.manifest import Sample
from es4r.modeling.model import ES4RModel, generation_kwargs
from es4r.reply_text import trim_reply

logger = logging.getLogger(__name__)

ECHO_NGRAM = 4  # a reply sharing any 4 consecutive words with the system prompt is an echo, not a reply
BAN_TOKENS = 3  # when a reply is regenerated, no 3 consecutive tokens of the system prompt may appear


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower().replace("you're", "you are"))


def echoes_prompt(reply: str, system_prompt: str) -> bool:
    """True when the small LLM recited its instructions instead of replying (measured: 42 of
    720 training targets of the CPU corpus began "You're a warm, empathetic listener. Reply to
    the user…"). Such targets teach the speech path to recite; they are not used."""
    prompt, words = _words(system_prompt), _words(reply)
    grams = {tuple(prompt[i:i + ECHO_NGRAM]) for i in range(len(prompt) - ECHO_NGRAM + 1)}
    return any(tuple(words[i:i + ECHO_NGRAM]) in grams for i in range(len(words) - ECHO_NGRAM + 1))


def prompt_ban(tokenizer, system_prompt: str) -> list[list[int]]:
    """`generate(bad_words_ids=…)` that forbids every `BAN_TOKENS`-token window of the system
    prompt (as written, with "You are" contracted as the LLM recites it, and after a space), so a
    regenerated reply cannot recite the instructions; other wording stays free."""
    texts = {system_prompt, system_prompt.replace("You are", "You're")}
    texts |= {" " + text for text in texts}
    windows = set()
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        windows |= {tuple(ids[i : i + BAN_TOKENS]) for i in range(len(ids) - BAN_TOKENS + 1)}
    return [list(window) for window in sorted(windows)]


@torch.no_grad()
def hinted_replies(model: ES4RModel, samples: list[Sample], batch_size: int = 8, ban_prompt: bool = False,
                   generation: GenerationConfig | None = None) -> list[str]:
    """The text path's reply to each sample with its affect hint after the history,
    decoded as the app decodes (greedy, repetition penalties, cut at `max_sentences`);
    with `ban_prompt`, the system prompt's wording is forbidden (`prompt_ban`).
    `generation` replaces the model's decoding settings (experiments/affect_ceiling.py samples).
    Batched with left padding, which is several times faster on a CPU."""
    generation = generation or model.config.generation
    kwargs = generation_kwargs(generation, model.tokenizer)
    if ban_prompt:
        kwargs["bad_words_ids"] = prompt_ban(model.tokenizer, generation.system_prompt)
    replies: list[str] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        batch = model([s.history_turns() for s in chunk], None, hints=[s.affect_hint for s in chunk],
                      generation=generation, pad_left=True, prompt_only=True).inputs
        output = model.llm.generate(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask, **kwargs)
        for row in output:
            text = model.tokenizer.decode(row.tolist(), skip_special_tokens=True)
            replies.append(trim_reply(text.strip(), generation.max_sentences))
        logger.info("teacher replies: %d / %d", len(replies), len(samples))
    return replies
