"""ES4R Studio: talk to ES4R turn by turn and see why it answered the way it did.

This file only builds the UI, calls `es4r.pipeline.ES4RPipeline` and formats its results
(figures and text live in es4r/ui). The model is loaded once per process, lazily; each
visitor's conversation lives in `gr.State`, so browser sessions never share a history.

Run: `python app.py --preset embedded` (or ES4R_PRESET=tiny|embedded|paper)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np

from es4r.audio import AudioError, warm_up_audio
from es4r.config import PRESETS, SettingError
from es4r.conversation import ASSISTANT, AttentionMaps, Turn
from es4r.hands_free import EarlyTranscripts, MicrophoneStream
from es4r.pipeline import ES4RPipeline, PipelineError
from es4r.presets import public_settings
from es4r.startup_errors import EXIT_STATUS, startup_errors, startup_line
from es4r.turn_detector import SpeechPaused, SpeechStarted, TurnEnded
from es4r.turn_events import Answered, Heard, Progress, Spoken, Writing, Written
from es4r.ui import plots
from es4r.ui.archive import write_archive
from es4r.ui.format import (SYNTHETIC_VOICE_NOTE, chat_messages, context_markdown, latency_table,
                            status_line, status_markdown, strategy_markdown)
from es4r.ui.served_files import ServedFolder
from es4r.ui.session import Session
from es4r.voice.base import heard_text

logger = logging.getLogger(__name__)

PRESET_ENV = "ES4R_PRESET"
DEFAULT_PRESET = "embedded"
EXAMPLES_DIR = Path(__file__).resolve().parent / "assets" / "examples"
GENERIC_ERROR = ("Something went wrong on our side while answering this turn. "
                 "Your conversation so far is kept; please try again.")
INT16_SCALE = 32767
CHAT_HEIGHT = 230  # the record button and the examples stay in the first screen at 1440 x 900
ARCHIVES = ServedFolder("es4r_archives_", keep_s=3600)  # an export link stays valid this long
SENTENCES = ServedFolder("es4r_sentences_", keep_s=600)  # each spoken sentence, as it is sent
HEARD = ServedFolder("es4r_heard_", keep_s=600)  # each hands-free turn, as the detector cut it
# hands-free turns transcribed in their pause (its worker thread starts with the first one)
EARLY_TRANSCRIPTS = EarlyTranscripts(lambda path: get_pipeline().transcribe_early(path))
HANDS_FREE_CHUNK_S = 0.2  # the microphone's stream sends this much audio at a time
# Every queued event that writes the conversation (a sent turn, a hands-free turn, a reply cut
# off by the next turn) runs in this one queue, one at a time, in the order it was sent.
TURN_QUEUE = "turn"
STREAM_INTERVAL_S = 0.1  # at most ten page updates a second while the reply is written
STRATEGY_TAB, ATTENTION_TAB, LATENCY_TAB, SETTINGS_TAB = "strategy", "attention", "latency", "settings"
# Each view tab opens with what it shows and how to read it, in plain words.
TAB_INTROS = {
    STRATEGY_TAB: "How loud each of your turns was, and the speaking style chosen from how that changed: "
                  "louder over the turns → *encourage*, quieter → *comfort*, about the same → *neutral*. "
                  "The bars say how much each of your turns shapes the voice of the reply.",
    ATTENTION_TAB: "Where the speech model looks while it listens; brighter means more attention. *Intra-turn*: "
                   "inside one spoken turn. *Inter-turn*: across all of them (lines mark where each begins). "
                   "*Cross-modal*: which words of the conversation each piece of speech reads (boxes: its own turn).",
    LATENCY_TAB: "Seconds each step took (rows) for each of your turns (columns); *first audio* is when the "
                 "reply's voice began, counted from the end of your recording.",
    SETTINGS_TAB: "Every setting of this run, seeds included: the same turns with these settings give the same reply.",
}

_pipeline: ES4RPipeline | None = None
_pipeline_lock = threading.Lock()
_preset_override: str | None = None  # set by --preset


STUDY_ENV = "ES4R_STUDY_DB"
# raw microphone; the reply's sentences played as they come; Send → text/voice times measured in the page
PAGE_SCRIPTS = ("microphone.js", "reply_voice.js", "page_timing.js")
PAGE_HEAD = "".join(f"<script>{(Path(__file__).resolve().parent / 'es4r' / 'ui' / name).read_text()}</script>"
                    for name in PAGE_SCRIPTS)
# On a phone the page's header wraps to half a screen: a shorter chat keeps the record button in
# the first screen (it grows as the conversation does, up to CHAT_HEIGHT).
PAGE_HEAD += "<style>@media (max-width: 600px) {#chat {height: 150px !important; min-height: 150px}}</style>"
RAW_MICROPHONE_NOTE = ("The microphone opens with automatic gain control, noise suppression and echo cancellation "
                       "**off** (where your browser allows it), so ES4R hears how loud you really speak.")
STUDY_CONCURRENCY = 8  # annotators only read clips and write answers; no model runs


def current_preset() -> str:
    """--preset, else $ES4R_PRESET, else embedded; a SettingError when $ES4R_PRESET names none."""
    preset = _preset_override or os.environ.get(PRESET_ENV) or DEFAULT_PRESET
    if preset not in PRESETS:
        raise SettingError(f"{PRESET_ENV}={preset}: no such preset; choose one of {', '.join(PRESETS)} "
                           f"(or unset it for {DEFAULT_PRESET})")
    return preset


def get_pipeline() -> ES4RPipeline:
    """The one model of this process, loaded on first use (not at import)."""
    global _pipeline
    with _pipeline_lock:
        if _pipeline is None:
            preset = current_preset()
            logger.info("loading ES4R preset %r", preset)
            _pipeline = ES4RPipeline.from_preset(preset)
        return _pipeline


# ------------------------------------------------------------------ formatting helpers
def _int16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 1.0) * INT16_SCALE).astype(np.int16)


def _turn_choices(session: Session) -> list[tuple[str, int]]:
    return [(f"Turn {n}", n - 1) for n in range(1, len(session.results) + 1)]


def _window_choices(maps: AttentionMaps, dropped_turns: int) -> list[tuple[str, int]]:
    return [(plots.window_label(maps, i, dropped_turns), i) for i in range(len(maps.intra))]


def _heads(maps: AttentionMaps) -> int:
    return int(maps.intra[0].shape[0]) if maps.intra else 1


def _attention_plots(maps: AttentionMaps, dropped_turns: int, window_index: int, head_index: int) -> dict:
    window_index = min(int(window_index or 0), len(maps.intra) - 1)
    head_index = min(int(head_index or 1), _heads(maps)) - 1
    return {intra_plot: plots.intra_figure(maps, window_index, head_index, dropped_turns),
            inter_plot: plots.inter_figure(maps, head_index, dropped_turns), cross_plot: plots.cross_figure(maps)}


def _attention_views(session: Session, shown: int, window_index: int | None = None, head_index: int = 1) -> dict:
    """The Attention tab of answered turn `shown`: its heatmaps and, when it opens
    (`window_index` None), its selectors. The maps are made now, when the tab asks
    (ES4RPipeline.attention_maps keeps the last few)."""
    maps, dropped = get_pipeline().attention_maps(session.answering(shown)), session.results[shown].dropped_turns
    if window_index is not None:
        return _attention_plots(maps, dropped, window_index, head_index)
    window = _window_choices(maps, dropped)
    return {window_turn: gr.update(choices=window, value=len(window) - 1, interactive=True),
            head: gr.update(maximum=_heads(maps), value=1, interactive=True),
            **_attention_plots(maps, dropped, len(window) - 1, 1)}


def _strategy_views(pipeline: ES4RPipeline, session: Session, shown: int) -> dict:
    result = session.results[shown]
    return {energy_plot: plots.energy_figure(result.energies, result.strategy, pipeline.config.strategy.tolerance),
            strategy: strategy_markdown(result, shown + 1), fusion_plot: plots.fusion_figure(result.fusion_weights)}


def _views(pipeline: ES4RPipeline, session: Session, shown: int, open_tab: str) -> dict:
    """Every per-turn view of answered turn `shown` (0-based), by component. Figures are drawn
    only for the open tab (Gradio encodes each as a PNG: 1.1-1.9 s for all five per turn on
    two cores), and the attention maps made only when their tab is open; the others are
    cleared and drawn when their tab is opened."""
    result = session.results[shown]
    headers, rows = latency_table(session.results)
    views = {view_turn: gr.update(choices=_turn_choices(session), value=shown, interactive=True),
             strategy: strategy_markdown(result, shown + 1),
             window_turn: gr.update(choices=[], value=None, interactive=False),
             head: gr.update(value=1, interactive=False),
             latency: gr.update(value=rows, headers=headers),
             energy_plot: None, fusion_plot: None, intra_plot: None, inter_plot: None, cross_plot: None}
    if open_tab == STRATEGY_TAB:
        views.update(_strategy_views(pipeline, session, shown))
    elif open_tab == ATTENTION_TAB:
        views.update(_attention_views(session, shown))
    return views


def _empty_views() -> dict:
    return {view_turn: gr.update(choices=[], value=None, interactive=False), energy_plot: None,
            strategy: "*No turn yet.*", fusion_plot: None,
            window_turn: gr.update(choices=[], value=None, interactive=False),
            head: gr.update(value=1, interactive=False), intra_plot: None, inter_plot: None, cross_plot: None,
            latency: gr.update(value=[], headers=["stage"])}


# ------------------------------------------------------------------ event handlers
def load_page(session: Session):
    """Page load: say what is running (loads the model on the first visit)."""
    try:
        pipeline = get_pipeline()
    except Exception:
        logger.exception("model failed to load")
        return ("**The model could not be loaded;** see the server log.", "", "", context_markdown(None))
    preset, components, voice = pipeline.config.preset, pipeline.components, pipeline.voice.name
    return (status_line(preset, components, voice), status_markdown(preset, components, voice),
            public_settings(pipeline.config), context_markdown(pipeline.context_usage(session.conversation)))


def converse(audio_path: str | None, session: Session, open_tab: str = STRATEGY_TAB, progress=gr.Progress()):
    """One turn, drawn as the pipeline reports it (ES4RPipeline.turn_events): the transcript,
    the reply as it is written, each sentence's voice as it is spoken, then the whole reply, the
    open tab's views and the export."""
    if not audio_path:
        raise gr.Error("Record or upload a turn first.", print_exception=False)
    pipeline = get_pipeline()
    started = time.perf_counter()
    logger.info("turn %d received", len(session.results) + 1)

    def fail(message: str) -> dict:
        """The chat as it was, the message beside the input, the input cleared for the next try.
        A warning toast, not gr.Error: an error would put every output (the chat included) into
        Gradio's error state and hide the conversation."""
        gr.Warning(message)
        return {chatbot: chat_messages(session.conversation), audio_in: None,
                turn_error: f"**This turn was not used:** {message}"}

    heard, answered, shown_at = session.conversation, None, 0.0
    try:
        transcript = EARLY_TRANSCRIPTS.take(audio_path)  # a hands-free turn's, made in its pause; None for Send
        for event in pipeline.turn_events(session.conversation, audio_path, transcript):
            match event:
                case Progress(fraction, message):
                    progress(fraction, desc=message)
                case Heard(heard):
                    yield {chatbot: chat_messages(heard, pending_reply=True), turn_error: ""}
                case Writing(text) if time.perf_counter() - shown_at >= STREAM_INTERVAL_S:
                    shown_at = time.perf_counter()
                    yield {chatbot: chat_messages(heard.with_turn(Turn(ASSISTANT, text)))}
                case Written(text):
                    yield {chatbot: chat_messages(heard.with_turn(Turn(ASSISTANT, text)))}
                case Spoken(rate, samples):  # a sentence, spoken while the next is written: played at once
                    yield {voice_sentence: _sentence_file(len(session.results) + 1, rate, samples)}
                case Answered():
                    answered = event
    except (AudioError, PipelineError) as error:
        yield fail(str(error))
        return
    except Exception:
        logger.exception("unexpected failure while answering a turn")
        yield fail(GENERIC_ERROR)
        return
    conversation, result = answered.conversation, answered.result
    new_session = session.answered(conversation, result)
    # The turn (its whole reply as one file) first; the context meter, the open tab's figures
    # and the export after it.
    yield {state: new_session, chatbot: chat_messages(conversation),
           reply_audio: (result.sample_rate, _int16(result.reply_audio))}
    yield {context: context_markdown(pipeline.context_usage(conversation)),
           **_views(pipeline, new_session, len(new_session.results) - 1, open_tab)}
    archive = write_archive(conversation, new_session.results, public_settings(pipeline.config), pipeline.config.preset,
                            ARCHIVES.new_path("es4r_conversation.zip"))
    yield {download: gr.update(value=str(archive), visible=True)}
    logger.info("turn %d done in %.2f s (views and export included)", len(new_session.results),
                time.perf_counter() - started)


def _sentence_file(turn: int, rate: int, samples: np.ndarray) -> str:
    """One spoken sentence of reply `turn` as a WAV file for the page's player
    (es4r/ui/reply_voice.js), which plays the sentences in order as they arrive and, by the
    "turnN-" its name begins with, drops a reply's late sentences once the next turn is sent."""
    return _wav_file(SENTENCES, f"turn{turn}-", rate, samples)


def _wav_file(folder: ServedFolder, prefix: str, rate: int, samples: np.ndarray) -> str:
    """`samples` as a 16-bit WAV file in `folder` (a sentence of a reply, a hands-free turn)."""
    import soundfile as sf

    path = str(folder.new_file(prefix, ".wav"))
    sf.write(path, _int16(samples), rate, subtype="PCM_16")
    return path


def new_conversation() -> dict:
    return {state: Session(), chatbot: [], voice_sentence: None, reply_audio: None, audio_in: None,
            download: gr.update(value=None, visible=False), context: context_markdown(None), **_empty_views()}


def show_turn(session: Session, shown: int, open_tab: str) -> dict:
    if shown is None or not session.results:
        return _empty_views()
    return _views(get_pipeline(), session, int(shown), open_tab)


def show_attention(session: Session, shown: int, window_index: int, head_index: int) -> dict:
    if shown is None or not session.results:
        return {intra_plot: None, inter_plot: None, cross_plot: None}
    return _attention_views(session, int(shown), window_index or 0, head_index)


def open_attention(session: Session, shown: int) -> dict:
    if shown is None or not session.results:
        return {intra_plot: None, inter_plot: None, cross_plot: None}
    return _attention_views(session, int(shown))


def show_strategy(session: Session, shown: int) -> dict:
    if shown is None or not session.results:
        return {energy_plot: None, strategy: "*No turn yet.*", fusion_plot: None}
    return _strategy_views(get_pipeline(), session, int(shown))


def listen(chunk, listener: MicrophoneStream | None) -> dict:
    """One chunk of the hands-free microphone. When the person starts a turn the reply still
    playing is stopped (barge-in); when a pause ends it, the turn is written to a WAV file and
    answered as a sent recording is (es4r/turn_detector.py)."""
    if chunk is None:
        return gr.skip()  # every output as it is ({} would be read as one value, and refused)
    listener = listener or MicrophoneStream(get_pipeline().config.turns)
    updates: dict = {listening: listener}
    for event in listener.feed(*chunk):
        match event:
            case SpeechStarted():
                updates[barge_in] = time.time()  # a new value each time: the page stops the reply's voice
            case SpeechPaused(samples=samples):  # the turn as it ends if this pause ends it: hear it now
                listener.announced = (samples, _heard_file(samples))
                EARLY_TRANSCRIPTS.begin(listener.announced[1])
            case TurnEnded(samples=samples, start=start, end=end):
                logger.info("hands-free turn heard: %.2f-%.2f s of the stream", start, end)
                updates[heard_turn] = _turn_file(listener, samples)
    return updates


def _turn_file(listener: MicrophoneStream, samples: np.ndarray) -> str:
    """The ended turn's file: the one its pause announced (its transcript begun) when the
    samples are the same, else a new one."""
    announced, listener.announced = listener.announced, None
    if announced is not None and np.array_equal(announced[0], samples):
        return announced[1]
    return _heard_file(samples)



def cut_reply(report: str | None, session: Session) -> dict:
    """The person spoke over a reply (hands-free barge-in): the history keeps as said only what
    was heard of it — the spoken units begun and the seconds played, as the page reports them
    (a unit begun counts as said; its audio is cut where it stopped)."""
    cut = json.loads(report) if report else None
    turns = session.conversation.turns
    if not cut or cut.get("turn") != len(session.results) or not turns or turns[-1].role != ASSISTANT:
        return gr.skip()  # every output as it is ({} would be read as one value, and refused)
    reply, seconds = turns[-1], float(cut["seconds"])
    text = heard_text(reply.text, int(cut["units"]))
    played_to_the_end = reply.audio is None or seconds >= len(reply.audio) / (reply.sample_rate or 1) - 0.05
    if text == reply.text and played_to_the_end:
        return gr.skip()  # every output as it is ({} would be read as one value, and refused)
    conversation = session.conversation.with_reply_cut(text, seconds)
    logger.info("reply %d cut off after %.1f s: %d unit(s) heard", cut["turn"], cut["seconds"], cut["units"])
    return {state: Session(conversation, session.results), chatbot: chat_messages(conversation)}


def stop_listening(listener: MicrophoneStream | None) -> dict:
    """The hands-free microphone was stopped: a turn still open is answered as it is."""
    if listener is None:
        return gr.skip()  # every output as it is ({} would be read as one value, and refused)
    ended = [event for event in listener.close() if isinstance(event, TurnEnded)]
    return {listening: None, **({heard_turn: _turn_file(listener, ended[-1].samples)} if ended else {})}


def _heard_file(samples: np.ndarray) -> str:
    return _wav_file(HEARD, "turn-", get_pipeline().config.audio.sample_rate, samples)


def take_turn(audio_path: str | None):
    """Send pressed: keep this recording for the turn, and clear the input (and Send) at once,
    so the next recording can be made while this turn is answered; a turn that ends later
    never clears an input the visitor has filled since."""
    return audio_path, gr.update(interactive=False), None


def submit_state(audio_path: str | None):
    """Send is clickable only once a recording or upload has fully arrived."""
    return gr.update(interactive=bool(audio_path))


# ------------------------------------------------------------------ layout
def _example_groups() -> list[dict]:
    """The example turns grouped as the conversations they form, in order, each with what it
    says (assets/examples/examples.json); every listed file must exist."""
    index = EXAMPLES_DIR / "examples.json"
    if not index.is_file():
        return []
    groups = json.loads(index.read_text())["conversations"]
    return [{"title": g["title"], "paths": [str(EXAMPLES_DIR / t["file"]) for t in g["turns"]],
             "labels": [t["says"] for t in g["turns"]]} for g in groups]


def _examples() -> list[list[str]]:
    return [[path] for group in _example_groups() for path in group["paths"]]


with gr.Blocks(title="ES4R Studio") as demo:
    state = gr.State(Session())
    sent_audio = gr.State(None)  # the recording of the turn being answered, taken when Send was pressed
    open_tab = gr.State(STRATEGY_TAB)  # which view tab this visitor is looking at: only its figures are drawn
    listening = gr.State(None)  # the hands-free microphone's MicrophoneStream
    heard_turn = gr.State(None)  # a hands-free turn's WAV file (a server path: never sent to the page)
    gr.Markdown("# ES4R Studio\nSpeak a few turns about how you feel; ES4R listens to *how* you say it, "
                "answers in speech, and shows why it answered that way.")
    status = gr.Markdown("Loading the model…", elem_id="status")
    with gr.Accordion("Details: what each component is", open=False):
        status_details = gr.Markdown()
    gr.Markdown(SYNTHETIC_VOICE_NOTE, elem_id="voice-note")
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=340):
            chatbot = gr.Chatbot(label="Conversation", height=CHAT_HEIGHT, elem_id="chat", buttons=["copy_all"],
                                 feedback_options=None, placeholder="Record a turn below to start.")
            # The turn's one progress indicator (and a waiting visitor's place in the queue): it
            # covers only this strip, never a message of the conversation.
            turn_progress = gr.Markdown("", elem_id="turn-progress", min_height=56)
            # What a visitor does next sits right under the conversation, in the first screen.
            barge_in = gr.Number(visible="hidden", elem_id="barge-in")  # changes when the person starts speaking
            played = gr.Textbox(visible="hidden", elem_id="played")  # what the page played of the reply cut off
            with gr.Row(equal_height=True):  # one row: the examples stay in the first screen
                audio_in = gr.Audio(sources=["microphone", "upload"], type="filepath", format="wav",
                                    label="Your turn: record, then press Send", elem_id="mic", min_width=200)
                hands_free = gr.Audio(sources=["microphone"], streaming=True, type="numpy", elem_id="hands-free",
                                      label="Or hands-free: record once, then talk (a pause ends a turn)",
                                      min_width=200)
            turn_error = gr.Markdown("", elem_id="turn-error")
            with gr.Row():
                send = gr.Button("Send turn", variant="primary", interactive=False, elem_id="send")
                reset = gr.Button("New conversation", elem_id="new-conversation")
            for group in _example_groups():  # one block per conversation, its turns in order
                gr.Examples([[path] for path in group["paths"]], inputs=[audio_in], example_labels=group["labels"],
                            label=f"No microphone? {group['title']}: load a turn, then Send")
            gr.Markdown(RAW_MICROPHONE_NOTE, elem_id="mic-note")
            gr.HTML('<p id="page-timing"></p>', elem_id="page-timing-box")  # filled by page_timing.js
            # The reply plays sentence by sentence as it is spoken (each sentence a small WAV in
            # the hidden voice_sentence, played in order by es4r/ui/reply_voice.js); the whole
            # reply, one WAV file (the one the export holds), is below it for replay and download.
            gr.HTML('<p class="reply-voice-label">Reply (synthetic voice), playing as it is spoken</p>'
                    '<div id="reply-voice-slot"></div><p id="reply-voice-note"></p>', elem_id="reply-voice")
            voice_sentence = gr.File(visible="hidden", interactive=False, elem_id="voice-sentence")
            reply_audio = gr.Audio(label="Whole reply (replay or download)", interactive=False,
                                   elem_id="reply-audio")
            context = gr.Markdown(context_markdown(None), elem_id="context-meter")
            download = gr.DownloadButton("Download conversation (.zip)", visible=False, size="md", elem_id="download")
        with gr.Column(scale=6, min_width=340):
            view_turn = gr.Dropdown(label="Show views for (turn k: your k-th turn and reply k)", choices=[], interactive=False, elem_id="view-turn")
            with gr.Tabs():
                with gr.Tab("Energy & strategy", elem_id="tab-strategy", render_children=True) as strategy_tab:
                    gr.Markdown(TAB_INTROS[STRATEGY_TAB], elem_classes="tab-intro")
                    energy_plot = gr.Plot(label="Energy per turn", elem_id="energy-plot", show_label=False)
                    strategy = gr.Markdown("*No turn yet.*", elem_id="strategy")
                    fusion_plot = gr.Plot(label="Style fusion", elem_id="fusion-plot", show_label=False)
                with gr.Tab("Attention", elem_id="tab-attention", render_children=True) as attention_tab:
                    gr.Markdown(TAB_INTROS[ATTENTION_TAB], elem_classes="tab-intro")
                    with gr.Row():
                        window_turn = gr.Dropdown(label="Intra-turn: which spoken turn (You k or Reply k)", choices=[], interactive=False)
                        head = gr.Slider(1, 8, value=1, step=1, label="Attention head", interactive=False)
                    intra_plot = gr.Plot(label="Intra-turn attention", elem_id="intra-plot", show_label=False)
                    inter_plot = gr.Plot(label="Inter-turn attention", elem_id="inter-plot", show_label=False)
                    cross_plot = gr.Plot(label="Cross-modal attention", elem_id="cross-plot", show_label=False)
                with gr.Tab("Latency", elem_id="tab-latency", render_children=True) as latency_tab:
                    gr.Markdown(TAB_INTROS[LATENCY_TAB], elem_classes="tab-intro")
                    latency = gr.Dataframe(headers=["stage"], interactive=False, elem_id="latency", max_height=640,
                                           label="Seconds per pipeline stage (rows), per turn (columns)")
                with gr.Tab("Settings", elem_id="tab-settings", render_children=True) as settings_tab:
                    gr.Markdown(TAB_INTROS[SETTINGS_TAB], elem_classes="tab-intro")
                    settings = gr.Code(label="Settings of this run (ES4RConfig, seeds included)", language="json")

    VIEW_OUTPUTS = [view_turn, energy_plot, strategy, fusion_plot, window_turn, head,
                    intra_plot, inter_plot, cross_plot, latency]
    ATTENTION_OUTPUTS = [intra_plot, inter_plot, cross_plot]
    TURN_OUTPUTS = [state, chatbot, audio_in, turn_error, voice_sentence, reply_audio, context, download, turn_progress,
                    *VIEW_OUTPUTS]  # what `converse` draws, for a sent recording and a hands-free turn alike
    STRATEGY_OUTPUTS = [energy_plot, strategy, fusion_plot]

    demo.load(load_page, [state], [status, status_details, settings, context])
    audio_in.change(submit_state, [audio_in], [send], queue=False)
    audio_in.start_recording(lambda: gr.update(interactive=False), None, [send], queue=False)
    # The recording is taken at the click: a turn that waits for the one before it (still
    # streaming its voice) must not read the input later, when it may have been cleared.
    send.click(take_turn, [audio_in], [sent_audio, send, audio_in], queue=False).then(
        converse, [sent_audio, state, open_tab],
        TURN_OUTPUTS,
        show_progress_on=[turn_progress],  # one progress bar, on its own strip, not over the chat or the views
        # A next turn sent while this one still draws its figures (after its voice) runs next;
        # Gradio's default ("once") would drop that click.
        trigger_mode="always_last", concurrency_id=TURN_QUEUE,
    ).then(submit_state, [audio_in], [send], queue=False)
    # Hands-free: the microphone streams; its chunks are heard beside a turn being answered.
    hands_free.stream(listen, [hands_free, listening], [listening, heard_turn, barge_in],
                      stream_every=HANDS_FREE_CHUNK_S, time_limit=None, concurrency_limit=None,
                      show_progress="hidden")
    hands_free.stop_recording(stop_listening, [listening], [listening, heard_turn], queue=False)
    barge_in.change(None, None, [played], js="() => JSON.stringify(window.es4rReplyVoice.interrupt())")
    # The cut is reported as the next turn starts (SpeechStarted), before that turn ends: in the
    # turns' queue it is applied after the reply it cuts is written and before the next turn reads
    # the history.
    # It may wait there for the reply's views: nothing of that wait is drawn over the conversation.
    played.change(cut_reply, [played, state], [state, chatbot], concurrency_id=TURN_QUEUE, show_progress="hidden")
    heard_turn.change(
        converse, [heard_turn, state, open_tab],
        TURN_OUTPUTS,
        show_progress_on=[turn_progress], trigger_mode="multiple",  # every turn heard is answered, in order
        concurrency_id=TURN_QUEUE)
    reset.click(new_conversation, None,
                [state, chatbot, voice_sentence, reply_audio, audio_in, download, context, *VIEW_OUTPUTS], queue=False)
    voice_sentence.change(None, [voice_sentence], None, js="(file) => window.es4rReplyVoice.add(file)")
    view_turn.input(show_turn, [state, view_turn, open_tab], VIEW_OUTPUTS)
    window_turn.input(show_attention, [state, view_turn, window_turn, head], ATTENTION_OUTPUTS)
    head.release(show_attention, [state, view_turn, window_turn, head], ATTENTION_OUTPUTS)
    # A tab's figures are drawn when it opens (a turn draws only the open tab's; plots updated
    # while their tab is hidden would not be drawn anyway).
    for tab, name in ((strategy_tab, STRATEGY_TAB), (attention_tab, ATTENTION_TAB), (latency_tab, LATENCY_TAB),
                      (settings_tab, SETTINGS_TAB)):
        tab.select(lambda name=name: name, None, [open_tab], queue=False)
    attention_tab.select(open_attention, [state, view_turn], [window_turn, head, *ATTENTION_OUTPUTS])
    strategy_tab.select(show_strategy, [state, view_turn], STRATEGY_OUTPUTS)

demo.queue(default_concurrency_limit=1)


def main(argv: list[str] | None = None) -> None:
    global _preset_override
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=PRESETS, default=None,
                        help=f"model preset (default: ${PRESET_ENV} or {DEFAULT_PRESET})")
    parser.add_argument("--study", default=os.environ.get(STUDY_ENV),
                        help=f"serve the blinded A/B listening study in this database instead (or ${STUDY_ENV}); "
                             "create one with `python -m es4r study create`")
    args = parser.parse_args(argv)
    _preset_override = args.preset
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if args.study:  # annotator mode: no model is loaded
        from es4r.study.cli import require_free_port
        from es4r.study.store import StudyError
        from es4r.study.serving import launch_study
        from es4r.study.ui import build_study_app

        host = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
        port = int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
        try:
            study = build_study_app(args.study)
            require_free_port(host, port, "set GRADIO_SERVER_PORT to a free one")
        except StudyError as error:
            parser.exit(2, f"error: {error}\n")
        launch_study(study, args.study, host, port, STUDY_CONCURRENCY)
        return
    if shutil.which("ffmpeg") is None:  # Gradio turns an upload of another format into WAV with it
        parser.exit(EXIT_STATUS, "error: ffmpeg was not found on PATH; the page converts uploads (mp3, m4a, webm …) "
                                 "with it: install it (Debian/Ubuntu: `apt-get install ffmpeg`; it is in packages.txt)\n")
    try:
        pipeline = get_pipeline()  # load before the first visitor arrives
    except startup_errors() as error:  # what a person can fix, in one line; a bug keeps its traceback
        parser.exit(EXIT_STATUS, startup_line(error) + "\n")
    if _examples():  # the first visitor's turn as fast as the later ones
        try:
            pipeline.warm_up(_examples()[0][0])
        except (AudioError, PipelineError) as error:
            logger.warning("warm-up turn not answered (%s): the first turn will take longer", error)
    logger.info("audio helpers ready in %.1f s (compiled once per install)", warm_up_audio())
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), head=PAGE_HEAD)


if __name__ == "__main__":
    main()
