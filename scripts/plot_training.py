"""Plot a training run's loss curve from its train_log.jsonl.

    python -m scripts.plot_training runs/es4r-embedded/train_log.jsonl --out curve.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SMOOTHING = 10  # steps in the moving average drawn over the raw curve


def moving_average(values: list[float], window: int) -> list[float]:
    out = []
    for index in range(len(values)):
        chunk = values[max(0, index - window + 1): index + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path, help="train_log.jsonl written by `python -m es4r train`")
    parser.add_argument("--out", type=Path, default=Path("training_curve.png"))
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in args.log.read_text().splitlines() if line.strip()]
    records = [r for r in rows if "loss" in r]  # one per optimizer step
    held_out = [r for r in rows if "val_ce" in r]  # one per kept snapshot
    steps = [r["step"] for r in records]
    figure, axis = plt.subplots(figsize=(7, 4), dpi=120)
    for key, colour in (("loss", "tab:blue"), ("ce", "tab:green"), ("kl", "tab:orange")):
        values = [r[key] for r in records]
        axis.plot(steps, values, color=colour, alpha=0.25)
        axis.plot(steps, moving_average(values, SMOOTHING), color=colour, label=f"{key} ({SMOOTHING}-step mean)")
    if held_out:
        axis.plot([r["step"] for r in held_out], [r["val_ce"] for r in held_out], "o-", color="tab:red",
                  label="held-out speech-path CE")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss (nats per response token)")
    axis.set_title(f"ES4R two-path training: {args.log.parent.name}")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
