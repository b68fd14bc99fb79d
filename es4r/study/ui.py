"""The study in the browser: a consent screen, then one blinded item at a time (the
conversation so far, reply A and reply B, Win/Tie/Lose per criterion), and an organiser
tab behind a code for tallies, chart and downloads.

Everything per annotator lives in ``gr.State`` and the database; the page only ever gets
text and loudness-normalised audio for "A" and "B", fetched by opaque token (es4r.study.serving),
never which system is which or where a file lies. Answers unlock once every part of both
replies has played (es4r.study.listening); the page's address says where the annotator is,
so it reopens there after a reload or a server restart (connection.js).
"""

from __future__ import annotations

import html
import json
import logging
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr
import pandas as pd

from es4r.study.design import LOSE, TIE, WIN
from es4r.study.export import export_study, summarise, tally_table
from es4r.study.listening import describe
from es4r.study.serving import CLIP_PATH
from es4r.study.store import (ID_RULE, PLAY_EVENTS, SIDES, NotListened, PresentedItem, StudyError, StudyStore,
                              normalise_annotator_id)

logger = logging.getLogger(__name__)

CHOICE_LABELS = [("A is better", WIN), ("Tie", TIE), ("B is better", LOSE)]
CONSENT = """
### Welcome to this listening study

You will read and hear short conversations, each followed by **two possible replies, A and B**.
For each question, choose whether **A is better**, they are **tied**, or **B is better**.

* **All voices in this study are synthetic** — produced by computer text-to-speech, not recorded
  from real people.
* Please use headphones in a quiet place. Every part of each reply must be played before the
  questions unlock (skipping ahead does not count); you may replay as often as you like.
* Your answers are saved the moment you submit each item, under the ID you enter below. Do not
  use your name or e-mail. You can stop at any time and come back later with the same ID.
* Taking part is voluntary. By continuing you agree that your anonymous answers may be used for
  research.
"""
KEYS_HELP = ("Keyboard: **1** A is better · **2** Tie · **3** B is better (fills the next open "
             "question) · **J** / **K** play A / B · **Enter** save and next")
LOCKED_NOTE = "**Locked:** play **every part of both** replies to unlock the questions."
UNLOCKED_NOTE = "**Unlocked:** both replies heard — answer every question, then save."
HELP_GREY = "#3f3f46"  # 10.4:1 on white; Gradio's own grey for help text is 1.9:1
CSS = f"""
#study-replies .reply-text {{min-height: 3.5em; font-size: 1.1em}}
#study-replies audio, #study-context audio {{width: 100%}}
.study-criterion .wrap {{gap: 0.5em}}
.gradio-container .info-text, .gradio-container .has-info, .gradio-container [data-testid="block-info"] {{color: {HELP_GREY}}}
.gradio-container textarea::placeholder, .gradio-container input::placeholder {{color: #52525b; opacity: 1}}
#study-progress {{font-size: 1.05em}}
#study-context .study-turn {{margin: 0.4em 0; padding: 0.5em 0.8em; border-radius: 0.6em; max-width: 80%}}
#study-context .study-speaker {{background: #f4f4f5}}
#study-context .study-listener {{background: #e0e7ff; margin-left: auto}}
#study-context .study-words {{white-space: pre-wrap; margin: 0 0 0.3em; color: #18181b}}
#study-context .study-note {{font-size: 0.9em; color: {HELP_GREY}; margin: 0 0 0.3em}}
#study-place, #study-reporter {{display: none}}
#study-connection {{position: fixed; top: 0; left: 0; right: 0; z-index: 2147483647; padding: 0.8em 1em;
                   background: #8a1c1c; color: #ffffff; font-weight: 600}}  /* above Gradio's own toasts */
body.study-offline gradio-app {{opacity: 0.45}}
"""
STUDY_DIR = Path(__file__).resolve().parent
PAGE_JS = (STUDY_DIR / "player.js").read_text() + (STUDY_DIR / "connection.js").read_text()
# The channel the players report through: the page calls window.studyReport(report).
REPORTER_JS = "window.studyReport = (report) => { props.value = JSON.stringify(report); trigger('input'); };"
# A new item starts at the top: its progress line in view, then the conversation.
TOP_OF_ITEM_JS = "() => { window.scrollTo({top: 0}); }"


@dataclass(frozen=True)
class AnnotatorPlace:
    """One browser's place in the study (kept in gr.State, never shared)."""

    annotator_id: str = ""
    item_id: int | None = None
    heard: frozenset[str] = frozenset()  # sides heard in full on this item


def _updates(count: int, **changes) -> list[dict]:
    """`count` separate update dicts (Gradio consumes each one, so never repeat one object)."""
    return [gr.update(**changes) for _ in range(count)]


RECOGNISED_NOTE = "(words recognised automatically; no transcript of this turn exists)"
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def _literal(text: str) -> str:
    """Markdown that shows `text` exactly as written: no tags run, no emphasis or lists."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", html.escape(text, quote=False))


def _player(token: str | None, side: str | None = None) -> str:
    """A native player for one clip, fetched by token; a reply's player says its side (its
    stretches are reported). No download or speed menu: the lock counts time as heard."""
    if token is None:
        return ""
    side_attribute = f' data-side="{side}"' if side else ""
    return (f'<audio controls preload="auto" controlslist="nodownload noplaybackrate" '
            f'data-clip="{html.escape(token)}"{side_attribute} src="{CLIP_PATH}/{html.escape(token)}"></audio>')


def _conversation(item: PresentedItem) -> str:
    """The conversation as said (the pairs file's transcript), each turn's words shown literally
    and its clip by token; words from the speech recogniser say so."""
    turns = []
    for turn in item.context:
        note = f'<p class="study-note">{RECOGNISED_NOTE}</p>' if turn.get("recognised") else ""
        turns.append(f'<div class="study-turn study-{turn["role"]}"><p class="study-words">'
                     f'{html.escape(turn["utterance"])}</p>{note}{_player(turn["clip"])}</div>')
    return "".join(turns)


def _place(mode: str = "", who: str = "") -> str:
    """Where this page is, for its address (connection.js): 'resume' or 'break' with an ID."""
    return f'<span data-place="{mode}" data-annotator="{html.escape(who)}"></span>'


def _lock_note(store: StudyStore, state: AnnotatorPlace) -> tuple[str, bool]:
    """The lock's line for the page (which reply still has to be heard, and why) and whether
    the questions are open."""
    hearing = store.hearing(state.annotator_id, state.item_id)
    if all(part.complete for part in hearing.values()):
        return UNLOCKED_NOTE, True
    lines = " ".join(describe(side, hearing[side]) for side in SIDES)
    return f"**Locked:** {lines} The questions open once every part of both replies has played.", False


def build_study_tab(db_path: str | Path, page: gr.Blocks) -> None:
    """Add the annotator view and the organiser view inside `page` (the current gr.Blocks)."""
    store = StudyStore(db_path)
    criteria = store.spec.criteria
    session = gr.State(AnnotatorPlace())
    gr.HTML("", js_on_load=PAGE_JS, head=f"<style>{CSS}</style>", elem_id="study-shortcuts")
    place = gr.HTML("", elem_id="study-place")
    reporter = gr.HTML("", html_template="", js_on_load=REPORTER_JS, elem_id="study-reporter")

    with gr.Tab("Annotate"):
        with gr.Column(visible=True) as consent_view:
            gr.Markdown(CONSENT)
            annotator_box = gr.Textbox(label="Annotator ID", placeholder="e.g. rater07", info=f"ID: {ID_RULE}.",
                                       elem_id="study-annotator-id", max_lines=1)
            agree = gr.Checkbox(label="I have read the above and agree to take part",
                                elem_id="study-consent")
            start = gr.Button("Start / resume", variant="primary", elem_id="study-start")
        with gr.Column(visible=False) as task_view:
            progress = gr.Markdown(elem_id="study-progress")
            gr.Markdown("#### The conversation so far")
            context = gr.HTML("", elem_id="study-context")
            with gr.Row(elem_id="study-replies", equal_height=True):
                with gr.Column(variant="panel"):
                    gr.Markdown("### Reply A")
                    text_a = gr.Markdown(elem_classes="reply-text", elem_id="study-text-a")
                    audio_a = gr.HTML("", elem_id="study-audio-a")
                with gr.Column(variant="panel"):
                    gr.Markdown("### Reply B")
                    text_b = gr.Markdown(elem_classes="reply-text", elem_id="study-text-b")
                    audio_b = gr.HTML("", elem_id="study-audio-b")
            note = gr.Markdown(LOCKED_NOTE, elem_id="study-lock-note")
            radios = []
            with gr.Row():
                for kind, title in (("text", "About the words"), ("speech", "About the voice")):
                    with gr.Column():
                        gr.Markdown(f"#### {title}")
                        for index, criterion in enumerate(criteria):
                            if criterion.kind == kind:
                                radios.append((index, gr.Radio(
                                    CHOICE_LABELS, label=criterion.name, info=criterion.question,
                                    interactive=False, elem_classes="study-criterion",
                                    elem_id=f"study-crit-{index}")))
            radios = [radio for _, radio in sorted(radios, key=lambda pair: pair[0])]
            gr.Markdown(KEYS_HELP)
            with gr.Row():
                pause = gr.Button("Take a break", elem_id="study-pause")
                next_button = gr.Button("Save and next", variant="primary", interactive=False,
                                        elem_id="study-next")
        with gr.Column(visible=False) as done_view:
            done_text = gr.Markdown(elem_id="study-done")

    views = [consent_view, task_view, done_view]
    item_outputs = [session, place, *views, progress, context, text_a, audio_a, text_b, audio_b, note,
                    next_button, done_text, *radios]
    break_outputs = [session, place, *views, done_text, annotator_box]

    def show(who: str, message: str = "") -> list:
        """Everything on screen for this annotator's next unanswered item (or the end)."""
        item = store.next_item(who)
        done = store.progress(who)
        if item is None:
            finished = (f"### Thank you, {who}!\n\nYou have answered all {done.total} items; "
                        "your answers are saved. You can close this page.")
            return [AnnotatorPlace(who), _place("resume", who), gr.update(visible=False), gr.update(visible=False),
                    gr.update(visible=True)] + _updates(8) + [finished] + _updates(len(radios))
        status = (f"**Item {done.done + 1} of {done.total}** · annotator `{who}`"
                  + (f" · {message}" if message else ""))
        # What was heard of it before (a reload, a restart, reports taken before this page had
        # its place) counts: the lock is read from the store, not started over.
        place = AnnotatorPlace(who, item.item_id)
        hearing = store.hearing(who, item.item_id)
        note, unlocked = _lock_note(store, place)
        note = note if any(part.heard for part in hearing.values()) else LOCKED_NOTE  # nothing played yet: the short line
        heard = frozenset(side for side, part in hearing.items() if part.complete)
        return ([replace(place, heard=heard), _place("resume", who), gr.update(visible=False),
                 gr.update(visible=True), gr.update(visible=False), status, _conversation(item),
                 _literal(item.text_a), _player(item.clip_a, "A"), _literal(item.text_b), _player(item.clip_b, "B"),
                 note,
                 gr.update(interactive=unlocked), ""]
                + _updates(len(radios), choices=CHOICE_LABELS, value=None, interactive=unlocked))

    def on_start(who: str, agreed: bool) -> list:
        who = normalise_annotator_id(who)
        if not agreed:
            raise gr.Error("Please tick the consent box to take part.")
        try:
            done = store.register(who)
        except StudyError as error:
            raise gr.Error(html.escape(str(error))) from error  # it may quote what was typed; shown as text
        return show(who, f"welcome back — resuming after {done.done} saved" if done.done else "")

    def on_report(state: AnnotatorPlace, raw: str) -> list:
        """A player's log for one clip (player.js): kept once per event; the lock's line and
        the questions follow what has now been heard of the open item."""
        # Nothing changes, the place included: this call may have begun before the page's place
        # was set (a report racing the resume), and writing its old place back would strand the page.
        unchanged = [gr.skip() for _ in range(3 + len(radios))]
        try:
            report = json.loads(raw)
            owner = store.clip(str(report["clip"]))
            events = [(str(e["event"]), float(e["from"]), None if e["to"] is None else float(e["to"]), int(e["seq"]),
                       float(e["at"])) for e in report["events"]]
        except (ValueError, KeyError, TypeError):
            logger.warning("unreadable play report from annotator %s", state.annotator_id)
            return unchanged
        if owner is None or owner.annotator_id != state.annotator_id or owner.part not in SIDES:
            return unchanged  # not this page's annotator, or not a reply
        for event, from_s, to_s, seq, played_at in events:
            if event in PLAY_EVENTS:
                store.log_play(owner.annotator_id, owner.item_id, owner.part, event, from_s=from_s,
                               to_s=to_s, page=str(report.get("page", ""))[:64], seq=seq, played_at=played_at)
        if owner.item_id != state.item_id:
            return unchanged  # a late report of an item already saved
        text, unlocked = _lock_note(store, state)
        heard = frozenset(side for side, part in store.hearing(state.annotator_id, state.item_id).items()
                          if part.complete)
        if not unlocked:
            return [replace(state, heard=heard), text, gr.update()] + _updates(len(radios))
        return [replace(state, heard=heard), text, gr.update(interactive=True)] + \
            _updates(len(radios), interactive=True)

    def on_next(state: AnnotatorPlace, *answers: str | None) -> list:
        if state.item_id is None:
            raise gr.Error("No item is open; press Start first.")
        missing = [c.name for c, answer in zip(criteria, answers) if answer is None]
        if missing:
            raise gr.Error(f"Please answer: {', '.join(missing)}.")
        try:
            saved = store.submit(state.annotator_id, state.item_id,
                                 {c.name: answer for c, answer in zip(criteria, answers)})
        except NotListened as error:
            raise gr.Error(html.escape(str(error))) from error  # it may quote what was typed; shown as text
        return show(state.annotator_id, "saved" if saved else "that item was already saved")

    def on_break(who: str) -> list:
        """The break screen: says exactly what is saved (every submitted item; not the open
        one's clicks) and offers the start form again, ID filled in, to resume now or later."""
        done = store.progress(who)
        message = (f"### Break — your {done.done} submitted item(s) of {done.total} are saved\n\n"
                   "Answers on the item that was open were **not** saved; it will be shown again. "
                   f"To continue, press **Start / resume** with the ID `{who}` — now or "
                   "whenever you come back.")
        return [AnnotatorPlace(), _place("break", who), gr.update(visible=True), gr.update(visible=False),
                gr.update(visible=True), message, who]

    def on_pause(state: AnnotatorPlace) -> list:
        if not state.annotator_id:
            return [state, gr.update(), gr.update(visible=True), gr.update(visible=False), gr.update(visible=False),
                    "", gr.update()]
        return on_break(state.annotator_id)

    def on_load(state: AnnotatorPlace, request: gr.Request) -> list:
        """A page opened (or reloaded, by anyone, after a restart too) at ?resume=ID goes to that
        annotator's first unsaved item, at ?break=ID to their break screen; else the start form."""
        unchanged = [state] + _updates(len(item_outputs) - 1) + [gr.update()]
        for mode in ("resume", "break"):
            who = normalise_annotator_id(request.query_params.get(mode))
            if who and store.progress(who).total:
                logger.info("annotator %s: page reopened at %s", who, mode)
                if mode == "break":
                    session_, place_, *views_, done_, box_ = on_break(who)
                    return ([session_, place_, *views_] + _updates(8) + [done_]  # progress … next button
                            + _updates(len(radios)) + [box_])
                return show(who, "page reopened — resuming at your first unsaved item") + [gr.update()]
        return unchanged

    page.load(on_load, [session], item_outputs + [annotator_box], show_progress="hidden")
    for event in (start.click, annotator_box.submit):
        # No progress overlay: a refused start (bad ID, no consent) must leave the form usable;
        # Gradio would otherwise lay its error state over every output, the form included.
        event(on_start, [annotator_box, agree], item_outputs, show_progress="hidden").success(
            None, js=TOP_OF_ITEM_JS)
    # always_last: a report made while the previous one is still on its way is sent once that
    # one is answered (with the page's whole log by then). Gradio's default for .input, "once",
    # drops it, and a reply's last report ("ended") was lost whenever its "play" report took
    # longer than the clip to answer on a busy server — nothing came after it, so the lock stayed.
    reporter.input(on_report, [session, reporter], [session, note, next_button, *radios], queue=False,
                   show_progress="hidden", trigger_mode="always_last")
    next_button.click(on_next, [session, *radios], item_outputs, show_progress="hidden").success(
        None, js=TOP_OF_ITEM_JS)
    pause.click(on_pause, [session], break_outputs, show_progress="hidden")
    _organiser_tab(store)


def _organiser_tab(store: StudyStore) -> None:
    with gr.Tab("Organiser"):
        gr.Markdown("Results de-randomised to the real systems. Enter the organiser code "
                    "printed when the study was created.")
        with gr.Row():
            code = gr.Textbox(label="Organiser code", type="password", elem_id="study-code",
                              max_lines=1)
            refresh = gr.Button("Show results", variant="primary", elem_id="study-refresh")
        table = gr.Dataframe(label="Win / Tie / Lose (%) and Fleiss' kappa", interactive=False,
                             elem_id="study-tallies")
        chart = gr.Image(label="Preference chart", type="filepath", interactive=False)
        annotators = gr.Dataframe(label="Annotators (gold checks)", interactive=False)
        with gr.Row():
            downloads = [gr.DownloadButton(label, visible=False, elem_id=f"study-download-{key}")
                         for key, label in (("csv", "Answers (CSV)"), ("jsonl", "Answers (JSONL)"),
                                            ("tallies", "Tallies (CSV)"))]

    def on_refresh(given: str) -> list:
        if given != store.spec.organiser_code:
            raise gr.Error("Wrong organiser code.")
        out = Path(tempfile.mkdtemp(prefix="study_export_"))
        paths = export_study(store.db_path, out)
        results = summarise(store)
        people = [{"annotator": a.annotator_id, "seed": a.seed, "answered": a.answered,
                   "gold correct": f"{a.gold_correct}/{a.gold_checked}", "flagged": a.flagged}
                  for a in results.annotators]
        return [pd.DataFrame(tally_table(results)), str(paths.chart_png), pd.DataFrame(people),
                gr.update(value=str(paths.answers_csv), visible=True),
                gr.update(value=str(paths.answers_jsonl), visible=True),
                gr.update(value=str(paths.tallies_csv), visible=True)]

    outputs = [table, chart, annotators, *downloads]
    refresh.click(on_refresh, [code], outputs)
    code.submit(on_refresh, [code], outputs)


def build_study_app(db_path: str | Path) -> gr.Blocks:
    """The standalone study app (annotate + organiser tabs)."""
    title = StudyStore(db_path).spec.title  # organiser-set and neutral: nothing names a system
    with gr.Blocks(title=title) as app:
        gr.Markdown(f"# {title}")
        build_study_tab(db_path, app)
    return app


if __name__ == "__main__":
    import sys

    from es4r.study.serving import launch_study

    launch_study(build_study_app(sys.argv[1]), sys.argv[1], None, 7861, 16)
