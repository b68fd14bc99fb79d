import re

import numpy as np
import pytest

from es4r.config import StrategyConfig
from es4r.voice.strategy import select_strategy
from es4r.voice.style_fusion import fuse_styles, fusion_weights


@pytest.mark.parametrize("energies, expected", [
    ([1.0], "neutral"),
    ([1.0, 0.8], "neutral"),  # one fall is not sustained
    ([1.0, 0.8, 0.6], "comfort"),
    ([0.5, 1.0, 0.8, 0.6], "comfort"),
    ([1.0, 1.3], "encourage"),
    ([1.0, 0.8, 1.1], "encourage"),
    ([1.0, 1.02], "neutral"),  # within the 5 % tolerance
    ([1.0, 0.98, 0.96], "neutral"),  # falls, but each within tolerance
    ([1.0, 1.0, 1.0], "neutral"),
    ([1.0, 1.5], "encourage"),  # a two-turn rise
    ([1.0, 0.5], "neutral"),  # a two-turn fall
    ([1.0, 1.2, 0.7], "neutral"),  # a fall after a rise
])
def test_strategy_on_constructed_trends(energies, expected):
    decision = select_strategy(energies)
    assert decision.name == expected
    assert decision.params.name == expected and decision.reason.endswith(f"→ {expected}")
    _assert_reason_true(decision.reason, energies)


def _assert_reason_true(reason: str, energies: list[float]) -> None:
    """Every change the reason quotes is a real turn-to-turn change of these energies (as
    rounded in the text), and it says "fell"/"rose" only of changes that did."""
    changes = [(b - a) / a for a, b in zip(energies, energies[1:])]
    tolerance = f"{StrategyConfig().tolerance:.0%}"
    assert re.findall(r"(?:beyond|within the) (\d+%)", reason) in ([], [tolerance])
    quoted = re.findall(r"(fell|rose|changed|was)?\s*\(?([+-]?\d+)%", re.sub(r"(beyond|within the) \d+%", "", reason))
    for word, number in quoted:
        value = int(number) / 100
        if word == "fell" and not number.startswith("-"):
            value = -value  # "fell 50%" quotes the size of a fall
        matches = [c for c in changes if round(c * 100) == round(value * 100)]
        assert matches, f"{reason!r} quotes {word} {number}% but the changes are {changes}"
        if word == "fell":
            assert matches[0] < 0
        if word == "rose":
            assert matches[0] > 0
    if len(energies) >= 2:
        assert quoted, f"{reason!r} quotes no change of {energies}"


def test_comfort_is_slower_and_softer_encourage_brighter():
    table = StrategyConfig().table
    assert table["comfort"].speed < table["neutral"].speed < table["encourage"].speed
    assert table["comfort"].alpha < table["neutral"].alpha
    assert (table["neutral"].alpha, table["neutral"].beta) == (0.3, 0.7)
    assert table["comfort"].gain_db < 0 < table["encourage"].gain_db


def test_ablation_forces_neutral():
    assert select_strategy([1.0, 0.5, 0.2], StrategyConfig(empathetic_tts=False)).name == "neutral"


def test_fusion_weights_inverse_energy():
    energies = [0.5, 1.0, 2.0]
    weights = fusion_weights(energies, eps=1e-3)
    assert weights.sum() == pytest.approx(1.0)
    expected = np.array([1 / 0.501, 1 / 1.001, 1 / 2.001])
    assert np.allclose(weights, expected / expected.sum())
    assert weights[0] > weights[1] > weights[2]  # quieter turns count more


def test_fusion_rejects_bad_energies():
    with pytest.raises(ValueError):
        fusion_weights([], 1e-3)
    with pytest.raises(ValueError):
        fusion_weights([1.0, float("nan")], 1e-3)


def test_fuse_styles_weighted_sum():
    styles = [np.ones(4), np.zeros(4)]
    assert np.allclose(fuse_styles(styles, np.array([0.25, 0.75])), 0.25)
