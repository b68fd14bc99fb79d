import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from es4r.config import StrategyConfig
from es4r.conversation import USER, Turn
from es4r.voice.plan import plan_voice
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
    assert "None" not in reason
    for word, number in quoted:
        value = int(number) / 100
        if word in ("fell", "rose"):
            assert number[0].isdigit(), f"{reason!r}: '{word}' quotes the size of the change, unsigned"
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
    config = StrategyConfig(empathetic_tts=False)
    for energies in ([1.0, 0.5, 0.2], [1.0, 2.0], [1.0]):
        decision = select_strategy(energies, config)
        assert (decision.name, decision.params) == ("neutral", config.table["neutral"])
        assert "empathetic TTS is switched off" in decision.reason and decision.reason.endswith("→ neutral")


@pytest.mark.parametrize("energies", [[1.0], [1.0, 1.0], [1.0, 0.5], [1.0, 1.2, 0.7], [1.0, 1.0, 1.01]])
def test_neutral_decisions_carry_the_neutral_parameters(energies):
    decision = select_strategy(energies)
    assert decision.name == "neutral" and decision.params == StrategyConfig().table["neutral"]


def test_a_fall_not_sustained_says_why():
    """Two turns: comfort needs a second fall; three or more: the reason quotes the change before."""
    assert select_strategy([1.0, 0.5]).reason.endswith(
        "fell 50% since the last turn, but comfort needs it to fall in two changes running, over 3 turns → neutral")
    reason = select_strategy([1.0, 1.2, 0.7]).reason
    assert "change before was +20%" in reason and "fell 42%" in reason


@pytest.mark.parametrize("step", ["fall", "rise"])
def test_a_change_of_exactly_the_tolerance_is_within_it(step):
    """The tolerance is inclusive: a change of exactly it is noise ("within the tolerance"), any
    change beyond it counts. 0.25 keeps the products exact in binary floating point."""
    config, factor = StrategyConfig(tolerance=0.25), (0.75 if step == "fall" else 1.25)
    at_edge = [1.0, factor, factor * factor]
    assert select_strategy(at_edge, config).name == "neutral"
    beyond = [1.0, factor * 1.001 if step == "rise" else factor * 0.999]
    beyond.append(beyond[-1] * beyond[-1])
    assert select_strategy(beyond, config).name == ("comfort" if step == "fall" else "encourage")


def test_fusion_weights_inverse_energy():
    energies = [0.5, 1.0, 2.0]
    weights = fusion_weights(energies, eps=1e-3)
    assert weights.sum() == pytest.approx(1.0)
    expected = np.array([1 / 0.501, 1 / 1.001, 1 / 2.001])
    assert np.allclose(weights, expected / expected.sum())
    assert weights[0] > weights[1] > weights[2]  # quieter turns count more


energy_lists = st.lists(st.floats(0.0, 1e3, allow_nan=False), min_size=1, max_size=12)


@given(energy_lists, st.sampled_from([1e-3, 1e-2, 1.0]))
def test_fusion_weights_sum_to_one_and_order_inversely_to_energy(energies, eps):
    weights = fusion_weights(energies, eps)
    assert weights.shape == (len(energies),) and np.all(weights > 0)
    assert weights.sum() == pytest.approx(1.0)
    for (e_i, w_i), (e_j, w_j) in zip(zip(energies, weights), zip(energies[1:], weights[1:])):
        if e_i < e_j:
            assert w_i >= w_j
        elif e_i == e_j:
            assert w_i == pytest.approx(w_j)
    ratio = np.array(weights) * (np.array(energies) + eps)  # w_i (E_i + eps) is one constant
    assert np.allclose(ratio, ratio[0])


def test_fusion_takes_silence_and_rejects_negative_or_missing_energies():
    assert fusion_weights([0.0, 1.0], 1e-3)[0] > 0.99  # a silent turn is a valid (very quiet) turn
    with pytest.raises(ValueError, match="at least one turn"):
        fusion_weights([], 1e-3)
    for bad in ([1.0, float("nan")], [1.0, float("inf")], [1.0, -0.5]):
        with pytest.raises(ValueError, match=r"finite and non-negative, found \["):
            fusion_weights(bad, 1e-3)


def test_fuse_styles_weighted_sum():
    styles = [np.ones(4), np.zeros(4)]
    assert np.allclose(fuse_styles(styles, np.array([0.25, 0.75])), 0.25)
    with pytest.raises(ValueError, match="2 style vectors but 3 weights"):
        fuse_styles(styles, np.array([0.2, 0.3, 0.5]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_style_is_float32_like_the_voices_style_vectors(dtype):
    styles = [np.full(3, 2.0, dtype), np.full(3, 4.0, dtype)]
    fused = fuse_styles(styles, fusion_weights([1.0, 3.0], 0.0))
    assert fused.dtype == np.float32 and fused.shape == (3,)
    assert np.allclose(fused, 0.75 * 2.0 + 0.25 * 4.0)


class _StyleVoice:
    """Just the part of a voice `plan_voice` uses: a style vector read off each recording
    (its mean and its length in seconds, so the fused vector shows which turns it came from)."""

    name, accepts_style = "style-voice", True

    def __init__(self):
        self.heard: list[tuple[int, int]] = []

    def extract_style(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        self.heard.append((len(audio), sample_rate))
        return np.array([audio.mean(), len(audio) / sample_rate], dtype=np.float32)


def _user_turns(energies: list[float]) -> list[Turn]:
    return [Turn(USER, f"turn {i}", np.full(800 * (i + 1), float(i), np.float32), 8000, energy)
            for i, energy in enumerate(energies)]


@pytest.mark.parametrize("energies", [[0.5], [1.0, 0.8, 0.6], [1.0, 1.5], [2.0, 0.5, 1.0, 1.0]])
def test_voice_plan_is_the_strategy_and_the_fused_style_of_the_user_turns(energies):
    config, voice, turns = StrategyConfig(), _StyleVoice(), _user_turns(energies)
    plan = plan_voice(turns, config, voice)
    assert plan.energies == energies and all(type(e) is float for e in plan.energies)
    assert plan.decision == select_strategy(energies, config)
    assert np.allclose(plan.fusion_weights, fusion_weights(energies, config.fusion_eps))
    assert voice.heard == [(len(t.audio), t.sample_rate) for t in turns]  # every turn, in order, at its rate
    styles = [np.array([t.audio.mean(), len(t.audio) / t.sample_rate]) for t in turns]
    assert np.allclose(plan.style, np.sum([w * s for w, s in zip(plan.fusion_weights, styles)], axis=0))
    assert plan.notes == [] and 0 <= plan.seconds < 1


def test_voice_plan_without_style_voice_says_so_and_ablation_fuses_nothing():
    voice = _StyleVoice()
    voice.accepts_style, voice.name = False, "plain-voice"
    plan = plan_voice(_user_turns([1.0, 0.5]), StrategyConfig(), voice)
    assert plan.style is None and voice.heard == [] and plan.fusion_weights is not None
    assert len(plan.notes) == 1 and "plain-voice" in plan.notes[0] and "cannot take a style vector" in plan.notes[0]
    assert "pace/expressiveness are applied" in plan.notes[0]
    off = plan_voice(_user_turns([1.0, 0.5, 0.2]), StrategyConfig(empathetic_tts=False), _StyleVoice())
    assert off.fusion_weights is None and off.style is None and off.notes == [] and off.decision.name == "neutral"
