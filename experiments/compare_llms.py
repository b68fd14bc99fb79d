"""Compare the offline LLM candidates and decoding settings on emotional messages.

Each candidate is prepared like the embedded preset does (converted once into the cache),
then answers the same five dialogues (sad, anxious, happy, angry, a multi-turn one) with
ES4R's empathetic system prompt and the pipeline's prompt layout and reply trimming, under
each decoding setting. Prints every reply, and a table of lengths and speed to judge by.

    python -m experiments.compare_llms                       # all installed candidates
    python -m experiments.compare_llms --llm smollm2-135m-instruct --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import time

import torch

from es4r.config import GenerationConfig
from es4r.conversation import format_history
from es4r.embedded.llm_gguf import LLM_CHOICES
from es4r.embedded.locate import MissingWeightsPackage
from es4r.embedded.setup import prepare_embedded
from es4r.modeling.backbones import load_llm
from es4r.reply_text import trim_reply

SEED = 42
DIALOGUES: dict[str, list[tuple[str, str]]] = {
    "sad": [("user", "My grandmother passed away last week. I keep picking up my phone to call her "
                     "and then I remember she's gone.")],
    "anxious": [("user", "I have a job interview tomorrow morning and my hands won't stop shaking. "
                         "What if I freeze and forget everything?")],
    "happy": [("user", "I just found out I got into the nursing program I've been working toward for three "
                       "years! I can't stop smiling.")],
    "angry": [("user", "My roommate ate the birthday cake I baked for my sister and didn't even apologise. "
                       "I'm so angry I could scream.")],
    "multi_turn": [
        ("user", "I didn't get the promotion."),
        ("assistant", "I'm sorry, that must be really disappointing. Do you know why?"),
        ("user", "They gave it to someone who started six months ago. It feels like all my extra hours "
                 "meant nothing."),
    ],
}
BASE = GenerationConfig()
# A prompt that names the feeling to match, tried against the config's default prompt.
MATCHING_PROMPT = (
    "You are a warm, empathetic listener. Reply in one or two short sentences. Match the user's "
    "feeling: share their joy when they are happy, comfort them when they are sad, worried or "
    "angry. Then ask one gentle question."
)
SETTINGS: dict[str, GenerationConfig] = {
    "greedy": dataclasses.replace(BASE, do_sample=False, repetition_penalty=1.0, no_repeat_ngram_size=0),
    "greedy_rp1.2_nr3": dataclasses.replace(BASE, do_sample=False, repetition_penalty=1.2, no_repeat_ngram_size=3),
    "greedy_rp1.1_nr3_80tok": dataclasses.replace(BASE, do_sample=False, repetition_penalty=1.1,
                                                  no_repeat_ngram_size=3, max_new_tokens=80),
    "greedy_rp1.2_nr3_matching_prompt": dataclasses.replace(BASE, do_sample=False, repetition_penalty=1.2,
                                                            no_repeat_ngram_size=3, system_prompt=MATCHING_PROMPT),
    "sample_t0.7_rp1.1_nr3": dataclasses.replace(BASE, do_sample=True, temperature=0.7, top_p=0.9,
                                                 repetition_penalty=1.1, no_repeat_ngram_size=3),
    "sample_t0.7_rp1.2_nr3_80tok": dataclasses.replace(BASE, do_sample=True, temperature=0.7, top_p=0.9,
                                                       repetition_penalty=1.2, no_repeat_ngram_size=3,
                                                       max_new_tokens=80),
}


@dataclasses.dataclass(frozen=True)
class Reply:
    candidate: str
    setting: str
    dialogue: str
    raw: str  # the decoded generation
    text: str  # after trim_reply (what the app would say)
    new_tokens: int
    seconds: float
    hit_cap: bool  # generation stopped at max_new_tokens, not at end of turn


def generate(llm, messages: list[dict], generation: GenerationConfig) -> tuple[str, int, float, bool]:
    """One reply with the pipeline's decoding knobs; returns (text, new tokens, seconds, hit cap)."""
    ids = llm.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
    kwargs = dict(max_new_tokens=generation.max_new_tokens, do_sample=generation.do_sample,
                  repetition_penalty=generation.repetition_penalty,
                  no_repeat_ngram_size=generation.no_repeat_ngram_size,
                  pad_token_id=llm.tokenizer.pad_token_id, eos_token_id=llm.tokenizer.eos_token_id)
    if generation.do_sample:
        kwargs.update(temperature=generation.temperature, top_p=generation.top_p)
    torch.manual_seed(SEED)
    start = time.perf_counter()
    with torch.inference_mode():
        output = llm.model.generate(**ids, **kwargs)
    seconds = time.perf_counter() - start
    new = output[0, ids["input_ids"].shape[1]:]
    hit_cap = len(new) >= generation.max_new_tokens and int(new[-1]) != llm.tokenizer.eos_token_id
    return llm.tokenizer.decode(new, skip_special_tokens=True).strip(), len(new), seconds, hit_cap


def run_candidate(name: str, settings: dict[str, GenerationConfig]) -> list[Reply]:
    start = time.perf_counter()
    paths = prepare_embedded(llm=name)
    prepared = time.perf_counter() - start
    llm = load_llm(str(paths.llm), device="cpu")
    logging.info("%s: prepare %.1f s (converted: %s), load %.1f s; licence: %s", name, prepared,
                 paths.converted or "none", time.perf_counter() - start - prepared, paths.llm_licence)
    replies = []
    for setting, generation in settings.items():
        for dialogue, turns in DIALOGUES.items():
            messages = [{"role": "system", "content": generation.system_prompt},
                        {"role": "user", "content": format_history(turns)}]
            raw, tokens, seconds, hit_cap = generate(llm, messages, generation)
            replies.append(Reply(name, setting, dialogue, raw, trim_reply(raw, generation.max_sentences),
                                 tokens, seconds, hit_cap))
            print(f"[{name} | {setting} | {dialogue}] ({tokens} tok, {tokens / seconds:.1f} tok/s)\n"
                  f"  raw : {raw!r}\n  said: {replies[-1].text!r}", flush=True)
    return replies


def summary_table(replies: list[Reply]) -> str:
    """Markdown: per candidate x setting, mean tokens, words said, tokens/s, cap hits, repeats."""
    rows = ["| candidate | setting | mean new tokens | mean words said | tok/s | hit cap | repeated 3-grams |",
            "|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[Reply]] = {}
    for reply in replies:
        groups.setdefault((reply.candidate, reply.setting), []).append(reply)
    for (candidate, setting), group in groups.items():
        words = [re.findall(r"[\w']+", r.raw.lower()) for r in group]
        repeats = sum(len(g) - len(set(g)) for g in ([tuple(w[i:i + 3]) for i in range(len(w) - 2)] for w in words))
        rows.append(
            f"| {candidate} | {setting} | {sum(r.new_tokens for r in group) / len(group):.1f} | "
            f"{sum(len(r.text.split()) for r in group) / len(group):.1f} | "
            f"{sum(r.new_tokens for r in group) / sum(r.seconds for r in group):.1f} | "
            f"{sum(r.hit_cap for r in group)}/{len(group)} | {repeats} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", nargs="*", default=list(LLM_CHOICES), choices=LLM_CHOICES)
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--json", help="also write every reply to this JSON file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    replies: list[Reply] = []
    for name in args.llm:
        try:
            replies += run_candidate(name, {s: SETTINGS[s] for s in args.settings})
        except (MissingWeightsPackage, ValueError) as error:  # not installed, or not a chat model
            logging.warning("skipping %s: %s", name, error)
    print(summary_table(replies))
    if args.json:
        with open(args.json, "w") as out:
            json.dump([dataclasses.asdict(r) for r in replies], out, indent=2)


if __name__ == "__main__":
    main()
