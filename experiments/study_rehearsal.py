"""The listening study rehearsed end to end, as an organiser and two annotators run it: a folder of
real evaluation pairs (`python -m es4r evaluate … --out DIR`) → `study create` → `study serve` →
two annotators in headless Chromium (one by mouse, one by the keyboard, each started its own way)
→ the server killed with `kill -9` twice while they work, restarted each time on the same port
→ `study export`. It checks that every click is in the export once, as clicked, on the system it
was shown for, and prints how long each restart took (kill → the pages answering again).

    python -m es4r evaluate --manifest corpus/heldout.jsonl --systems es4r cascade --limit 6 --out runs/eval_small
    python -m experiments.study_rehearsal --pairs runs/eval_small --out runs/rehearsal

Uses the browser test's page helpers (tests/test_study_browser.py), so it needs the same Debian
chromium and playwright."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from es4r.study.design import DEFAULT_CRITERIA
from es4r.study.store import StudyStore

REPO = Path(__file__).resolve().parents[1]


def _page_helpers():
    """The browser test's page helpers (tests/test_study_browser.py), loaded from their file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("study_page_helpers", REPO / "tests" / "test_study_browser.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pages = _page_helpers()

SYSTEMS = ("es4r", "cascade")
ANNOTATORS = ("ann-mouse", "ann-keys")
KILL_AFTER = (1, 3)  # items each annotator has submitted when the server is killed


def _organiser(*args: str) -> None:
    command = [sys.executable, "-m", "es4r", "study", *args]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, cwd=REPO, check=True)


async def _enter(browser, url: str, who: str):
    """A page for `who`: the mouse annotator clicks Start, the keyboard one presses Enter."""
    page = await (await browser.new_context(viewport={"width": 1280, "height": 1000})).new_page()
    page.set_default_timeout(pages.LOADED_MACHINE_TIMEOUT_MS)
    if who == "ann-mouse":
        await pages.start(page, url, who)
        return page
    await page.goto(url)
    await page.fill("#study-annotator-id textarea, #study-annotator-id input", who)
    await page.check("#study-consent input")
    await page.press("#study-annotator-id textarea, #study-annotator-id input", "Enter")
    await page.wait_for_selector("#study-progress .prose:has-text('Item 1 of')")
    return page


async def _rehearse(store: StudyStore, port: int, texts: dict[str, str]) -> tuple[list, list[dict]]:
    url = f"http://127.0.0.1:{port}/"
    server = pages.serve_study(store, port)
    clicks: list = []
    restarts: list[dict] = []
    async with pages.playwright_api.async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path=pages.CHROMIUM, headless=True, args=pages.LAUNCH_ARGS)
        open_pages = {who: await _enter(browser, url, who) for who in ANNOTATORS}
        done = {who: 0 for who in ANNOTATORS}
        for stop_at in (*KILL_AFTER, None):
            async def work(who: str) -> None:
                page = open_pages[who]
                while await page.is_visible("#study-progress") and (stop_at is None or done[who] < stop_at):
                    await pages.answer_item(page, who, texts, clicks, use_keys=who == "ann-keys")
                    done[who] += 1
            await asyncio.gather(*(work(who) for who in ANNOTATORS))
            if stop_at is None:
                break
            killed = time.monotonic()
            server.send_signal(signal.SIGKILL)
            server.wait()
            for page in open_pages.values():
                await page.wait_for_selector("#study-connection:visible", timeout=pages.UNLOCK_TIMEOUT_MS)
            started = time.monotonic()
            server = pages.serve_study(store, port)  # the same command, the same port, at once
            answering = time.monotonic()
            for who, page in open_pages.items():
                await page.wait_for_selector("#study-progress .prose:has-text('page reopened')",
                                             timeout=pages.UNLOCK_TIMEOUT_MS * 2)
                shown = await page.inner_text("#study-progress .prose")
                assert shown.startswith(f"Item {done[who] + 1} of"), (who, shown)
            restarts.append({"after_items": stop_at, "kill_to_answering_s": round(answering - killed, 1),
                             "restart_command_s": round(answering - started, 1),
                             "kill_to_pages_back_s": round(time.monotonic() - killed, 1)})
        for who, page in open_pages.items():
            assert "Thank you" in await page.inner_text("#study-done"), who
        await browser.close()
    pages.stop(server)
    return clicks, restarts


def _check_export(out: Path, clicks: list, items: int) -> dict:
    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    by_who = {who: sorted((r for r in rows if r["annotator_id"] == who), key=lambda r: r["position"])
              for who in ANNOTATORS}
    for who, answered in by_who.items():
        assert len(answered) == items and len({r["item_id"] for r in answered}) == items, (who, len(answered))
    criteria = [c.name for c in DEFAULT_CRITERIA]
    for who in ANNOTATORS:
        mine = [click for click in clicks if click[0] == who]
        assert len(mine) == items * len(criteria), (who, len(mine))
        for row, start in zip(by_who[who], range(0, len(mine), len(criteria))):
            for (_, _, criterion, presented, system_a) in mine[start:start + len(criteria)]:
                assert row["system_A"] == system_a and row["choices_A_over_B"][criterion] == presented, (who, row)
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "tallies.png").stat().st_size > 0 and (out / "tallies.csv").exists()
    return {"answers": len(rows), "judgements": sum(len(r["choices_A_over_B"]) for r in rows),
            "clicks": len(clicks), "tallies": summary["tallies"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", required=True, help="an evaluation folder with samples.jsonl")
    parser.add_argument("--out", required=True)
    parser.add_argument("--samples", type=int, default=6)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    db = out / "study.db"
    if db.exists():
        db.unlink()
    _organiser("create", "--pairs", args.pairs, "--systems", *SYSTEMS, "--samples", str(args.samples),
               "--annotators-per-item", "2", "--out", str(db))
    store = StudyStore(db)
    texts = {json.loads(r["replies_json"])[name]["text"]: name
             for r in store.rows("SELECT replies_json FROM items") for name in SYSTEMS}
    items = len(store.rows("SELECT item_id FROM items"))
    pages.SYSTEMS = SYSTEMS  # the helpers look for these names on every page
    named = {"nova": SYSTEMS[0], "orbit": SYSTEMS[1], "tie": "tie"}  # the test's policies, our systems
    pages.POLICIES = {who: [named[p] for p in pages.POLICIES[who]] for who in ANNOTATORS}
    clicks, restarts = asyncio.run(_rehearse(store, pages.free_port(), texts))
    _organiser("export", "--db", str(db), "--out", str(out / "export"))
    report = {"items": items, "restarts": restarts, **_check_export(out / "export", clicks, items)}
    (out / "rehearsal.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
