"""The organiser's view of a study: answers de-randomised to the real systems, Win/Tie/Lose
per criterion, agreement between annotators (Fleiss' kappa), gold-item checks, the paper's
stacked bar chart, and the raw answers as CSV and JSONL."""

from __future__ import annotations

import csv
import json
import logging
import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from es4r.study.design import CHOICES, to_systems
from es4r.study.store import StudyStore

logger = logging.getLogger(__name__)

GOLD_PASS_RATE = 0.75  # annotators matching fewer gold answers than this are flagged
PERCENT = 100.0
CHART_COLOURS = {"win": "#3b7dd8", "tie": "#b8bec7", "lose": "#e07b39"}
CHART_ROW_HEIGHT = 0.55  # inches per criterion
CHART_WIDTH = 8.0  # inches
CHART_DPI = 150
MIN_LABELLED_PERCENT = 6.0  # narrower segments get no number printed inside
ANSWERS_QUERY = """
SELECT a.annotator_id, n.slot, n.seed AS annotator_seed, a.item_id, i.sample_id,
       a.position, i.gold_json, a.system_a, a.system_b, r.submitted_at,
       r.seconds_on_item, r.plays_a, r.plays_b
FROM responses r JOIN assignments a USING (annotator_id, item_id)
JOIN items i USING (item_id) JOIN annotators n USING (annotator_id)
ORDER BY n.slot, a.position
"""


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa of an (items, categories) table of how many raters chose each category.

    Every item must have the same number of raters (at least two). Returns nan when chance
    agreement is already perfect (every rating in one category), where kappa is undefined."""
    table = np.asarray(counts, dtype=np.float64)
    raters = table.sum(axis=1)
    if table.ndim != 2 or len(table) == 0 or raters[0] < 2 or np.any(raters != raters[0]):
        raise ValueError(f"expected an (items, categories) table with the same number (>= 2) of "
                         f"raters per item, found row sums {raters.tolist()}")
    n = raters[0]
    category_share = table.sum(axis=0) / table.sum()  # p_j
    item_agreement = (np.sum(table**2, axis=1) - n) / (n * (n - 1))  # P_i
    observed, chance = item_agreement.mean(), np.sum(category_share**2)
    if math.isclose(chance, 1.0):
        return math.nan
    return float((observed - chance) / (1 - chance))


@dataclass(frozen=True)
class CriterionTally:
    criterion: str
    kind: str  # text | speech
    win: int  # systems[0] judged better than systems[1]
    tie: int
    lose: int
    kappa: float  # Fleiss' kappa over the items with the usual number of ratings
    kappa_items: int  # how many items that was

    @property
    def total(self) -> int:
        return self.win + self.tie + self.lose

    def percent(self, choice: str) -> float:
        return PERCENT * getattr(self, choice) / self.total if self.total else math.nan


@dataclass(frozen=True)
class AnnotatorCheck:
    annotator_id: str
    seed: int
    answered: int  # items, gold included
    gold_checked: int  # gold criteria answered
    gold_correct: int
    flagged: bool  # failed the gold checks: maybe not paying attention


@dataclass(frozen=True)
class StudyResults:
    systems: tuple[str, str]
    tallies: tuple[CriterionTally, ...]
    annotators: tuple[AnnotatorCheck, ...]
    excluded: tuple[str, ...]  # flagged annotators left out of the tallies


def answer_rows(store: StudyStore) -> list[dict]:
    """Every submitted item, one dict each: who, what, in which order, and the answers both
    as given (A over B) and de-randomised (systems[0] over systems[1])."""
    spec = store.spec
    choices: dict[tuple[str, int], dict[str, str]] = defaultdict(dict)
    for row in store.rows("SELECT annotator_id, item_id, criterion, choice FROM judgements"):
        choices[row["annotator_id"], row["item_id"]][row["criterion"]] = row["choice"]
    rows = []
    for row in store.rows(ANSWERS_QUERY):
        given = choices[row["annotator_id"], row["item_id"]]
        rows.append({
            "annotator_id": row["annotator_id"], "annotator_slot": row["slot"],
            "annotator_seed": row["annotator_seed"], "study_seed": spec.seed,
            "item_id": row["item_id"], "sample_id": row["sample_id"],
            "position": row["position"], "is_gold": row["gold_json"] is not None,
            "gold": json.loads(row["gold_json"]) if row["gold_json"] else None,
            "system_A": row["system_a"], "system_B": row["system_b"],
            "submitted_at": row["submitted_at"], "seconds_on_item": row["seconds_on_item"],
            "plays_A": row["plays_a"], "plays_B": row["plays_b"],
            "choices_A_over_B": {c.name: given[c.name] for c in spec.criteria},
            "choices_systems": {c.name: to_systems(given[c.name], row["system_a"], spec.systems)
                                for c in spec.criteria},
        })
    return rows


def _gold_checks(rows: list[dict], threshold: float) -> tuple[AnnotatorCheck, ...]:
    checks, answered, seeds = Counter(), Counter(), {}
    correct = Counter()
    for row in rows:
        who = row["annotator_id"]
        seeds[who] = row["annotator_seed"]
        answered[who] += 1
        for criterion, expected in (row["gold"] or {}).items():
            checks[who] += 1
            correct[who] += row["choices_systems"][criterion] == expected
    return tuple(AnnotatorCheck(who, seeds[who], answered[who], checks[who], correct[who],
                                checks[who] > 0 and correct[who] / checks[who] < threshold)
                 for who in answered)


def summarise(store: StudyStore, exclude_flagged: bool = False,
              gold_pass_rate: float = GOLD_PASS_RATE) -> StudyResults:
    """Per-criterion tallies over regular (non-gold) items, with agreement and gold checks."""
    rows = answer_rows(store)
    annotators = _gold_checks(rows, gold_pass_rate)
    excluded = tuple(a.annotator_id for a in annotators if a.flagged) if exclude_flagged else ()
    counted = [r for r in rows if not r["is_gold"] and r["annotator_id"] not in excluded]
    tallies = []
    for criterion in store.spec.criteria:
        counts = Counter(r["choices_systems"][criterion.name] for r in counted)
        per_item: dict[int, Counter] = defaultdict(Counter)
        for r in counted:
            per_item[r["item_id"]][r["choices_systems"][criterion.name]] += 1
        sizes = Counter(sum(c.values()) for c in per_item.values() if sum(c.values()) >= 2)
        kappa, kappa_items = math.nan, 0
        if sizes:
            usual = max(sizes, key=lambda size: (sizes[size], size))
            table = [[c[choice] for choice in CHOICES] for c in per_item.values()
                     if sum(c.values()) == usual]
            kappa, kappa_items = fleiss_kappa(np.array(table)), len(table)
        tallies.append(CriterionTally(criterion.name, criterion.kind, counts["win"],
                                      counts["tie"], counts["lose"], kappa, kappa_items))
    return StudyResults(store.spec.systems, tuple(tallies), annotators, excluded)


def plot_tallies(results: StudyResults, path: str | Path) -> Path:
    """The paper's chart: one stacked horizontal bar (Win | Tie | Lose, %) per criterion."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tallies = [t for t in results.tallies if t.total]
    figure, axis = plt.subplots(figsize=(CHART_WIDTH, 2 + CHART_ROW_HEIGHT * len(tallies)))
    names = [t.criterion for t in tallies]
    left = np.zeros(len(tallies))
    first, second = results.systems
    labels = {"win": f"{first} wins", "tie": "Tie", "lose": f"{second} wins"}
    for choice in CHOICES:
        widths = np.array([t.percent(choice) for t in tallies])
        bars = axis.barh(names, widths, left=left, color=CHART_COLOURS[choice],
                         label=labels[choice], edgecolor="white")
        axis.bar_label(bars, labels=[f"{w:.1f}" if w >= MIN_LABELLED_PERCENT else ""
                                     for w in widths], label_type="center", fontsize=9)
        left += widths
    axis.invert_yaxis()
    axis.set_xlim(0, PERCENT)
    axis.set_xlabel("% of judgements")
    axis.set_title(f"{first} vs {second}: human A/B preference")
    axis.legend(ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.4 / len(tallies)),
                frameon=False)
    axis.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=CHART_DPI)
    plt.close(figure)
    return Path(path)


def tally_table(results: StudyResults) -> list[dict]:
    """Rows for display and tallies.csv."""
    return [{"criterion": t.criterion, "kind": t.kind, "n": t.total,
             "win_%": round(t.percent("win"), 1), "tie_%": round(t.percent("tie"), 1),
             "lose_%": round(t.percent("lose"), 1), "win": t.win, "tie": t.tie, "lose": t.lose,
             "fleiss_kappa": None if math.isnan(t.kappa) else round(t.kappa, 3),
             "kappa_items": t.kappa_items} for t in results.tallies]


@dataclass(frozen=True)
class ExportPaths:
    answers_csv: Path
    answers_jsonl: Path
    tallies_csv: Path
    summary_json: Path
    chart_png: Path


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["empty"])
        writer.writeheader()
        writer.writerows(rows)


def export_study(db_path: str | Path, out_dir: str | Path,
                 exclude_flagged: bool = False) -> ExportPaths:
    """Write answers.csv / answers.jsonl (raw), tallies.csv, summary.json and tallies.png."""
    store = StudyStore(db_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = answer_rows(store)
    results = summarise(store, exclude_flagged)
    paths = ExportPaths(out / "answers.csv", out / "answers.jsonl", out / "tallies.csv",
                        out / "summary.json", out / "tallies.png")
    with open(paths.answers_jsonl, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    flat = []
    for row in rows:
        plain = {key: value for key, value in row.items()
                 if key not in ("gold", "choices_A_over_B", "choices_systems")}
        for name, choice in row["choices_A_over_B"].items():
            plain[f"{name} (A over B)"] = choice
            plain[f"{name} ({' over '.join(store.spec.systems)})"] = row["choices_systems"][name]
        flat.append(plain)
    _write_csv(paths.answers_csv, flat)
    _write_csv(paths.tallies_csv, tally_table(results))
    summary = {"systems": list(results.systems), "study_seed": store.spec.seed,
               "tallies": tally_table(results), "excluded": list(results.excluded),
               "annotators": [asdict(a) for a in results.annotators]}
    paths.summary_json.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    plot_tallies(results, paths.chart_png)
    logger.info("exported %d answers from %s to %s", len(rows), db_path, out)
    return paths
