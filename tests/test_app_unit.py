"""The app's figures, export, text and turn handler on real TurnResults from the tiny pipeline
(random weights, real speech clips); no browser. The browser path is test_app_browser.py."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soundfile as sf

from es4r.conversation import ContextUsage, Conversation
from es4r.ui import plots
from es4r.presets import public_settings
from es4r.ui.archive import write_archive
from es4r.ui.format import (context_markdown, latency_table, status_line, status_markdown,
                            strategy_markdown)
from es4r.ui.session import Session

TRANSCRIPTS = ["I had a rough week at work.", "My manager criticised my project."]
TURNS = len(TRANSCRIPTS)  # two: enough for a trend, a tolerance band and a turn boundary; each turn costs a TTS run


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline):
    return tiny_pipeline  # the session's one tiny pipeline (tests/conftest.py)


@pytest.fixture(scope="module")
def session(pipeline, speech_paths) -> Session:
    """Answered turns (explicit transcripts: the tiny ASR is random)."""
    current = Session()
    for path, text in zip(speech_paths, TRANSCRIPTS):
        conversation, result = pipeline.converse(current.conversation, str(path), transcript=text)
        current = current.answered(conversation, result)
    return current


@pytest.fixture(scope="module")
def maps(pipeline, session):
    """The latest turn's heatmaps, as its Attention tab asks for them."""
    return pipeline.attention_maps(session.answering(len(session.results) - 1))


@pytest.fixture
def app_module(pipeline, monkeypatch):
    import app

    monkeypatch.setattr(app, "_pipeline", pipeline)
    yield app
    # hands-free turns leave transcripts begun that were never taken: finished before the
    # pipeline is put back (None), or the worker would load the default preset beside the next test
    app.EARLY_TRANSCRIPTS.settle()


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def test_energy_figure_marks_trend_and_tolerance(session, pipeline):
    result = session.latest
    tolerance = pipeline.config.strategy.tolerance
    figure = plots.energy_figure(result.energies, result.strategy, tolerance)
    axes = figure.axes[0]
    energy_line = axes.lines[0]
    assert list(energy_line.get_ydata()) == pytest.approx(result.energies)
    assert any(line.get_linestyle() == "--" for line in axes.lines), "trend line missing"
    band = axes.collections[0].get_paths()[0].get_extents()
    previous = result.energies[-2]
    assert band.y0 == pytest.approx(previous * (1 - tolerance)) and band.y1 == pytest.approx(previous * (1 + tolerance))
    assert result.strategy in axes.get_title() and axes.get_xlabel() and axes.get_ylabel()
    assert _png(figure).startswith(b"\x89PNG")


def test_fusion_figure_has_one_bar_per_turn(session):
    weights = session.latest.fusion_weights
    axes = plots.fusion_figure(weights).axes[0]
    heights = [bar.get_height() for bar in axes.patches]
    assert heights == pytest.approx(weights) and sum(heights) == pytest.approx(1.0)


def test_heatmaps_say_untrained_and_label_words(maps):
    assert not maps.meaningful, "tiny preset has untrained ES4R modules"
    intra = plots.intra_figure(maps, len(maps.intra) - 1, 1)
    inter = plots.inter_figure(maps, 0)
    cross = plots.cross_figure(maps)
    for figure in (intra, inter, cross):
        axes = figure.axes[0]
        assert plots.UNTRAINED_NOTE in axes.get_title()
        assert len(figure.axes) == 2, "colour bar missing"
        assert axes.get_xlabel() and axes.get_ylabel()
        assert _png(figure).startswith(b"\x89PNG")
    assert "head 2" in intra.axes[0].get_title()
    boundaries = [b for b in maps.turn_boundaries if b > 0]
    assert len(inter.axes[0].lines) == 2 * len(boundaries) == 2 * (len(maps.intra) - 1)
    labels = [t.get_text() for t in cross.axes[0].get_xticklabels()]
    assert labels and len(labels) <= plots.MAX_WORD_TICKS
    assert cross.axes[0].images[0].get_array().shape == maps.cross.shape


def test_archive_holds_audio_text_and_settings(session, pipeline, tmp_path):
    path = write_archive(session.conversation, session.results, pipeline.config.to_json(), "tiny",
                         tmp_path / "conversation.zip")
    with zipfile.ZipFile(path) as archive:
        record = json.loads(archive.read("conversation.json"))
        settings = json.loads(archive.read("settings.json"))
        assert [t["transcript"] for t in record["turns"]] == TRANSCRIPTS
        assert [t["reply"] for t in record["turns"]] == [r.reply_text for r in session.results]
        assert [t["result"]["strategy"] for t in record["turns"]] == [r.strategy for r in session.results]
        assert record["turns"][-1]["result"]["energies"] == pytest.approx(session.latest.energies, rel=1e-3)
        assert settings["seed"] == pipeline.config.seed and settings["preset"] == "tiny"
        users = session.conversation.user_turns
        for index, turn in enumerate(record["turns"]):
            user, rate = sf.read(io.BytesIO(archive.read(turn["user_audio"])))
            assert rate == users[index].sample_rate and len(user) == len(users[index].audio)
            reply, reply_rate = sf.read(io.BytesIO(archive.read(turn["reply_audio"])))
            assert reply_rate == session.results[index].sample_rate
            assert len(reply) == len(session.results[index].reply_audio)
        assert "synthetic voice" in archive.read("transcript.txt").decode()


def test_one_numbering_of_turns_in_the_selectors_and_every_plot(session, app_module, maps):
    """Turn k is the person's k-th turn and its reply everywhere: the views selector counts the
    person's turns, the heard turns are "You k" / "Reply k" (never a count of spoken turns, which
    would call the person's 2nd turn "turn 3"), and the plots and the export use the same names."""
    from es4r.conversation import USER, Turn, turn_labels
    from es4r.ui.archive import conversation_record

    assert turn_labels([Turn(USER, "a"), Turn("assistant", "b"), Turn(USER, "c")]) == ["You 1", "Reply 1", "You 2"]
    turns = len(session.results)
    assert [label for label, _ in app_module._turn_choices(session)] == [f"Turn {k}" for k in range(1, turns + 1)]
    window = [label for label, _ in app_module._window_choices(maps, session.latest.dropped_turns)]
    expected = [x for k in range(1, turns + 1) for x in (f"You {k}", f"Reply {k}")][:-1]
    assert window == expected[len(expected) - len(maps.intra):] and window[-1] == f"You {turns}"
    assert f"— You {turns}," in plots.intra_figure(maps, len(maps.intra) - 1, 0).axes[0].get_title()
    inter = [t.get_text() for t in plots.inter_figure(maps, 0).axes[0].texts]
    assert inter == window
    cross = [t.get_text() for t in plots.cross_figure(maps).axes[0].texts]
    assert cross and set(cross) <= set(expected)
    record = conversation_record(session.conversation, session.results, "tiny")
    assert [t["turn"] for t in record["turns"]] == list(range(1, turns + 1))


def test_text_views(session, pipeline, app_module):
    status = status_markdown("tiny", pipeline.components, pipeline.voice.name)
    assert "tiny" in status and all(c.description in status for c in pipeline.components.values())
    line = status_line("tiny", pipeline.components, pipeline.voice.name)
    assert "answered from the transcript — the speech model is not trained yet" in line
    settings = public_settings(pipeline.config)
    for source in (pipeline.config.backbones.whisper, pipeline.config.backbones.llm):  # no server paths
        assert Path(source).is_absolute() and source not in status and source not in line
        assert source not in settings and f"local folder {Path(source).name}" in settings
    card = strategy_markdown(session.latest, TURNS)
    assert session.latest.strategy in card and session.latest.strategy_reason in card
    assert "FALLBACK" not in line and "RANDOM" not in line and "UNTRAINED" not in line  # plain words
    from dataclasses import replace as swap

    piper = next(line for line in strategy_markdown(swap(session.latest, voice="piper:en_US-joe-medium"),
                                                    TURNS).splitlines() if line.startswith("**Strategy settings:**"))
    assert "speed" in piper and "gain_db" in piper
    assert not [k for k in ("diffusion_steps", "embedding_scale", "alpha `") if k in piper]  # Piper reads none of them
    if str(session.latest.voice).startswith("styletts2"):
        assert "diffusion_steps" in card and "embedding_scale" in card
    headers, rows = latency_table(session.results)
    labels = [row[0] for row in rows]
    assert headers == ["stage", *[f"turn {n}" for n in range(1, TURNS + 1)]]
    assert "TTS RTF" in labels and "llm (s)" in labels
    seconds = [i for i, label in enumerate(labels) if label.endswith("(s)") and label != "total (s)"]
    for column, result in enumerate(session.results, start=1):
        value = {label: row[column] for label, row in zip(labels, rows)}
        total = value["total (s)"]
        assert total > 0 and abs(total - result.timings["wall"]) < 0.02  # the measured turn time
        assert abs(sum(rows[i][column] for i in seconds) - total) < 0.01 * len(seconds)  # stages + other add up
        assert value["LLM tokens/s"] == round(result.timings["llm_tokens_per_s"], 1)
        # every stage the pipeline times has its place in the pipeline's declared order (none hides in "other")
        from es4r.conversation import ENCODER_PARTS, MILESTONES, RATES, STAGE_ORDER, WALL

        assert set(result.timings) - {WALL, *RATES, *ENCODER_PARTS, *MILESTONES} <= set(STAGE_ORDER), result.timings
        # the moments a turn reached its first words and its whole text, in order, inside the turn
        first, text = (value[f"{n} (at s)"] for n in ("first words", "reply text"))
        assert 0 < first <= text <= total, (first, text, total)


def test_context_meter_says_when_turns_are_dropped():
    full = ContextUsage([20.0, 25.0, 20.0], turns_in_window=2, window_seconds=60.0, history_tokens=90,
                        max_tokens=512, reply_tokens=8, dropped_turns=1)
    assert full.window_used == 45.0
    text = context_markdown(full)
    assert "2 of 3 spoken turns" in text and "oldest 1 turn(s)" in text
    roomy = ContextUsage([3.0], turns_in_window=1, window_seconds=60.0, history_tokens=10, max_tokens=512,
                         reply_tokens=8, dropped_turns=0)
    assert roomy.more_turns_that_fit()[0] == 19 and "Warning" not in context_markdown(roomy)


def test_context_usage_is_what_the_next_turn_hears(session, pipeline, maps):
    """The meter counts every spoken turn (the replies too) through the model's own window,
    so it agrees with the inter-turn heatmap: the last turn heard its history's turns, the
    next one will hear those plus the reply just spoken."""
    usage = pipeline.context_usage(session.conversation)
    spoken = [turn for turn in session.conversation.turns if turn.audio is not None]
    assert len(usage.turn_seconds) == len(spoken) == 2 * TURNS
    assert usage.turns_in_window + usage.dropped_turns == len(spoken)
    if not usage.dropped_turns:
        assert usage.turns_in_window == len(maps.intra) + 1
    prompt = pipeline.model.prompt_parts(session.conversation.history(), pipeline.config.generation)
    assert usage.history_tokens == len(prompt.history_ids)


def _run(handler_generator):
    """Drain a streaming handler; returns (yields, raised gr.Error or None)."""
    yields = []
    try:
        for update in handler_generator:
            yields.append(update)
    except gr.Error as error:
        return yields, error
    return yields, None


def test_turn_streams_text_before_audio(app_module, speech_paths):
    yields, error = _run(app_module.converse(str(speech_paths[0]), Session()))
    assert error is None
    first, final = yields[0], yields[-1]
    assert first[app_module.chatbot][-1]["content"] == "…", "transcript shown before the reply"
    texts = [i for i, y in enumerate(yields) if app_module.state in y]
    audios = [i for i, y in enumerate(yields) if app_module.reply_audio in y]
    assert texts and audios and texts[0] <= audios[0], "the turn is committed with (not after) its audio"
    figures = [i for i, y in enumerate(yields) if app_module.energy_plot in y]
    assert figures and figures[0] > audios[0], "figures are drawn after the voice starts"
    new_session = yields[texts[0]][app_module.state]
    # the reply is written into the chat while the LLM generates, then shown whole before synthesis
    written = [y[app_module.chatbot][-1]["content"] for y in yields[1:texts[0]] if app_module.chatbot in y]
    assert all(app_module.reply_audio not in y for y in yields[1:texts[0]])
    assert len(written) >= 2 and written[-1] == new_session.results[0].reply_text
    assert len(written[0]) < len(written[-1]) or written[0] == written[-1]
    assert len(new_session.results) == 1 and len(new_session.conversation.turns) == 2
    rate, samples = yields[audios[0]][app_module.reply_audio]
    assert rate > 0 and samples.dtype == np.int16 and np.abs(samples).max() > 0
    archive = Path(final[app_module.download]["value"])  # the export comes after the voice
    assert audios[0] < len(yields) - 1 and archive.is_file() and app_module.ARCHIVES.path in archive.parents
    _assert_nothing_of_the_server(archive, app_module.get_pipeline())
    with zipfile.ZipFile(archive) as opened:  # the export holds the turn just answered, not the one before
        turns = json.loads(opened.read("conversation.json"))["turns"]
    assert [t.get("reply") for t in turns] == [new_session.results[0].reply_text]


def _assert_nothing_of_the_server(archive: Path, pipeline) -> None:
    """Every text file of the visitor's export is free of the server's paths (its home, the
    checkout, the model cache) and ES4R_* values; the settings still name each backbone (by its own folder name) and the seed."""
    import os

    backbones = pipeline.config.backbones
    secrets = {str(Path.home()), str(Path(__file__).resolve().parent.parent),
               *(str(Path(v).parent) for v in (backbones.whisper, backbones.llm) if v and Path(v).is_absolute()),
               *(v for k, v in os.environ.items() if k.startswith("ES4R_") and len(v) > 3)}
    secrets.discard("")
    with zipfile.ZipFile(archive) as opened:
        names = opened.namelist()
        assert "settings.json" in names and "conversation.json" in names
        for name in names:
            if name.endswith((".json", ".txt", ".md")):
                text = opened.read(name).decode()
                leaked = [s for s in secrets if len(s) > 1 and s in text]
                assert not leaked, f"{name} shows {leaked}"
        settings = json.loads(opened.read("settings.json"))
    assert settings["seed"] == pipeline.config.seed
    assert settings["backbones"]["llm"] == f"local folder {Path(backbones.llm).name}"


def test_a_turn_draws_only_the_open_tabs_figures(app_module, session, speech_paths, pipeline, monkeypatch):
    """Each figure costs a PNG encoding in Gradio: a turn draws the open tab's figures and
    clears the others, which are drawn when their tab opens. The attention maps are made only
    for the Attention tab: a turn with another tab open never makes them."""
    asked, original = [], pipeline.attention_maps
    monkeypatch.setattr(pipeline, "attention_maps", lambda conversation: asked.append(conversation) or original(conversation))
    figures = {app_module.STRATEGY_TAB: (app_module.energy_plot, app_module.fusion_plot),
               app_module.ATTENTION_TAB: (app_module.intra_plot, app_module.inter_plot, app_module.cross_plot),
               app_module.LATENCY_TAB: ()}
    every = [plot for plots_of_tab in figures.values() for plot in plots_of_tab]
    for tab, drawn in figures.items():
        yields, error = _run(app_module.converse(str(speech_paths[0]), session, tab))
        views = next(y for y in yields if app_module.view_turn in y)
        assert error is None and all(plot in views for plot in every)
        assert [plot for plot in every if views[plot] is not None] == list(drawn), tab
        assert views[app_module.latency]["value"] and app_module.strategy in views
        assert len(asked) == (tab == app_module.ATTENTION_TAB), tab
        asked.clear()
        window = views[app_module.window_turn]
        assert bool(window["choices"]) == (tab == app_module.ATTENTION_TAB) == window["interactive"]
    opened = app_module.open_attention(session, 0)
    assert all(opened[plot] is not None for plot in figures[app_module.ATTENTION_TAB])
    assert [turn.text for turn in asked[0].turns] == [session.conversation.turns[0].text]  # turn 1's own history
    assert [label for label, _ in opened[app_module.window_turn]["choices"]] == ["You 1"]
    redrawn = app_module.show_attention(session, 0, 0, 1)
    assert all(redrawn[plot] is not None for plot in figures[app_module.ATTENTION_TAB])


def test_bad_audio_keeps_history(app_module, session, tmp_path):
    too_long = tmp_path / "long.wav"
    rate = 16_000
    sf.write(too_long, 0.1 * np.sin(np.arange(rate * 40) / 10.0), rate)
    yields, error = _run(app_module.converse(str(too_long), session))
    message = yields[-1][app_module.turn_error]  # a message, not gr.Error (which would hide the chat)
    assert error is None and "too long" in message and "30" in message
    assert all(app_module.state not in y for y in yields), "session must not change"
    restored = yields[-1][app_module.chatbot]
    assert [m["content"] for m in restored] == [t.text for t in session.conversation.turns]
    assert yields[-1][app_module.audio_in] is None, "the input is cleared for the next recording"
    assert "too long" in yields[-1][app_module.turn_error], "the message stands beside the input"


def test_unexpected_failure_is_friendly(app_module, session, monkeypatch, speech_paths):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA exploded at 0xdeadbeef")

    monkeypatch.setattr(app_module._pipeline, "think", broken)
    yields, error = _run(app_module.converse(str(speech_paths[0]), session))
    message = yields[-1][app_module.turn_error]
    assert error is None and app_module.GENERIC_ERROR in message and "0xdeadbeef" not in message
    assert len(yields[-1][app_module.chatbot]) == len(session.conversation.turns)
    assert all(app_module.state not in y for y in yields), "the session state is untouched"


def test_voice_failure_after_the_text_keeps_the_conversation(app_module, session, monkeypatch, speech_paths):
    """The reply text was already on screen when the voice failed: the chat goes back to the
    conversation as it was, the message says what happened, the session is untouched."""
    from es4r.pipeline import PipelineError

    def mute(*args, **kwargs):
        raise PipelineError("The reply could not be spoken (voice engine crashed). Please try the turn again.")

    monkeypatch.setattr(app_module._pipeline, "speak", mute)
    yields, error = _run(app_module.converse(str(speech_paths[0]), session))
    assert error is None and "could not be spoken" in yields[-1][app_module.turn_error]
    assert any(app_module.chatbot in y and len(y[app_module.chatbot]) == len(session.conversation.turns) + 2
               for y in yields[:-1]), "the reply text was shown before the voice failed"
    assert [m["content"] for m in yields[-1][app_module.chatbot]] == [t.text for t in session.conversation.turns]
    assert "could not be spoken" in yields[-1][app_module.turn_error]
    assert all(app_module.state not in y for y in yields)


def test_new_conversation_and_preset(app_module, monkeypatch):
    outputs = app_module.new_conversation()
    assert outputs[app_module.state] == Session() and outputs[app_module.state].conversation == Conversation()
    assert outputs[app_module.chatbot] == [] and outputs[app_module.energy_plot] is None
    monkeypatch.setattr(app_module, "_preset_override", None)
    monkeypatch.setenv(app_module.PRESET_ENV, "tiny")
    assert app_module.current_preset() == "tiny"
    monkeypatch.delenv(app_module.PRESET_ENV)
    assert app_module.current_preset() == app_module.DEFAULT_PRESET


def test_figures_stay_readable_on_a_phone_and_count_in_integers(session, pipeline, maps):
    """Shown scaled to a 390-px screen, no label is smaller than plots.MIN_TEXT_PX and none
    runs past the figure's edge; heatmap axes (frames, segments) tick only on integers."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    result = session.latest
    figures = {"energy": plots.energy_figure(result.energies, result.strategy, pipeline.config.strategy.tolerance),
               "fusion": plots.fusion_figure(result.fusion_weights),
               "intra": plots.intra_figure(maps, 0, 0), "inter": plots.inter_figure(maps, 0),
               "cross": plots.cross_figure(maps)}
    for name, figure in figures.items():
        renderer = FigureCanvasAgg(figure).get_renderer()
        figure.draw(renderer)
        scale = plots.PHONE_WIDTH_PX / figure.get_figwidth()  # screen pixels per inch of figure
        width = figure.bbox.width
        for text in figure.findobj(Text):
            if not text.get_visible() or not text.get_text().strip():
                continue
            shown = text.get_fontsize() / 72 * scale
            assert shown >= plots.MIN_TEXT_PX, f"{name}: {text.get_text()!r} would be {shown:.1f} px on a phone"
            box = text.get_window_extent(renderer)
            assert box.x0 >= -1 and box.x1 <= width + 1, f"{name}: {text.get_text()!r} runs past the edge"
    for name in ("intra", "inter"):
        axes = figures[name].axes[0]
        for ticks in (axes.get_xticks(), axes.get_yticks()):
            assert all(float(t).is_integer() for t in ticks), f"{name}: fractional ticks {ticks}"


def test_served_files_age_out_and_keep_their_names(tmp_path):
    """Exports and spoken sentences older than their folder's keep time go as new ones come;
    an export keeps the name its download is saved under."""
    import os
    import time

    from es4r.ui.served_files import ServedFolder

    folder = ServedFolder("es4r_test_", keep_s=60)
    old_file, old_archive = folder.new_file("turn1-", ".wav"), folder.new_path("es4r_conversation.zip")
    old_archive.write_bytes(b"zip")
    an_hour_ago = time.time() - 3600
    for stale in (old_file, old_archive.parent):
        os.utime(stale, (an_hour_ago, an_hour_ago))
    fresh = folder.new_file("turn2-", ".wav")
    archive = folder.new_path("es4r_conversation.zip")
    assert not old_file.exists() and not old_archive.parent.exists()
    assert fresh.name.startswith("turn2-") and fresh.exists() and archive.name == "es4r_conversation.zip"


def test_every_example_clip_is_listed_once_with_what_it_says(app_module):
    """The page shows the examples grouped by conversation and labelled (assets/examples/examples.json):
    every WAV there is listed once, every listed file exists, and each label quotes its words."""
    groups = app_module._example_groups()
    listed = [path for group in groups for path in group["paths"]]
    on_disk = sorted(str(p) for p in app_module.EXAMPLES_DIR.glob("*.wav"))
    assert sorted(listed) == on_disk and len(set(listed)) == len(listed)
    assert all(len(g["labels"]) == len(g["paths"]) and all("\u201c" in label for label in g["labels"]) for g in groups)
    assert [[p] for p in listed] == app_module._examples()


def test_every_view_tab_opens_with_a_plain_sentence_and_plots_use_plain_words(app_module, session, maps):
    assert set(app_module.TAB_INTROS) == {app_module.STRATEGY_TAB, app_module.ATTENTION_TAB,
                                          app_module.LATENCY_TAB, app_module.SETTINGS_TAB}
    assert all(len(text.split()) >= 8 for text in app_module.TAB_INTROS.values())
    labels = [plots.intra_figure(maps, 0, 0).axes[0].get_xlabel(),
              plots.energy_figure(session.latest.energies, session.latest.strategy, 0.1).axes[0].get_ylabel(),
              plots.cross_figure(maps).axes[0].get_ylabel()]
    assert not [label for label in labels if "query" in label or "key frame" in label or label.startswith("mean mel")]
    ticks = [t.get_text() for t in plots.cross_figure(maps).axes[0].get_xticklabels()]
    assert not [t for t in ticks if "\\n" in t]  # a line break is drawn as a mark, not as a raw "\n"
    for figure in (plots.intra_figure(maps, 0, 0), plots.inter_figure(maps, 0)):
        axes = figure.axes[0]
        assert len(axes.get_xticks()) <= 7 and len(axes.get_yticks()) <= 7  # 4-digit frame numbers never touch


def test_speaking_over_a_reply_keeps_only_what_was_heard_of_it(app_module, session):
    """Barge-in: the page reports the reply it cut off (its turn, the spoken units begun, the
    seconds played); the history then holds those units and that much audio, and says so. A
    report of another turn, of a reply heard to its end, or of nothing, changes nothing."""
    import json

    from es4r.conversation import ASSISTANT, REPLY_CUT_NOTE
    from es4r.voice.base import sentences

    reply = session.conversation.turns[-1]
    assert reply.role == ASSISTANT
    units = sentences(reply.text)
    turn = len(session.results)
    if len(units) < 2:  # the tiny LLM's reply is random: make one of three units to cut
        reply = type(reply)(ASSISTANT, "That sounds hard, I know. What happened? Tell me more about it.",
                            reply.audio, reply.sample_rate)
        session = Session(type(session.conversation)(session.conversation.turns[:-1] + (reply,)), session.results)
        units = sentences(reply.text)
    out = app_module.cut_reply(json.dumps({"turn": turn, "units": 1, "seconds": 0.25}), session)
    cut = out[app_module.state].conversation.turns[-1]
    assert cut.text == units[0] and len(cut.audio) == round(0.25 * reply.sample_rate)
    assert REPLY_CUT_NOTE in cut.notes and REPLY_CUT_NOTE in out[app_module.chatbot][-1]["content"]
    assert out[app_module.state].conversation.turns[:-1] == session.conversation.turns[:-1]  # nothing else changed
    assert out[app_module.state].results == session.results
    whole = len(reply.audio) / reply.sample_rate
    for report in (json.dumps({"turn": turn - 1, "units": 1, "seconds": 0.25}),
                   json.dumps({"turn": turn, "units": len(units), "seconds": whole}), "null", "", None):
        unchanged = app_module.cut_reply(report, session)
        assert _as_gradio_sends(app_module, "cut_reply", unchanged) == [None, None], report
    assert units[0] in str(_as_gradio_sends(app_module, "cut_reply", out)[1][-1])  # Gradio takes the cut
    last_unit = app_module.cut_reply(json.dumps({"turn": turn, "units": len(units), "seconds": whole / 2}), session)
    cut = last_unit[app_module.state].conversation.turns[-1]  # its last sentence begun, then cut: said, but shorter
    assert cut.text == reply.text and len(cut.audio) == round(whole / 2 * reply.sample_rate) and REPLY_CUT_NOTE in cut.notes


def _as_gradio_sends(app_module, name: str, returned) -> list:
    """What Gradio makes of handler `name`'s return value for the page: its outputs' values in
    order, None where one is left as it is. Raises as the server would on a value it refuses."""
    import asyncio

    fn = next(fn for fn in app_module.demo.fns.values() if fn.name == name)
    sent = asyncio.run(app_module.demo.postprocess_data(fn, returned, None))
    return [None if isinstance(v, dict) and v.get("__type__") == "update" and len(v) == 1 else v for v in sent]


def test_the_microphone_handlers_that_change_nothing_say_so_in_a_form_gradio_takes(app_module):
    """The stream's empty chunk, a stopped microphone with no turn open: every output is left as
    it is, without an error on the server (an empty dict was read as one value and refused)."""
    assert _as_gradio_sends(app_module, "listen", app_module.listen(None, None)) == [None, None, None]
    assert _as_gradio_sends(app_module, "stop_listening", app_module.stop_listening(None)) == [None, None]
    listener = app_module.MicrophoneStream(app_module.get_pipeline().config.turns)
    assert _as_gradio_sends(app_module, "stop_listening", app_module.stop_listening(listener))[1] is None  # nothing said


def test_every_queued_event_that_writes_the_conversation_waits_its_turn_in_one_queue(app_module):
    """A sent turn, a hands-free turn and a reply cut off by the next turn all write the session:
    run side by side, the later writer overwrites the other's history (a cut applied while the
    next turn is answered vanished, and the chat showed the two turns merged). They share one
    queue of one, so each runs in the order it was sent; events that only read the session (the
    views) and the microphone's stream stay out of it, so they never wait behind a turn."""
    writers, others = set(), set()
    for fn in app_module.demo.fns.values():
        if not fn.queue:
            continue
        writes = any(output is app_module.state for output in fn.outputs)
        (writers if writes else others).add((fn.name, fn.concurrency_id))
    assert {name for name, _ in writers} == {"converse", "cut_reply"}
    assert len([w for w in writers if w[0] == "converse"]) == 1  # Send and hands-free: one entry, the same queue
    assert {queue for _, queue in writers} == {app_module.TURN_QUEUE}
    assert app_module.demo._queue.default_concurrency_limit == 1
    assert all(fn.concurrency_limit in (1, "default") for fn in app_module.demo.fns.values()
               if fn.concurrency_id == app_module.TURN_QUEUE)
    assert others and not any(queue == app_module.TURN_QUEUE for _, queue in others)
    assert "listen" in {name for name, _ in others}


def test_no_queued_event_draws_its_wait_over_the_conversation(app_module):
    """A queued event that writes the chat shows its place in the queue and its progress on the
    progress strip, or nowhere: never as Gradio's pending bubble in the chat (a reply cut off by
    the next hands-free turn waits there for the reply's views, and showed "queue: 1/1" and a
    bubble of dots, which read as a reply). Unqueued ones draw no progress at all."""
    chat_writers = [fn for fn in app_module.demo.fns.values() if any(o is app_module.chatbot for o in fn.outputs)]
    assert {fn.name for fn in chat_writers} >= {"converse", "cut_reply", "new_conversation"}
    for fn in chat_writers:
        if not fn.queue:
            continue
        elsewhere = fn.show_progress_on and all(target is not app_module.chatbot for target in fn.show_progress_on)
        assert fn.show_progress == "hidden" or elsewhere, fn.name
    assert any(fn.show_progress_on == [app_module.turn_progress] for fn in chat_writers)  # converse: on the strip


def test_a_hands_free_turn_is_transcribed_in_its_pause_and_answered_with_that_transcript(app_module, speech_paths,
                                                                                        monkeypatch):
    """The pause announces the turn (SpeechPaused) before the pause ends it: its file is written
    and transcribed then, the ended turn is that same file, and the turn is answered without a
    second transcription, with the transcript a sent recording of that file gets. A pause the
    person speaks through announces a file the ended turn does not use."""
    import soundfile as sf

    pipeline = app_module.get_pipeline()
    clip, rate = sf.read(str(speech_paths[0]), dtype="float32")
    assert rate == 16_000
    silence = lambda seconds: np.zeros(int(rate * seconds), np.float32)  # noqa: E731
    calls = []
    real_transcribe = type(pipeline).transcribe
    monkeypatch.setattr(type(pipeline), "transcribe", lambda self, samples: calls.append(len(samples)) or
                        real_transcribe(self, samples))

    def stream(samples: np.ndarray) -> tuple[object, list[str], str | None]:
        listener, announced, heard = None, [], None
        for start in range(0, len(samples), 3200):  # 0.2 s chunks, as the page streams them
            out = app_module.listen((rate, samples[start:start + 3200]), listener)
            listener = out[app_module.listening]
            if listener.announced and listener.announced[1] not in announced:
                announced.append(listener.announced[1])
            heard = out.get(app_module.heard_turn, heard)
        return listener, announced, heard

    listener, announced, heard = stream(np.concatenate([silence(0.5), clip, silence(1.5)]))
    assert heard is not None and heard == announced[-1] and listener.announced is None
    transcript = app_module.EARLY_TRANSCRIPTS.take(heard)
    assert transcript == pipeline.add_user_turn(app_module.Session().conversation, heard).turns[-1].text
    calls.clear()
    app_module.EARLY_TRANSCRIPTS.begin(heard)  # as the pause did, for the turn answered below
    out = [update for update in app_module.converse(heard, app_module.Session())]
    assert len(calls) == 1  # the early one only: the turn itself was not transcribed again
    assert out[-3][app_module.state].conversation.turns[0].text == transcript
    # the counterpart: speech after a pause longer than early_work_s but shorter than end_pause_s
    turns = pipeline.config.turns
    gap = (turns.early_work_s + turns.end_pause_s) / 2
    loud = np.flatnonzero(np.abs(clip) > 0.05 * np.abs(clip).max())
    spoken = clip[loud[0]: loud[-1] + 1]  # the clip without its own quiet ends, so the gap is the pause
    _, announced, heard = stream(np.concatenate([silence(0.5), spoken, silence(gap), spoken, silence(1.5)]))
    assert len(announced) >= 2 and heard == announced[-1] and announced[0] != heard
    assert len(sf.read(heard)[0]) > len(sf.read(announced[0])[0])
