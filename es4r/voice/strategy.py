"""Stage 3 (paper Sec. 3.3): the speaking strategy from the energy trend of the user's turns.

Sustained decrease (E_{t-2} > E_{t-1} > E_t) -> comfort; increase (E_t > E_{t-1}) ->
encourage; otherwise neutral. A relative tolerance keeps noise from flipping it."""

from __future__ import annotations

from dataclasses import dataclass

from es4r.config import Strategy, StrategyConfig, StrategyParams

COMFORT, ENCOURAGE, NEUTRAL = Strategy.COMFORT, Strategy.ENCOURAGE, Strategy.NEUTRAL


@dataclass(frozen=True)
class StrategyDecision:
    name: Strategy
    params: StrategyParams
    reason: str  # one line in words, shown in the UI


def _falls(earlier: float, later: float, tolerance: float) -> bool:
    return later < earlier * (1.0 - tolerance)


def _rises(earlier: float, later: float, tolerance: float) -> bool:
    return later > earlier * (1.0 + tolerance)


def _change(earlier: float, later: float) -> float:
    return (later - earlier) / max(earlier, 1e-12)


def select_strategy(energies: list[float], config: StrategyConfig = StrategyConfig()) -> StrategyDecision:
    """energies: per user turn, oldest first (E_1..E_t). The reason states only what is true of
    those numbers (the plotted energies): the changes it quotes are theirs."""
    table, tol = config.table, config.tolerance
    if not config.empathetic_tts:
        return StrategyDecision(NEUTRAL, table[NEUTRAL], "empathetic TTS is switched off (ablation) → neutral")
    if len(energies) < 2:
        return StrategyDecision(NEUTRAL, table[NEUTRAL], "only one turn so far → neutral")
    last, previous = energies[-1], energies[-2]
    change = _change(previous, last)
    if len(energies) >= 3 and _falls(energies[-3], previous, tol) and _falls(previous, last, tol):
        before = _change(energies[-3], previous)
        return StrategyDecision(COMFORT, table[COMFORT],
                                f"energy fell in each of the last 2 changes ({before:+.0%}, then {change:+.0%}) → comfort")
    if _rises(previous, last, tol):
        return StrategyDecision(ENCOURAGE, table[ENCOURAGE], f"energy rose {change:.0%} since the last turn → encourage")
    if _falls(previous, last, tol):
        if len(energies) == 2:
            why = "comfort needs it to fall in two changes running, over 3 turns"
        else:
            why = f"the change before was {_change(energies[-3], previous):+.0%}, not a fall beyond {tol:.0%}"
        return StrategyDecision(NEUTRAL, table[NEUTRAL], f"energy fell {-change:.0%} since the last turn, but {why} → neutral")
    return StrategyDecision(NEUTRAL, table[NEUTRAL],
                            f"energy changed {change:+.0%} since the last turn, within the {tol:.0%} tolerance → neutral")
