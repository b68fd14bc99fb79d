"""The reply as text: trimmed to whole sentences, and streamed while the LLM writes it."""

from __future__ import annotations

import re
from typing import Callable

_SENTENCE_END = ".!?"
# Small LLMs sometimes continue the "User: / You:" history layout with a speaker label.
_ROLE_PREFIX = re.compile(r"^\s*(?:You|Assistant|Listener)\s*:\s*", re.IGNORECASE)
# ... and go on to write the next line of that layout: the user's next turn, invented. Measured
# on the 40 held-out conversations (embedded text path): 7 replies went on "\nUser: …" and the
# second of their two sentences was the invented user line ("I'm so glad you're happy with the
# answer. User: That's great!"). A reply is one line; a new line, or a sentence opening with a
# speaker label, ends it.
_NEXT_LINE = re.compile(r"\n|(?<=[.!?])\s+(?:User|You|Assistant|Listener|Speaker)\s*:")


def _own_line(text: str) -> tuple[str, bool]:
    """The reply's own line — a leading speaker label dropped, cut where another line begins —
    and whether another line has begun."""
    text = _ROLE_PREFIX.sub("", text.lstrip()).lstrip()
    end = _NEXT_LINE.search(text)
    return (text[: end.start()], True) if end else (text, False)


def line_ended(text: str) -> bool:
    """True once the LLM has begun another line after the reply's own: nothing it writes from
    there on is part of the reply."""
    return _own_line(text)[1]


def _normalised(text: str) -> str:
    return " ".join(_own_line(text)[0].split())


def sentence_ends(text: str) -> list[int]:
    """Positions of the sentence-ending marks of normalised `text` (one followed by a space or
    at the very end)."""
    return [i for i, ch in enumerate(text) if ch in _SENTENCE_END and (i + 1 == len(text) or text[i + 1] == " ")]


def trim_reply(text: str, max_sentences: int) -> str:
    """Drop a leading speaker label ("You:"), then keep the first `max_sentences` sentences; drop a trailing unfinished one when a
    complete sentence exists (small LLMs ramble and stop mid-sentence at the token cap)."""
    text = _normalised(text)
    ends = sentence_ends(text)
    if not ends:
        return text
    cut = ends[min(max_sentences, len(ends)) - 1]
    return text[: cut + 1]


def growing_reply(text: str, max_sentences: int) -> str:
    """The reply while it is written: like `trim_reply`, but the sentence being written stays
    (the page shows it word by word and the voice can settle the sentence before it) until
    `max_sentences` sentences are complete."""
    text = _normalised(text)
    ends = sentence_ends(text)
    return text[: ends[max_sentences - 1] + 1] if len(ends) >= max_sentences else text


def reply_streamer(tokenizer, max_sentences: int, on_text: Callable[[str], None]):
    """A transformers TextStreamer that, on generate's own thread, hands the reply so far
    (`growing_reply`; at the end, trimmed as the final text is) to `on_text` each time a
    piece of text is finalised."""
    from transformers import TextStreamer

    class ReplyStreamer(TextStreamer):
        reply = ""

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            self.reply += text
            if stream_end:
                on_text(trim_reply(self.reply, max_sentences))
            elif text.strip():
                on_text(growing_reply(self.reply, max_sentences))

    return ReplyStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def confirmed_sentences(text: str) -> int:
    """Sentence ends in `text` (as trim_reply finds them) that more text already follows, so
    no later token can turn them into something else ("3." becoming "3.5")."""
    text = _normalised(text)
    return sum(i + 1 < len(text) for i in sentence_ends(text))


def sentences_done(tokenizer, max_sentences: int, prompt_length: int = 0):
    """A transformers StoppingCriteria that ends a row once its reply holds `max_sentences`
    confirmed sentences, or once another line has begun (`line_ended`). trim_reply would cut the reply there anyway, so the reply is the
    same and the tokens after it are never decoded (on the embedded LLM, the last quarter of
    a 48-token reply is often a third sentence that is thrown away). `prompt_length`: tokens
    of the prompt at the start of each row (0 when generating from inputs_embeds)."""
    import torch
    from transformers import StoppingCriteria

    class SentencesDone(StoppingCriteria):
        def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
            texts = [tokenizer.decode(row[prompt_length:], skip_special_tokens=True) for row in input_ids]
            done = [confirmed_sentences(text) >= max_sentences or line_ended(text) for text in texts]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return SentencesDone()

