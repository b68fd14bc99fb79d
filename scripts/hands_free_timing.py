"""How soon the reply's voice starts after the person stops speaking, hands-free, in a real browser.

Starts `app.py` (scripts/browser_timing.py's launcher), opens it in headless Chromium whose
microphone plays a three-turn conversation once (the bundled example clips, each followed by a
pause long enough for its reply to be spoken), presses the hands-free record button once, and
measures per turn: from the end of the person's speech (where the clip's sound ends, placed in
the stream; the stream starts when the page's microphone opens) to the reply's first sentence
starting to play in the page. Then the same clips are sent with Send, as a recording, and the
transcripts and replies of both runs are compared.

    python -m scripts.hands_free_timing                 # embedded preset (the app's default)
    python -m scripts.hands_free_timing --preset tiny --out runs/hands_free_timing.json

The origin is the moment getUserMedia resolves in the page; Chromium's fake capture starts with
it, give or take a few tens of milliseconds, so the figures carry that much uncertainty.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from scripts.browser_timing import CHROMIUM, CLIPS, ROOT, TURN_TIMEOUT_MS, _exported, measure, served_app
from es4r.config import PRESETS

RATE = 16_000
LEAD_S = 1.0  # silence before the first turn
PAUSE_S = 12.0  # after each turn: the reply is written and spoken before the next turn starts
LOUD = 0.02  # a sample above this share of the clip's peak is sound (its trailing hiss is not speech)
ARGS = ["--no-sandbox", "--autoplay-policy=no-user-gesture-required", "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream"]
# Kept on window before any page script runs: when the microphone opened, and when each reply's
# first sentence started to play (media events do not bubble, but they pass the capture phase).
PAGE_PROBE = """
window.es4rTiming = { micOpened: null, voiceStarts: {} };
const openMic = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
navigator.mediaDevices.getUserMedia = async (...args) => {
  const stream = await openMic(...args);
  if (window.es4rTiming.micOpened === null) window.es4rTiming.micOpened = performance.now();
  return stream;
};
document.addEventListener("playing", (event) => {
  const src = event.target.currentSrc || "";
  const turn = (src.match(/turn(\\d+)-/) || [])[1];
  if (turn && !(turn in window.es4rTiming.voiceStarts)) window.es4rTiming.voiceStarts[turn] = performance.now();
}, true);
"""
logger = logging.getLogger("hands_free_timing")


def conversation_stream(clips: list[Path], path: Path) -> list[float]:
    """The clips as one 16 kHz stream with pauses; returns where each turn's sound ends (s)."""
    parts, ends, at = [np.zeros(int(RATE * LEAD_S), np.float32)], [], LEAD_S
    for clip in clips:
        samples, rate = sf.read(str(clip), dtype="float32")
        if rate != RATE or samples.ndim != 1:
            raise SystemExit(f"{clip}: expected 16 kHz mono")
        loud = np.flatnonzero(np.abs(samples) > LOUD * np.abs(samples).max())
        ends.append(at + (loud[-1] + 1) / RATE)
        parts += [samples, np.zeros(int(RATE * PAUSE_S), np.float32)]
        at += len(samples) / RATE + PAUSE_S
    sf.write(str(path), np.concatenate(parts), RATE, subtype="PCM_16")
    return ends


def measure_hands_free(url: str, clips: list[Path], workdir: Path) -> list[dict]:
    from playwright.sync_api import expect, sync_playwright

    stream = workdir / "conversation.wav"
    ends = conversation_stream(clips, stream)
    with sync_playwright() as driver, tempfile.TemporaryDirectory() as profile:
        context = driver.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, viewport={"width": 1440, "height": 1000},
            args=[*ARGS, f"--use-file-for-fake-audio-capture={stream}%noloop"])
        context.add_init_script(PAGE_PROBE)
        page = context.new_page()
        page.goto(url)
        expect(page.locator("#status")).to_contain_text("answered", timeout=TURN_TIMEOUT_MS)
        page.locator("#hands-free button.record-button").click()
        page.wait_for_function(f"Object.keys(window.es4rTiming.voiceStarts).length >= {len(clips)}",
                               timeout=TURN_TIMEOUT_MS + int(1000 * (LEAD_S + len(clips) * PAUSE_S)))
        expect(page.locator("#context-meter")).to_contain_text(f"of {2 * len(clips)} spoken turns",
                                                               timeout=TURN_TIMEOUT_MS)
        seen = page.evaluate("window.es4rTiming")
        record = _exported(page, workdir, len(clips))
        context.close()
    turns = []
    for number, (clip, end, saved) in enumerate(zip(clips, ends, record["turns"]), start=1):
        voice = (seen["voiceStarts"][str(number)] - seen["micOpened"]) / 1000
        timings = saved["result"]["timings"]
        turns.append({"turn": number, "clip": clip.name, "speech_end_s": round(end, 3),
                      "voice_after_speech_end_s": round(voice - end, 2),
                      "pipeline_first_audio_s": timings.get("first_audio"), "asr_s": timings.get("asr"),
                      "transcript": saved.get("transcript"),
                      "reply": saved["result"].get("reply_text")})
    return turns


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=PRESETS, default="embedded")
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"needs Debian's chromium at {CHROMIUM} (bash scripts/setup.sh --test)")
    clips = [ROOT / "assets" / "examples" / f"{name}.wav" for name in CLIPS]
    with tempfile.TemporaryDirectory(prefix="es4r_hands_free_") as folder, served_app(args.preset, Path(folder)) as url:
        hands_free = measure_hands_free(url, clips, Path(folder))
        sent = measure(url, clips, Path(folder))
    print("| turn | speech end in the stream s | voice after the end of speech s | pipeline first audio s | ASR s |\n"
          "|---|---|---|---|---|")
    for t in hands_free:
        print(f"| {t['turn']} | {t['speech_end_s']:.2f} | {t['voice_after_speech_end_s']:.2f} | "
              f"{t['pipeline_first_audio_s'] or 0:.2f} | {t['asr_s'] or 0:.2f} |")
    median = statistics.median(t["voice_after_speech_end_s"] for t in hands_free)
    print(f"median voice after the end of speech: {median:.2f} s")
    for streamed, by_send in zip(hands_free, sent):
        heard = "same transcript" if streamed["transcript"] == by_send["transcript"] else "TRANSCRIPT DIFFERS"
        same = "same reply" if streamed["reply"] == by_send["reply"] else "REPLY DIFFERS"
        print(f"turn {streamed['turn']} ({heard}, {same}): hands-free {streamed['transcript']!r} -> {streamed['reply']!r}"
              f" | Send {by_send['transcript']!r} -> {by_send['reply']!r}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"preset": args.preset, "hands_free": hands_free, "sent": sent,
                                        "median_voice_after_speech_end_s": median}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
