"""The study in the browser: a consent screen, then one blinded item at a time (the
conversation so far, reply A and reply B, Win/Tie/Lose per criterion), and an organiser
tab behind a code for tallies, chart and downloads.

Everything per annotator lives in ``gr.State`` and the database; the page only ever gets
text and loudness-normalised audio for "A" and "B" (files named by content hash), never
which system is which. Answers unlock once both replies have played to the end.
"""

from __future__ import annotations

import html
import logging
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr
import pandas as pd

from es4r.study.design import LOSE, TIE, WIN
from es4r.study.export import export_study, summarise, tally_table
from es4r.study.store import (ID_RULE, SIDES, NotListened, PresentedItem, StudyError, StudyStore,
                              normalise_annotator_id,
                              stimuli_dir_for)

logger = logging.getLogger(__name__)

CHOICE_LABELS = [("A is better", WIN), ("Tie", TIE), ("B is better", LOSE)]
ROLE_NAMES = {"speaker": "user", "listener": "assistant"}  # chat bubbles: left/right
CONSENT = """
### Welcome to this listening study

You will read and hear short conversations, each followed by **two possible replies, A and B**.
For each question, choose whether **A is better**, they are **tied**, or **B is better**.

* **All voices in this study are synthetic** — produced by computer text-to-speech, not recorded
  from real people.
* Please use headphones in a quiet place. Each reply must be played **to the end** before the
  questions unlock; you may replay as often as you like.
* Your answers are saved the moment you submit each item, under the ID you enter below. Do not
  use your name or e-mail. You can stop at any time and come back later with the same ID.
* Taking part is voluntary. By continuing you agree that your anonymous answers may be used for
  research.
"""
KEYS_HELP = ("Keyboard: **1** A is better · **2** Tie · **3** B is better (fills the next open "
             "question) · **J** / **K** play A / B · **Enter** save and next")
LOCKED_NOTE = "**Locked:** play **both** replies to the end to unlock the questions."
UNLOCKED_NOTE = "**Unlocked:** both replies heard — answer every question, then save."
CSS = """
#study-context button[aria-label="Clear"], #study-context button[aria-label="Share"] {display: none}
#study-replies button.skip, #study-replies button.rewind, #study-replies button.playback {display: none}
#study-replies .reply-text {min-height: 3.5em; font-size: 1.1em}
.study-criterion .wrap {gap: 0.5em}
.study-criterion .info-text, .study-criterion .has-info {color: #3f3f46}  /* Gradio's grey is 1.9:1 on white */
#study-progress {font-size: 1.05em}
#study-context .waveform-wrapper {max-height: 40px; overflow: hidden}  /* a context clip is one line, not 256 px */
#study-connection {position: sticky; top: 0; z-index: 1000; padding: 0.8em 1em; background: #8a1c1c;
                   color: #ffffff; font-weight: 600}
body.study-offline #study-replies, body.study-offline .study-criterion, body.study-offline #study-next,
body.study-offline #study-pause {pointer-events: none; opacity: 0.45}
"""
CONNECTION_JS = (Path(__file__).resolve().parent / "connection.js").read_text()
# A new item starts at the top: its progress line in view, then the conversation.
TOP_OF_ITEM_JS = "() => { window.scrollTo({top: 0}); }"
SHORTCUTS_JS = """
if (!window.studyKeys) {
  window.studyKeys = true;
  // One clip at a time: starting any clip pauses the others. The players keep their media
  // elements off the page, so this wraps play() itself rather than listening on the DOM.
  window.studyMedia = new Set();
  const play = HTMLMediaElement.prototype.play;
  HTMLMediaElement.prototype.play = function (...args) {
    for (const other of window.studyMedia) if (other !== this && !other.paused) other.pause();
    window.studyMedia.add(this);
    return play.apply(this, args);
  };
  const choiceForKey = {"1": "win", "2": "tie", "3": "lose"};
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (target && (target.tagName === "TEXTAREA" ||
        (target.tagName === "INPUT" && target.type !== "radio"))) return;
    if (document.body.classList.contains("study-offline")) return;  // nothing can be saved now
    const key = event.key.toLowerCase();
    if (key in choiceForKey) {
      const open = [...document.querySelectorAll(".study-criterion")]
        .find((group) => !group.querySelector("input:checked"));
      const input = open && open.querySelector(`input[value="${choiceForKey[key]}"]`);
      if (input && !input.disabled) { input.click(); event.preventDefault(); }
    } else if (key === "j" || key === "k") {
      const side = key === "j" ? "a" : "b";
      const button = document.querySelector(`#study-audio-${side} button.play-pause-button`);
      if (button) { button.click(); event.preventDefault(); }
    } else if (key === "enter") {
      const next = document.querySelector("#study-next");
      if (next && !next.disabled) { next.click(); event.preventDefault(); }
    }
  });
}
"""


@dataclass(frozen=True)
class AnnotatorPlace:
    """One browser's place in the study (kept in gr.State, never shared)."""

    annotator_id: str = ""
    item_id: int | None = None
    heard: frozenset[str] = frozenset()  # sides played to the end on this item
    context: tuple[dict, ...] = ()  # the open item's chat messages, drawn by fill_context


def study_allowed_paths(db_path: str | Path) -> list[str]:
    """Folders the server must be allowed to serve (the normalised stimuli)."""
    return [str(stimuli_dir_for(db_path))]


def _updates(count: int, **changes) -> list[dict]:
    """`count` separate update dicts (Gradio consumes each one, so never repeat one object)."""
    return [gr.update(**changes) for _ in range(count)]


RECOGNISED_NOTE = "(words recognised automatically; no transcript of this turn exists)"
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def _literal(text: str) -> str:
    """Markdown that shows `text` exactly as written: no tags run, no emphasis or lists."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", html.escape(text, quote=False))


def _chat(item: PresentedItem) -> list[dict]:
    """The conversation as said (the pairs file's transcript); recogniser output is labelled."""
    messages = []
    for turn in item.context:
        role = ROLE_NAMES[turn["role"]]
        words = turn["utterance"] + (f"\n\n{RECOGNISED_NOTE}" if turn.get("recognised") else "")
        messages.append({"role": role, "content": words})
        if turn["audio"]:
            messages.append({"role": role, "content": {"path": turn["audio"], "mime_type": "audio/wav"}})
    return messages


def build_study_tab(db_path: str | Path, page: gr.Blocks) -> None:
    """Add the annotator view and the organiser view inside `page` (the current gr.Blocks)."""
    store = StudyStore(db_path)
    gr.set_static_paths(study_allowed_paths(db_path))
    criteria = store.spec.criteria
    session = gr.State(AnnotatorPlace())
    gr.HTML("", js_on_load=SHORTCUTS_JS + CONNECTION_JS, head=f"<style>{CSS}</style>", elem_id="study-shortcuts")

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
            context = gr.Chatbot(label="The conversation so far", height=None, min_height=120,
                                 max_height=None, buttons=[], allow_file_downloads=False,  # all of it, no inner scroll
                                 render_markdown=False,  # the words as said, never formatted or run as HTML
                                 feedback_options=None, elem_id="study-context")
            with gr.Row(elem_id="study-replies", equal_height=True):
                with gr.Column(variant="panel"):
                    gr.Markdown("### Reply A")
                    text_a = gr.Markdown(elem_classes="reply-text", elem_id="study-text-a")
                    audio_a = gr.Audio(type="filepath", interactive=False, buttons=[],
                                       show_label=False, elem_id="study-audio-a")
                with gr.Column(variant="panel"):
                    gr.Markdown("### Reply B")
                    text_b = gr.Markdown(elem_classes="reply-text", elem_id="study-text-b")
                    audio_b = gr.Audio(type="filepath", interactive=False, buttons=[],
                                       show_label=False, elem_id="study-audio-b")
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
    item_outputs = [session, *views, progress, context, text_a, audio_a, text_b, audio_b, note,
                    next_button, done_text, *radios]

    def show(who: str, message: str = "") -> list:
        """Everything on screen for this annotator's next unanswered item (or the end)."""
        item = store.next_item(who)
        done = store.progress(who)
        if item is None:
            finished = (f"### Thank you, {who}!\n\nYou have answered all {done.total} items; "
                        "your answers are saved. You can close this page.")
            return [AnnotatorPlace(who), gr.update(visible=False), gr.update(visible=False),
                    gr.update(visible=True)] + _updates(8) + [finished] + \
                _updates(len(radios))
        status = (f"**Item {done.done + 1} of {done.total}** · annotator `{who}`"
                  + (f" · {message}" if message else ""))
        return ([AnnotatorPlace(who, item.item_id, context=tuple(_chat(item))), gr.update(visible=False),
                 gr.update(visible=True), gr.update(visible=False), status, [], _literal(item.text_a), item.audio_a,
                 _literal(item.text_b), item.audio_b, LOCKED_NOTE, gr.update(interactive=False), ""]
                + _updates(len(radios), choices=CHOICE_LABELS, value=None, interactive=False))

    def on_start(who: str, agreed: bool) -> list:
        who = normalise_annotator_id(who)
        if not agreed:
            raise gr.Error("Please tick the consent box to take part.")
        try:
            done = store.register(who)
        except StudyError as error:
            raise gr.Error(html.escape(str(error))) from error  # it may quote what was typed; shown as text
        return show(who, f"welcome back — resuming after {done.done} saved" if done.done else "")

    def on_play(state: AnnotatorPlace, side: str) -> None:
        if state.item_id is not None:
            store.log_play(state.annotator_id, state.item_id, side, "play")

    def on_ended(state: AnnotatorPlace, side: str) -> list:
        if state.item_id is None:
            return [state, gr.update(), gr.update()] + _updates(len(radios))
        store.log_play(state.annotator_id, state.item_id, side, "ended")
        heard = store.listened(state.annotator_id, state.item_id)
        state = replace(state, heard=frozenset(heard))
        if heard != set(SIDES):
            missing = " and ".join(sorted(set(SIDES) - heard))
            return [state, f"**Locked:** now play reply **{missing}** to the end — the questions open once "
                           "both replies have been heard in full.", gr.update()] + \
                _updates(len(radios))
        return [state, UNLOCKED_NOTE, gr.update(interactive=True)] + \
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

    def on_pause(state: AnnotatorPlace) -> list:
        """Stop for now: says exactly what is saved (every submitted item; not the open one's
        clicks) and offers the start form again, ID filled in, to resume at once or later."""
        if not state.annotator_id:
            return [state, gr.update(visible=True), gr.update(visible=False), gr.update(visible=False), "", gr.update()]
        done = store.progress(state.annotator_id)
        message = (f"### Break — your {done.done} submitted item(s) of {done.total} are saved\n\n"
                   "Answers on the item that was open were **not** saved; it will be shown again. "
                   f"To continue, press **Start / resume** with the ID `{state.annotator_id}` — now or "
                   "whenever you come back.")
        return [AnnotatorPlace(), gr.update(visible=True), gr.update(visible=False), gr.update(visible=True), message,
                state.annotator_id]

    def fill_context(state: AnnotatorPlace) -> list[dict]:
        """The open item's conversation, drawn after `show` emptied it: a chat player kept
        from the previous item would otherwise go on playing that item's clip (measured in
        Chromium: item 3 played item 2's context clip)."""
        return list(state.context)

    def on_resume(state: AnnotatorPlace, request: gr.Request) -> list:
        """Page opened as ?resume=ID (connection.js, after a lost connection): an annotator who
        has started goes straight to their first unsaved item; anything else is the start form."""
        who = normalise_annotator_id(request.query_params.get("resume"))
        if not who or not store.progress(who).total:
            return [state] + _updates(len(item_outputs) - 1)
        logger.info("annotator %s resumed after a lost connection", who)
        return show(who, "connection restored — resuming at your first unsaved item")

    page.load(on_resume, [session], item_outputs, show_progress="hidden").success(
        fill_context, [session], [context])
    for event in (start.click, annotator_box.submit):
        # No progress overlay: a refused start (bad ID, no consent) must leave the form usable;
        # Gradio would otherwise lay its error state over every output, the form included.
        event(on_start, [annotator_box, agree], item_outputs, show_progress="hidden").success(
            fill_context, [session], [context]).then(None, js=TOP_OF_ITEM_JS)
    for side, audio in zip(SIDES, (audio_a, audio_b)):
        audio.play(lambda state, side=side: on_play(state, side), [session], None,
                   queue=False)
        audio.stop(lambda state, side=side: on_ended(state, side), [session],
                   [session, note, next_button, *radios], queue=False)
    next_button.click(on_next, [session, *radios], item_outputs, show_progress="hidden").success(
        fill_context, [session], [context]).then(None, js=TOP_OF_ITEM_JS)
    pause.click(on_pause, [session], [session, *views, done_text, annotator_box])
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
        out = Path(tempfile.mkdtemp(prefix="es4r_study_export_"))
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

    build_study_app(sys.argv[1]).launch(allowed_paths=study_allowed_paths(sys.argv[1]))
