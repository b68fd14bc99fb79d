"""Token ids of text, each distinct text tokenised once.

One turn lays its prompt out several times (fitting the LLM context, the prompt itself, the
bans on earlier replies and openings, the context meter, the heatmaps when asked), and each
turn's history repeats the lines of the one before. Tokenising every line each time was repeated
work on the way to the first word; here a line is tokenised the first time it is seen."""

from __future__ import annotations

import threading
from collections import OrderedDict


class TokenIds:
    """`ids = token_ids(text)`: the tokenizer's ids of `text` without special tokens, kept for
    the `capacity` texts used most recently. Thread-safe: a turn's worker thread and the page's
    views read it at once."""

    def __init__(self, tokenizer, capacity: int = 4096):
        self.tokenizer = tokenizer
        self.capacity = capacity
        self._ids: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, text: str) -> list[int]:
        with self._lock:
            ids = self._ids.get(text)
            if ids is not None:
                self._ids.move_to_end(text)
                return list(ids)
        ids = tuple(self.tokenizer(text, add_special_tokens=False).input_ids)
        with self._lock:
            self._ids[text] = ids
            while len(self._ids) > self.capacity:
                self._ids.popitem(last=False)
        return list(ids)
