"""Stage 3 (paper Sec. 3.3): style fusion ("empathy memory").

One style vector per user utterance, fused with weights w_i ∝ 1 / (E_i + ε), normalised:
quieter turns count more."""

from __future__ import annotations

import numpy as np


def fusion_weights(energies: list[float], eps: float) -> np.ndarray:
    """(T,) weights, w_i = (1/(E_i+eps)) / sum_j 1/(E_j+eps)."""
    values = np.asarray(energies, dtype=np.float64)
    if values.size == 0:
        raise ValueError("style fusion needs at least one turn")
    if np.any(values < 0) or not np.all(np.isfinite(values)):
        raise ValueError(f"energies must be finite and non-negative, found {values.tolist()}")
    inverse = 1.0 / (values + eps)
    return inverse / inverse.sum()


def fuse_styles(styles: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Weighted sum of per-turn style vectors (T, D) -> (D,) float32, like the style vectors
    the voices extract."""
    if len(styles) != len(weights):
        raise ValueError(f"{len(styles)} style vectors but {len(weights)} weights")
    stacked = np.stack([np.asarray(s, dtype=np.float32) for s in styles])
    return (stacked * weights[:, None].astype(np.float32)).sum(axis=0)
