"""Text the app shows: the honesty status line, the strategy card, latency rows, the chat
messages and the context meter. Pure functions of pipeline results, so they are testable
without a browser."""

from __future__ import annotations


from es4r.config import FALLBACK, RANDOM, TRAINED, UNTRAINED
from es4r.conversation import (ASSISTANT, MILESTONES, STAGE_ORDER, USER, WALL, ComponentStatus, ContextUsage,
                               Conversation, TurnResult)

SYNTHETIC_VOICE_NOTE = ("**Note:** every reply is spoken by a **synthetic voice** (text-to-speech). "
                        "It is not a person and not a recording of one.")
# Plain words, not shouted codes: what a visitor should take from each status.
STATUS_BADGES = {TRAINED: "trained", FALLBACK: "a stand-in", RANDOM: "random weights, output not meaningful",
                 UNTRAINED: "not trained yet"}
# StrategyParams fields only StyleTTS2's diffusion sampler reads: other voices map speed,
# expressiveness and gain onto their own knobs (es4r/config.py).
STYLETTS2_ONLY = ("alpha", "beta", "diffusion_steps", "embedding_scale")
COMPONENT_NAMES = {"asr": "ASR", "speech_encoder": "speech encoder", "llm": "LLM",
                   "es4r_modules": "ES4R modules", "voice": "voice"}
PENDING_REPLY = "…"
LOW_CONTEXT_TURNS = 1  # warn when about this many more turns still fit


def status_line(preset: str, components: dict[str, ComponentStatus], voice: str) -> str:
    """The always-visible one-liner: preset, each component's training status, the voice."""
    parts = [f"{COMPONENT_NAMES.get(key, key)}: {STATUS_BADGES.get(c.status, c.status)}"
             for key, c in components.items() if key != "voice"]
    voice_status = components["voice"].status if "voice" in components else ""
    voice_badge = ("standing in for StyleTTS2, which is not installed here" if voice_status == FALLBACK
                   else STATUS_BADGES.get(voice_status, voice_status))
    speech = components.get("es4r_modules") is not None and components["es4r_modules"].status == TRAINED
    answered = ("answered by the speech model" if speech else
                "answered from the transcript — the speech model is not trained yet")
    return (f"**Running preset `{preset}`** — {answered} · {' · '.join(parts)} · "
            f"**voice:** {voice} ({voice_badge})")


def status_markdown(preset: str, components: dict[str, ComponentStatus], voice: str) -> str:
    """One line per component: what runs, and whether it is trained, a fallback or random."""
    lines = [f"**Preset:** `{preset}` · **voice:** {voice}"]
    for key, status in components.items():
        badge = STATUS_BADGES.get(status.status, status.status)
        lines.append(f"- **{COMPONENT_NAMES.get(key, key)}** — {badge}: {status.description}")
    return "\n".join(lines)


def chat_messages(conversation: Conversation, pending_reply: bool = False) -> list[dict]:
    """Chatbot messages (Gradio's role/content dicts) for the whole history."""
    messages = [{"role": "user" if turn.role == USER else "assistant", "content": _with_notes(turn)}
                for turn in conversation.turns if turn.role in (USER, ASSISTANT)]
    if pending_reply:
        messages.append({"role": "assistant", "content": PENDING_REPLY})
    return messages


def _with_notes(turn) -> str:
    """A turn's text with what input checks noticed about its recording (clipping, resampling)."""
    if not turn.notes:
        return turn.text
    return turn.text + "\n\n" + " · ".join(f"*⚠ {note}*" for note in turn.notes)


def _value(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def strategy_markdown(result: TurnResult, turn_number: int) -> str:
    """The chosen strategy, why, with which voice settings, and the fusion weights."""
    styletts2 = str(result.voice).startswith("styletts2")
    params = {k: v for k, v in result.strategy_params.items()
              if k not in ("engine", "name") and (styletts2 or k not in STYLETTS2_ONLY)}
    engine = result.strategy_params.get("engine") or {}
    settings = " · ".join(f"{k} `{_value(v)}`" for k, v in params.items())
    engine_text = ", ".join(f"{k}={_value(v)}" for k, v in engine.items()) or "—"
    weights = ", ".join(f"turn {i}: {w:.2f}" for i, w in enumerate(result.fusion_weights, start=1)) or "off"
    notes = "".join(f"\n- {note}" for note in result.notes)
    return (f"### Turn {turn_number}: strategy **{result.strategy}**\n"
            f"**Why:** {result.strategy_reason}\n\n"
            f"**Strategy settings:** {settings}  \n"
            f"**Voice engine settings used:** {engine_text}  \n"
            f"**Style-fusion weights:** {weights}  \n"
            f"**Spoken by:** {result.voice} (seed {result.seed}) · **path:** {result.path}"
            + (f"\n\n**Notes:**{notes}" if notes else ""))


MILESTONE_NAMES = {"first_words": "first words", "first_audio": "first audio", "reply_text": "reply text"}


def latency_table(results: tuple[TurnResult, ...] | list[TurnResult]) -> tuple[list[str], list[list]]:
    """(headers, rows): one column per turn, one row per pipeline stage in the pipeline's order,
    then the seconds between stages ("other") and the turn's measured total — the stage rows
    plus "other" add up to it. Below them, apart: the moments the first words and the whole
    reply text arrived ("(at s)": seconds from the start of the turn, not durations) and the
    rates (LLM tokens/s, TTS real-time factor). Stages run down the page and turns across it,
    so six turns fit the view column at 1440 px."""
    stages = [s for s in STAGE_ORDER if any(s in r.timings for r in results)]
    moments = [m for m in MILESTONES if any(m in r.timings for r in results)]
    columns = []
    for result in results:
        seconds = [result.timings.get(s, 0.0) for s in stages]
        total = result.timings.get(WALL, sum(seconds))
        other = max(total - sum(seconds), 0.0)
        columns.append([*[round(x, 2) for x in seconds], round(other, 2), round(sum(seconds) + other, 2),
                        *[round(result.timings.get(m, 0.0), 2) for m in moments],
                        round(result.timings.get("llm_tokens_per_s", 0.0), 1),
                        round(result.timings.get("tts_rtf", 0.0), 2)])
    labels = [*[f"{s} (s)" for s in stages], "other (s)", "total (s)",
              *[f"{MILESTONE_NAMES[m]} (at s)" for m in moments], "LLM tokens/s", "TTS RTF"]
    headers = ["stage", *[f"turn {n}" for n in range(1, len(results) + 1)]]
    return headers, [[label, *(column[i] for column in columns)] for i, label in enumerate(labels)]


def context_markdown(usage: ContextUsage | None) -> str:
    if usage is None or not usage.turn_seconds:
        return "**Context:** empty — record a first turn."
    speech_more, text_more = usage.more_turns_that_fit()
    lines = [
        f"**Speech window:** {usage.turns_in_window} of {len(usage.turn_seconds)} spoken turns, yours and the replies "
        f"({usage.window_used:.1f} s of {usage.window_seconds:.0f} s); about {speech_more} more turn(s) of this length fit.",
        f"**LLM context:** {usage.history_tokens} of {usage.max_tokens - usage.reply_tokens} history tokens "
        f"({usage.reply_tokens} kept for the reply); about {text_more} more turn(s) fit.",
    ]
    if usage.dropped_turns:
        lines.append(f"**Warning:** the oldest {usage.dropped_turns} turn(s) no longer fit the speech window and were left "
                     "out of the speech encoding (their text is still in the history).")
    elif min(speech_more, text_more) <= LOW_CONTEXT_TURNS:
        lines.append("**Nearly full:** from the next turn on, the oldest turns may be left out.")
    if usage.history_tokens > usage.max_tokens - usage.reply_tokens:
        lines.append("**Warning:** the text history is longer than the LLM context budget; start a new conversation.")
    return "  \n".join(lines)
