"""Every figure the page shows stays readable on a 390-px phone and at 1440 px, also for long
conversations: no text smaller than plots.MIN_TEXT_PX on the phone, no two labels overlapping,
none past the figure's edge. The figures are drawn from made-up maps (many turns, short ones,
a long history), so the layout is checked where it is hardest; each figure is kept as a PNG in
artifacts/figures/ to be looked at."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from es4r.config import Strategy
from es4r.conversation import AttentionMaps
from es4r.ui import plots

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "figures"


def _maps(turn_frames: list[int], tokens: int, meaningful: bool = True) -> AttentionMaps:
    """Maps of a conversation whose heard turns have `turn_frames` frames each and whose history
    has `tokens` tokens (words of a real sentence, repeated), with random weights."""
    rng = np.random.default_rng(len(turn_frames) * 100 + tokens)
    labels = [f"{'You' if i % 2 == 0 else 'Reply'} {i // 2 + 1}" for i in range(len(turn_frames))]
    total = sum(turn_frames)
    words = "Ġi Ġhad Ġa Ġrough Ġweek Ġat Ġwork Ċ You : Ġthat Ġsounds Ġhard".split()
    spans, start = [], 0
    for index in range(len(turn_frames)):
        end = start + tokens // len(turn_frames) if index < len(turn_frames) - 1 else tokens
        spans.append((start, end))
        start = end
    segments = max(len(turn_frames), total // 16)
    rows = np.linspace(0, segments, len(turn_frames) + 1).astype(int)
    return AttentionMaps(
        intra=[rng.random((8, n, n)) for n in turn_frames],
        inter=rng.random((8, total, total)),
        turn_boundaries=[int(b) for b in np.cumsum([0] + turn_frames[:-1])],
        cross=rng.random((segments, tokens)),
        history_tokens=[words[i % len(words)] for i in range(tokens)],
        meaningful=meaningful,
        cross_blocks=[(span, (int(rows[i]), int(rows[i + 1]))) for i, span in enumerate(spans)],
        window_labels=labels, cross_labels=labels,
    )


CASES = {
    "two_turns": (_maps([150, 200], 14), [0.12, 0.09], Strategy.COMFORT),
    "long_talk": (_maps([150, 20, 300, 12, 260, 25, 180, 30, 240, 18, 200, 22, 90], 140, meaningful=False),
                  [0.05, 0.07, 0.06, 0.09, 0.11, 0.08, 0.12], Strategy.ENCOURAGE),
}


def _figures(maps, energies, strategy):
    weights = list(np.array(energies) / sum(energies))
    return {"energy": plots.energy_figure(energies, strategy, 0.1), "fusion": plots.fusion_figure(weights),
            "intra": plots.intra_figure(maps, len(maps.intra) - 1, 7), "inter": plots.inter_figure(maps, 0),
            "cross": plots.cross_figure(maps)}


def _texts(figure, renderer) -> list:
    """The texts drawn, with their boxes: tick labels only of the ticks inside the view (the
    others exist but are not drawn)."""
    ticks = set()
    for axes in figure.axes:
        for axis in (axes.xaxis, axes.yaxis):
            for tick in axis._update_ticks():
                ticks.update((tick.label1, tick.label2))
    every_tick = {label for axes in figure.axes for axis in (axes.xaxis, axes.yaxis)
                  for tick in axis.get_major_ticks() + axis.get_minor_ticks() for label in (tick.label1, tick.label2)}
    return [(text, text.get_window_extent(renderer)) for text in figure.findobj(Text)
            if text.get_visible() and text.get_text().strip() and (text not in every_tick or text in ticks)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_label_is_large_enough_on_a_phone_apart_from_the_others_and_inside(case):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name, figure in _figures(*CASES[case]).items():
        renderer = FigureCanvasAgg(figure).get_renderer()
        figure.draw(renderer)
        figure.savefig(ARTIFACTS / f"{case}_{name}.png")
        scale = plots.PHONE_WIDTH_PX / figure.get_figwidth()  # screen pixels per inch, shown on a phone
        texts = _texts(figure, renderer)
        for text, box in texts:
            shown = text.get_fontsize() / 72 * scale
            assert shown >= plots.MIN_TEXT_PX, f"{case}/{name}: {text.get_text()!r} is {shown:.1f} px on a phone"
            assert box.x0 >= -1 and box.x1 <= figure.bbox.width + 1 and box.y0 >= -1 and box.y1 <= figure.bbox.height + 1, \
                f"{case}/{name}: {text.get_text()!r} runs past the edge"
        for axes in figure.axes:  # names drawn on a map stay on it; a legend covers no data
            inside = axes.get_window_extent(renderer).padded(1)
            for text in axes.texts:
                box = text.get_window_extent(renderer)
                assert not text.get_visible() or (inside.x0 <= box.x0 and box.x1 <= inside.x1), \
                    f"{case}/{name}: {text.get_text()!r} runs off the map"
            if axes.get_legend() is not None:
                assert not axes.get_legend().get_window_extent(renderer).overlaps(inside), f"{case}/{name}: legend"
        for legend in figure.legends:
            assert not any(legend.get_window_extent(renderer).overlaps(a.get_window_extent(renderer))
                           for a in figure.axes), f"{case}/{name}: the legend covers the plot"
        for i, (a, first) in enumerate(texts):
            for b, second in texts[i + 1:]:
                overlap = (min(first.x1, second.x1) - max(first.x0, second.x0)) * \
                          (min(first.y1, second.y1) - max(first.y0, second.y0))
                touching = min(first.x1, second.x1) > max(first.x0, second.x0) + 1 and \
                    min(first.y1, second.y1) > max(first.y0, second.y0) + 1
                assert not (touching and overlap > 2), \
                    f"{case}/{name}: {a.get_text()!r} overlaps {b.get_text()!r}"


def test_a_short_conversation_keeps_every_turn_label_and_word_ticks_where_they_fit():
    """The counterpart: labels are dropped only where they would collide — two turns keep both
    names in the inter-turn map, and a 14-token history keeps a tick for every word."""
    maps, energies, strategy = CASES["two_turns"]
    figures = _figures(maps, energies, strategy)
    inter = [t.get_text() for t in figures["inter"].axes[0].texts if t.get_visible()]
    assert inter == ["You 1", "Reply 1"]
    ticks = [t.get_text() for t in figures["cross"].axes[0].get_xticklabels() if t.get_text()]
    assert len(ticks) == 14
