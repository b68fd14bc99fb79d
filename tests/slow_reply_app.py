"""app.py on the tiny preset with an LLM that writes a fixed two-sentence reply slowly, word
by word, as a CPU-bound LLM does: the browser test sees whether the first sentence is heard
while the second is still being written. Only the LLM's text is replaced; transcription,
the turn's events, the speaker, the voice and the page are the app's own.

    ES4R_PRESET=tiny ES4R_SLOW_REPLY='One sentence. And another one.' PYTHONPATH=. python tests/slow_reply_app.py"""

from __future__ import annotations

import os
import time

import app
from es4r.modeling.outputs import GenerationOutput
from es4r.pipeline import ES4RPipeline

REPLY = os.environ["ES4R_SLOW_REPLY"]  # set by the test that starts this app
WORD_SECONDS = 0.3


def slowly_written(self, history, features, encoding, on_text, avoid=()):
    words = REPLY.split()
    for count in range(1, len(words) + 1):
        time.sleep(WORD_SECONDS)
        if on_text is not None:
            on_text(" ".join(words[:count]))
    return GenerationOutput(REPLY, list(range(len(words))), None, [], False)


ES4RPipeline._generate = slowly_written

if __name__ == "__main__":
    app.main()
