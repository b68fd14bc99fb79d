"""Speak the valence test set (assets/valence_set/set.json) with the offline voices.

    python scripts/build_valence_set.py            # writes the missing clips
    python scripts/build_valence_set.py --force    # rewrites all of them

Each turn is spoken by its conversation's voice at neutral pace and prosody (the words carry
the valence), resampled to 16 kHz and written as 16-bit FLAC beside set.json. The clips are
committed, so the set stays fixed; rebuild only after editing set.json (and bump its version)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

logger = logging.getLogger("build_valence_set")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=None, help="the set's folder (default: assets/valence_set)")
    parser.add_argument("--force", action="store_true", help="rewrite clips that exist")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import soundfile

    from es4r.audio import SAMPLE_RATE, prepare_waveform
    from es4r.data.corpus import DEFAULT_VOICES, NEUTRAL_PARAMS, Renderer
    from es4r.evaluation.valence import VALENCE_SET

    folder = args.folder or VALENCE_SET
    items = json.loads((folder / "set.json").read_text())["items"]
    voices = {voice.name: voice for voice in DEFAULT_VOICES}
    renderer = Renderer(folder, tuple(voices.values()))
    for number, item in enumerate(items):
        target = folder / item["audio"]
        if target.exists() and not args.force:
            continue
        result = renderer.engine(voices[item["voice"]]).synthesize(item["text"], None, NEUTRAL_PARAMS, seed=number)
        samples = prepare_waveform(result.waveform, result.sample_rate).samples
        soundfile.write(target, samples, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
        logger.info("%s: %.1f s (%s)", target.name, len(samples) / SAMPLE_RATE, item["voice"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
