"""How long a turn takes in a real browser, next to the pipeline's own times for the same turn.

Starts `app.py` on a free local port, opens it in headless Chromium (Debian's, as the browser
tests do), sends a three-turn spoken conversation (the bundled example clips) and, per turn,
reads what the page measured (Send -> first reply words, Send -> voice starts:
es4r/ui/page_timing.js) and what the pipeline measured (the exported conversation's timings:
first words and reply text, in seconds from the start of the turn). The difference is the
time spent around the pipeline: upload, queue, page updates.

    python -m scripts.browser_timing                     # embedded preset (the app's default)
    python -m scripts.browser_timing --preset tiny --out runs/browser_timing.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
from es4r.config import PRESETS

CHROMIUM = "/usr/bin/chromium"
CLIPS = ("rough_week_1", "rough_week_2", "rough_week_3")
START_SECONDS = 300
TURN_TIMEOUT_MS = 180_000
logger = logging.getLogger("browser_timing")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_app(preset: str, port: int, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "ES4R_PRESET": preset, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_SECONDS
    while True:
        if server.poll() is not None:
            raise SystemExit(f"app.py exited with {server.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                return server
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                raise SystemExit(f"app.py did not answer within {START_SECONDS} s; see {log_path}")
            time.sleep(0.5)


@contextmanager
def served_app(preset: str, folder: Path, keep_log: Path | None = None) -> Iterator[str]:
    """app.py on `preset` on a free local port, its log in `folder`; yields its address and
    stops it afterwards (copying the log to `keep_log` when given)."""
    port = _free_port()
    server = _start_app(preset, port, folder / "app.log")
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.terminate()
        server.wait(timeout=30)
        if keep_log:
            keep_log.write_text((folder / "app.log").read_text())


def measure(url: str, clips: list[Path], workdir: Path) -> list[dict]:
    from playwright.sync_api import expect, sync_playwright

    turns = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(url)
        expect(page.locator("#status")).to_contain_text("answered", timeout=TURN_TIMEOUT_MS)
        for number, clip in enumerate(clips, start=1):
            page.locator("#mic button[aria-label='Upload file']").click()
            page.locator("#mic input[type=file]").set_input_files(str(clip))
            expect(page.locator("#send")).to_be_enabled(timeout=TURN_TIMEOUT_MS)
            page.locator("#send").click()
            expect(page.locator("#page-timing")).to_contain_text("voice after", timeout=TURN_TIMEOUT_MS)
            expect(page.locator("#send")).to_be_disabled(timeout=TURN_TIMEOUT_MS)  # the input was cleared
            # As a person would: the next turn once this reply has been spoken. The context meter
            # counts this turn's reply (the pipeline is done), the voice has stopped, and the
            # turn's event has ended (its export is written).
            expect(page.locator("#context-meter")).to_contain_text(f"of {2 * number} spoken turns",
                                                                   timeout=TURN_TIMEOUT_MS)
            page.wait_for_function("!window.es4rReplyVoice.speaking() && "
                                   "document.querySelector('#turn-progress').innerText.trim() === ''",
                                   timeout=TURN_TIMEOUT_MS)
            seen = page.evaluate("window.es4rPageTiming")
            turns.append({"turn": number, "clip": clip.name, "page_transcript_s": seen["heard_s"],
                          "page_first_words_s": seen["text_s"],
                          "page_voice_s": seen["voice_s"]})
            logger.info("turn %d: %s", number, page.locator("#page-timing").inner_text())
        record = _exported(page, workdir, len(clips))
        browser.close()
    for turn, saved in zip(turns, record["turns"]):
        timings = saved["result"]["timings"]
        turn.update(pipeline_first_words_s=timings.get("first_words"), pipeline_reply_text_s=timings.get("reply_text"),
                    pipeline_first_audio_s=timings.get("first_audio"), pipeline_total_s=timings.get("wall"),
                    tts_s=timings.get("tts"), reply=saved["result"].get("reply_text"), pipeline_timings=timings,
                    transcript=saved.get("transcript"))
        turn["around_pipeline_s"] = round(turn["page_first_words_s"] - turn["pipeline_first_words_s"], 2)
        turn["voice_around_pipeline_s"] = round(turn["page_voice_s"] - (turn["pipeline_first_audio_s"] or 0.0), 2)
    return turns


def _exported(page, workdir: Path, turns: int, tries: int = 40) -> dict:
    """The conversation.json of the page's export once it holds every turn (the export is
    written last in a turn, after the voice and the figures)."""
    for attempt in range(tries):
        with page.expect_download() as download:
            page.locator("#download").click()
        archive = workdir / f"conversation{attempt}.zip"
        download.value.save_as(archive)
        with zipfile.ZipFile(archive) as exported:
            record = json.loads(exported.read("conversation.json"))
        if len(record["turns"]) == turns and all("result" in t for t in record["turns"]):
            return record
        time.sleep(0.5)
    raise SystemExit(f"the export never held all {turns} turns")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=PRESETS, default="embedded")
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    parser.add_argument("--app-log", type=Path, help="keep the app's log here (it is otherwise deleted)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"needs Debian's chromium at {CHROMIUM} (bash scripts/setup.sh --test)")
    clips = [ROOT / "assets" / "examples" / f"{name}.wav" for name in CLIPS]
    with tempfile.TemporaryDirectory(prefix="es4r_timing_") as folder, \
            served_app(args.preset, Path(folder), args.app_log) as url:
        turns = measure(url, clips, Path(folder))
    header = ("turn", "page: transcript s", "page: first words s", "pipeline: first words s", "around the pipeline s", "page: voice s",
              "pipeline: first audio s", "voice around the pipeline s", "pipeline: reply text s", "pipeline: total s")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for t in turns:
        print(f"| {t['turn']} | {t['page_transcript_s']:.2f} | {t['page_first_words_s']:.2f} | {t['pipeline_first_words_s']:.2f} | "
              f"{t['around_pipeline_s']:.2f} | {t['page_voice_s']:.2f} | {t['pipeline_first_audio_s'] or 0:.2f} | "
              f"{t['voice_around_pipeline_s']:.2f} | {t['pipeline_reply_text_s']:.2f} | {t['pipeline_total_s']:.2f} |")
    for t in turns:  # what was answered: a reply's first sentence (or clause) is what the voice waits for
        print(f"turn {t['turn']} reply: {t['reply']!r}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"preset": args.preset, "turns": turns}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
