"""The LLM's key/value cache kept from one text-path reply to the next.

A conversation's next prompt begins with the last one: the system prompt and the history
lines so far (the history is one user message and each turn is tokenised on its own, so an
earlier turn's tokens never change). Keeping the cache of the last sequence the LLM read and
wrote, and starting the next reply from its longest common prefix with the new prompt, means
the LLM reads only what is new — llama.cpp does the same for its users by default. The
result is the same reply: the cached keys and values are those of the same tokens (checked
on the held-out set in the benchmark notes; a rare greedy tie may tip on float rounding).

On the speech path only what comes before the first heard turn is reused — the system prompt,
and the oldest turns once they fall outside the speech window (they are read as their words,
as on the text path): the heard turns are S', which changes for every earlier turn when a turn
is added (the inter-turn attention looks across the whole dialogue) and where PLoRA is active,
so a prefix of token ids says nothing about it; the positions before it are text, read by the
base weights, and come before S' in a causal LLM, so their keys and values are the same every
turn. The speech path takes the cache with `take(ids before S', key, whole=True)` and leaves
it cropped to them."""

from __future__ import annotations

import threading

MIN_REUSE = 8  # a shorter shared prefix is not worth cropping a cache for


def shared_prefix(a: tuple[int, ...] | list[int], b: tuple[int, ...] | list[int]) -> int:
    """How many leading tokens `a` and `b` have in common."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class PrefixCache:
    """One cache (the last sequence's), shared by every view of a model and every session of
    the app: `take` hands it out cropped to what the new prompt shares (it is then no longer
    held, so two threads never write into one cache), `keep` stores the cache a reply ends with."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: tuple[int, ...] = ()
        self._cache = None
        self._key: tuple | None = None

    def take(self, prompt_ids: list[int], key: tuple, whole: bool = False):
        """(cache, reused tokens) for a prompt that begins with `prompt_ids`, or (None, 0).
        `key` names what made the cache (the LLM's device and dtype): a cache made otherwise is
        not used. At least the prompt's last token is left to read, so the LLM has logits to
        start from; `whole=True` says more of the prompt follows `prompt_ids` (the speech
        path's S'), so all of them may come from the cache."""
        with self._lock:
            cache, known, made_by = self._cache, self._ids, self._key
            self._cache, self._ids, self._key = None, (), None
        if cache is None or made_by != key:
            return None, 0
        reused = min(shared_prefix(known, prompt_ids), len(prompt_ids) - (0 if whole else 1))
        if reused < MIN_REUSE:
            return None, 0
        cache.crop(reused - cache.get_seq_length())  # transformers 5: how many to remove, as a negative count
        return cache, reused

    def keep(self, ids: list[int], cache, key: tuple) -> None:
        """Hold `cache`, whose first positions are those of `ids` (it is cropped to them when
        it holds more: the speech path keeps only its prefix)."""
        length = cache.get_seq_length()
        if length > len(ids):
            cache.crop(len(ids) - length)
            length = len(ids)
        with self._lock:
            self._ids, self._cache, self._key = tuple(ids[:length]), cache, key

    def clear(self) -> None:
        with self._lock:
            self._ids, self._cache, self._key = (), None, None

    @property
    def tokens(self) -> int:
        """Positions held now (0 when empty)."""
        return len(self._ids)
