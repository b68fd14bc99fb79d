"""Fitting the affect reader (es4r/modeling/affect_reader.py) before the two-path training.

The spoken corpus renders each conversation falling, rising and flat (assets/DATA_CARD.md), so
each row's `variant` is the label of how its user turns were spoken. The reader is a linear
classifier over two measured numbers per dialogue, fitted full-batch in a few hundred Adam
steps (seconds), then frozen: the reply losses never move it. Its accuracy on the training rows
and, when given, on held-out rows is logged and returned."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from es4r.data.manifest import PreparedSample
from es4r.modeling.affect_reader import AFFECTS, AffectReader, heard_user_turns

logger = logging.getLogger(__name__)

FIT_STEPS = 500
FIT_LR = 0.05


def trends_and_labels(reader: AffectReader, items: list[PreparedSample]) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 2) trends and (N,) AFFECTS indices of the rows that have a variant and a trend."""
    trends, labels = [], []
    for item in items:
        if item.sample.variant not in AFFECTS:
            continue
        trend = reader.trend(heard_user_turns(item.sample.history_turns(), item.features))
        if trend is not None:
            trends.append(trend)
            labels.append(AFFECTS.index(item.sample.variant))
    if not trends:
        return torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)
    return torch.stack(trends), torch.tensor(labels)


def accuracy(reader: AffectReader, trends: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((reader(trends).argmax(-1) == labels).float().mean()) if len(labels) else float("nan")


def fit_affect_reader(reader: AffectReader, items: list[PreparedSample],
                      val_items: list[PreparedSample] | None = None, seed: int = 0) -> dict[str, float] | None:
    """Fit `reader` on the rows' variants and mark it fitted; returns accuracies and row counts,
    or None (reader left unfitted, and it says so) when no row has a variant and two user turns."""
    trends, labels = trends_and_labels(reader, items)
    if len(set(labels.tolist())) < len(AFFECTS):
        logger.warning("affect reader not fitted: the training rows do not hold all of %s with two or more "
                       "heard user turns (the spoken corpus does); the speech path gets no affect note",
                       ", ".join(AFFECTS))
        return None
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        reader.classify.weight.normal_(0.0, 0.01, generator=generator)
        reader.classify.bias.zero_()
    params = list(reader.classify.parameters())
    for param in params:
        param.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=FIT_LR)
    with torch.enable_grad():
        for _ in range(FIT_STEPS):
            optimizer.zero_grad()
            loss = F.cross_entropy(reader(trends).float(), labels)
            loss.backward()
            optimizer.step()
    for param in params:
        param.requires_grad_(False)
    reader.fitted.fill_(1.0)
    report = {"rows": len(labels), "train_accuracy": accuracy(reader, trends, labels), "loss": float(loss.detach())}
    if val_items:
        val_trends, val_labels = trends_and_labels(reader, val_items)
        report.update(val_rows=len(val_labels), val_accuracy=accuracy(reader, val_trends, val_labels))
    logger.info("affect reader fitted on %d rows: %s", len(labels),
                ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in report.items()))
    return report
