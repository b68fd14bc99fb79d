"""Matplotlib figures of one turn: energy trend, style-fusion weights and the three
attention maps. Figures are built with `matplotlib.figure.Figure` (no pyplot global state),
so concurrent sessions cannot draw into each other's figures. Sizes are chosen for a phone:
a figure is shown scaled to its column's width, and on a 390-px screen every label still
renders at `MIN_TEXT_PX` or more (tests/test_app_unit.py checks each figure)."""

from __future__ import annotations

import functools

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from es4r.config import Strategy
from es4r.conversation import AttentionMaps

FIGURE_SIZE = (4.0, 3.4)  # inches; narrow, so the labels stay large when a phone scales it down
FUSION_SIZE = (4.0, 2.6)
HEATMAP_SIZE = (4.0, 3.6)
DPI = 180  # 720 px wide: sharp on a laptop, where the figure is shown near its full size
FONT_PT = 11
PHONE_WIDTH_PX = 360  # a 390-px screen less the page's margins
MIN_TEXT_PX = 11  # no label smaller than this on that screen
HEATMAP_CMAP = "magma"
UNTRAINED_NOTE = "untrained ES4R modules —\nthey illustrate the mechanism only"
MAX_WORD_TICKS = 16  # beyond this, only every n-th history word gets a tick label (more would touch)
LABEL_BOX = {"boxstyle": "round,pad=0.15", "facecolor": "black", "alpha": 0.65, "linewidth": 0}  # names on a map
STRATEGY_COLOURS = {Strategy.COMFORT: "#3b6fb6", Strategy.ENCOURAGE: "#e07b1a", Strategy.NEUTRAL: "#6b6b6b"}


def _figure(size: tuple[float, float] = FIGURE_SIZE) -> Figure:
    return Figure(figsize=size, dpi=DPI, layout="constrained")


def _readable(build):
    """Build the figure with the base font size every label is derived from."""

    @functools.wraps(build)
    def wrapper(*args, **kwargs) -> Figure:
        with matplotlib.rc_context({"font.size": FONT_PT}):
            return build(*args, **kwargs)

    return wrapper


def _title(text: str, meaningful: bool) -> str:
    return text if meaningful else f"{text}\n({UNTRAINED_NOTE})"


@_readable
def energy_figure(energies: list[float], strategy: Strategy, tolerance: float) -> Figure:
    """Per-turn energy E_i (paper Sec. 3.3) with a least-squares trend line and the tolerance
    band around the previous turn: the last turn inside the band counts as "no change"."""
    figure = _figure()
    axes = figure.add_subplot()
    turns = np.arange(1, len(energies) + 1)
    colour = STRATEGY_COLOURS.get(strategy, "black")
    axes.plot(turns, energies, marker="o", color=colour, linewidth=2, label="energy per turn")
    if len(energies) >= 2:
        previous = energies[-2]
        axes.fill_between(turns[-2:], previous * (1 - tolerance), previous * (1 + tolerance), color="grey",
                          alpha=0.25, label=f"±{tolerance:.0%} of turn {len(energies) - 1}: counts as no change")
        slope, intercept = np.polyfit(turns, energies, 1)
        axes.plot(turns, slope * turns + intercept, linestyle="--", color="black", linewidth=1, label="trend")
    axes.set_xticks(turns)
    axes.set_xlabel("your turn")
    axes.set_ylabel("loudness (energy)")
    axes.set_title(f"Turn energy → strategy: {strategy}")
    figure.legend(loc="outside lower center", fontsize="small", ncols=2, frameon=False)  # off the data
    axes.grid(alpha=0.3)
    return figure


@_readable
def fusion_figure(weights: list[float]) -> Figure:
    """Style-fusion weights w_i ∝ 1/(E_i + ε) (paper Sec. 3.3): quieter turns count more."""
    figure = _figure(FUSION_SIZE)
    axes = figure.add_subplot()
    if not weights:
        axes.text(0.5, 0.5, "style fusion is off (ablation)", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
        return figure
    turns = np.arange(1, len(weights) + 1)
    bars = axes.bar(turns, weights, color="#5a8f6b")
    axes.bar_label(bars, fmt="%.2f", fontsize="small")
    axes.set_xticks(turns)
    axes.set_ylim(0, max(1.0, max(weights) * 1.15))
    axes.set_xlabel("your turn")
    axes.set_ylabel("share of the voice's style")
    axes.set_title("Style-fusion weights (sum to 1)")
    return figure


def _heatmap(figure: Figure, matrix: np.ndarray, title: str, xlabel: str, ylabel: str):
    axes = figure.add_subplot()
    image = axes.imshow(matrix, aspect="auto", origin="upper", cmap=HEATMAP_CMAP, interpolation="nearest")
    figure.colorbar(image, ax=axes, label="attention weight")
    axes.set_title(title, fontsize="medium", pad=10)  # clear of the top tick label
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    # frames, segments and tokens are counted (no 2.5), and a few ticks inside the map keep
    # 4-digit frame numbers from running together
    for axis, size in ((axes.xaxis, matrix.shape[1]), (axes.yaxis, matrix.shape[0])):
        axis.set_ticks([t for t in MaxNLocator(nbins=5, integer=True).tick_values(0, size - 1) if 0 <= t <= size - 1])
    return axes


def window_label(maps: AttentionMaps, index: int, dropped_turns: int = 0) -> str:
    """The name of the `index`-th heard turn in the window ("You 2", "Reply 2"), the page's one
    numbering (es4r.conversation.turn_labels); maps made before it named turns by position."""
    if index < len(maps.window_labels):
        return maps.window_labels[index]
    return f"spoken turn {dropped_turns + index + 1}"


@_readable
def intra_figure(maps: AttentionMaps, window_index: int, head: int, dropped_turns: int = 0) -> Figure:
    """Intra-turn self-attention of one turn's frames (paper Sec. 3.1). window_index: 0-based
    among the turns inside the speech window (the oldest `dropped_turns` are outside it);
    head: 0-based."""
    weights = maps.intra[window_index]  # (heads, L_i, L_i)
    figure = _figure(HEATMAP_SIZE)
    _heatmap(figure, weights[head],
             _title(f"Intra-turn attention — {window_label(maps, window_index, dropped_turns)}, head {head + 1}",
                    maps.meaningful),
             "moment listened to (frame)", "moment listening (frame)")
    return figure


@_readable
def inter_figure(maps: AttentionMaps, head: int, dropped_turns: int = 0) -> Figure:
    """Inter-turn self-attention over the concatenated turns (paper Sec. 3.1); turn starts drawn."""
    figure = _figure(HEATMAP_SIZE)
    if maps.inter is None:
        return _empty(figure, "inter-turn attention is switched off (ablation)")
    axes = _heatmap(figure, maps.inter[head],
                    _title(f"Inter-turn attention — head {head + 1}", maps.meaningful),
                    "moment listened to (frame, all turns)", "moment listening (frame, all turns)")
    for index, start in enumerate(maps.turn_boundaries):
        if start > 0:
            axes.axvline(start - 0.5, color="cyan", linewidth=1)
            axes.axhline(start - 0.5, color="cyan", linewidth=1)
        late = start > 0.6 * maps.inter.shape[-1]  # named to the left of its corner, so it stays on the map
        axes.annotate(window_label(maps, index, dropped_turns), (start, start), xytext=(-3 if late else 3, -3),
                      textcoords="offset points", color="cyan", fontsize="small", va="top",
                      ha="right" if late else "left", bbox=LABEL_BOX)
    _hide_colliding(figure, axes.texts)
    return figure


@_readable
def cross_figure(maps: AttentionMaps) -> Figure:
    """Cross-modal attention (paper Sec. 3.2): speech segments (rows) x history words (columns),
    one box per turn: a turn's speech may only read that turn's words."""
    figure = _figure(HEATMAP_SIZE)
    if maps.cross is None:
        return _empty(figure, "cross-modal attention is switched off (ablation)")
    axes = _heatmap(figure, maps.cross, _title("Cross-modal attention: speech → words", maps.meaningful),
                    "word of the conversation (LLM token)", "piece of speech (segment)")
    for index, (tokens, speech) in enumerate(maps.cross_blocks):  # the turn blocks the mask allows
        if speech is not None:
            axes.add_patch(Rectangle((tokens[0] - 0.5, speech[0] - 0.5), tokens[1] - tokens[0], speech[1] - speech[0],
                                     fill=False, edgecolor="cyan", linewidth=0.8))
            late = tokens[0] > 0.6 * maps.cross.shape[1]  # named to the left of its box, so it stays on the map
            axes.annotate(maps.cross_labels[index] if index < len(maps.cross_labels) else f"T{index + 1}",
                          (tokens[1] - 0.5 if late else tokens[0] - 0.5, speech[0] - 0.5), xytext=(-2 if late else 2, -2),
                          textcoords="offset points", color="cyan", fontsize="small", va="top",
                          ha="right" if late else "left", bbox=LABEL_BOX)
    _hide_colliding(figure, axes.texts)
    labels = [token.replace("Ġ", "").replace("▁", "").replace("Ċ", "↵") for token in maps.history_tokens]
    step = max(1, -(-len(labels) // MAX_WORD_TICKS))
    positions = list(range(0, len(labels), step))
    axes.set_xticks(positions)
    axes.set_xticklabels([labels[p] for p in positions], rotation=90, fontsize="small")
    return figure


def _hide_colliding(figure: Figure, texts) -> None:
    """Hide each turn name that would overlap one already shown (short turns side by side in a
    long conversation): the lines still mark every turn, and the selector names them."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(figure).get_renderer()
    figure.draw_without_rendering()  # the layout first: the boxes are measured where they will be drawn
    shown = []
    for text in texts:
        box = text.get_window_extent(renderer).padded(2)
        if any(box.overlaps(other) for other in shown):
            text.set_visible(False)
        else:
            shown.append(box)


def _empty(figure: Figure, message: str) -> Figure:
    axes = figure.add_subplot()
    axes.text(0.5, 0.5, message, ha="center", va="center", transform=axes.transAxes)
    axes.set_axis_off()
    return figure
