"""The reply as text: trimmed to whole sentences, and streamed while the LLM writes it."""

from __future__ import annotations

import re
from typing import Callable

_SENTENCE_END = ".!?"
# Small LLMs sometimes continue the "User: / You:" history layout with a speaker label.
_ROLE_PREFIX = re.compile(r"^\s*(?:You|Assistant|Listener)\s*:\s*", re.IGNORECASE)


def trim_reply(text: str, max_sentences: int) -> str:
    """Drop a leading speaker label ("You:"), then keep the first `max_sentences` sentences; drop a trailing unfinished one when a
    complete sentence exists (small LLMs ramble and stop mid-sentence at the token cap)."""
    text = _ROLE_PREFIX.sub("", " ".join(text.split()))
    ends = [i for i, ch in enumerate(text) if ch in _SENTENCE_END and (i + 1 == len(text) or text[i + 1] == " ")]
    if not ends:
        return text
    cut = ends[min(max_sentences, len(ends)) - 1]
    return text[: cut + 1]


def reply_streamer(tokenizer, max_sentences: int, on_text: Callable[[str], None]):
    """A transformers TextStreamer that, on generate's own thread, hands the reply so far
    (trimmed as the final text is) to `on_text` each time a piece of text is finalised."""
    from transformers import TextStreamer

    class ReplyStreamer(TextStreamer):
        reply = ""

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            self.reply += text
            if text.strip():
                on_text(trim_reply(self.reply, max_sentences))

    return ReplyStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
