"""Mutation score per module: mutmut (pinned in requirements-test.txt) mutates each pure-logic
module in turn and runs the tests that exercise it; a mutant the tests do not fail is a fault
nobody would notice. Prints one row per module and writes the table to docs/MUTATION_SCORE.md.

    python -m scripts.mutation_score                              # every module (about an hour)
    python -m scripts.mutation_score voice/strategy study/design  # some of them

Each module gets its own mutmut folder, mutants/<module>/ (ignored by git; started afresh on
every run), holding links to es4r/ and tests/ and a pyproject.toml with its [tool.mutmut]
section. Mutants that change no behaviour are listed, each with the line it plants and why it
is equivalent, in tests/mutation_equivalents.json; they are counted apart, never as killed,
and a listed mutant whose line no longer matches counts as a survivor (the list is stale).
Runs one test process at a time, under `nice`, with one torch thread."""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "mutants"
EQUIVALENTS = ROOT / "tests" / "mutation_equivalents.json"
TABLE = ROOT / "docs" / "MUTATION_SCORE.md"
TARGET = 0.85  # the share of mutants each module's tests must kill
PYTEST_ARGS = ["-n", "0", "-p", "no:cacheprovider", "-q"]  # one process: mutmut forks per mutant


@dataclass(frozen=True)
class Target:
    path: str  # the file mutmut mutates
    tests: tuple[str, ...]  # the test files that exercise it
    mutants: str = ""  # a mutant-name pattern when only part of the file is scored


MODULES = {
    "audio": Target("es4r/audio.py", ("tests/test_audio.py",)),
    "vad": Target("es4r/vad.py", ("tests/test_audio.py",)),
    "conversation": Target("es4r/conversation.py", ("tests/test_conversation.py",)),
    "ui/format": Target("es4r/ui/format.py", ("tests/test_ui_format.py",)),
    "ui/archive": Target("es4r/ui/archive.py", ("tests/test_ui_archive.py",)),
    "voice/strategy": Target("es4r/voice/strategy.py", ("tests/test_strategy_fusion.py",)),
    "voice/style_fusion": Target("es4r/voice/style_fusion.py", ("tests/test_strategy_fusion.py",)),
    "voice/plan": Target("es4r/voice/plan.py", ("tests/test_strategy_fusion.py",)),
    "modeling/affect_reader": Target("es4r/modeling/affect_reader.py", ("tests/test_affect_reader.py",)),
    "modeling/openings": Target("es4r/modeling/openings.py", ("tests/test_openings.py",)),
    "modeling/repeats": Target("es4r/modeling/repeats.py", ("tests/test_repeats.py", "tests/test_reply_bans.py")),
    "reply_text": Target("es4r/reply_text.py", ("tests/test_reply_text.py",)),
    "study/design": Target("es4r/study/design.py", ("tests/test_study_design.py",)),
    "study/store": Target("es4r/study/store.py", ("tests/test_study_store.py",)),
    "study/export": Target("es4r/study/export.py", ("tests/test_study_export.py",)),
    "training/losses": Target("es4r/training/losses.py", ("tests/test_training.py",)),
    "training/checkpoint": Target("es4r/training/checkpoint.py", ("tests/test_training.py", "tests/test_config.py")),
    "evaluation/metrics": Target("es4r/evaluation/metrics.py", ("tests/test_metrics.py",)),
    # the context meter is one method of the pipeline: only its mutants are run and scored
    "pipeline context meter": Target("es4r/pipeline.py", ("tests/test_context_meter.py",),
                                     "es4r.pipeline.xǁES4RPipelineǁcontext_usage__mutmut_*"),
}


def prepare(name: str, target: Target) -> Path:
    """A fresh mutmut folder for one module: links to the code and tests, and the project's
    pyproject.toml with a [tool.mutmut] section naming the module and its tests."""
    folder = WORK / re.sub(r"\W+", "_", name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for part in ("es4r", "tests"):
        (folder / part).symlink_to(ROOT / part)
    section = {"source_paths": ["es4r"], "only_mutate": [target.path], "pytest_add_cli_args": PYTEST_ARGS,
               "pytest_add_cli_args_test_selection": list(target.tests)}
    lines = ["", "[tool.mutmut]"] + [f"{key} = {json.dumps(value)}" for key, value in section.items()]
    (folder / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + "\n".join(lines) + "\n")
    return folder


def mutmut(folder: Path, *args: str, quiet: bool = True) -> str:
    command = ["nice", "-n", "19", "mutmut", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=folder, env=env, text=True, capture_output=quiet)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` in {folder} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout or ""


def planted_line(folder: Path, mutant: str) -> str:
    """The mutant's changed line as `mutmut show` gives it (its first added line, stripped)."""
    diff = mutmut(folder, "show", mutant)
    added = [line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    return added[0] if added else ""


def score(name: str, target: Target, equivalents: dict[str, dict[str, str]]) -> dict[str, object]:
    folder = prepare(name, target)
    started = time.perf_counter()
    mutmut(folder, "run", "--max-children", "1", *([target.mutants] if target.mutants else []))
    seconds = time.perf_counter() - started
    status = dict(re.findall(r"^\s*(\S+): (.+)$", mutmut(folder, "results", "--all", "true"), flags=re.M))
    if target.mutants:
        status = {key: value for key, value in status.items() if fnmatch.fnmatch(key, target.mutants)}
    counts = {"killed": 0, "survived": 0, "equivalent": 0, "timeout": 0, "other": 0}
    survivors, notes = [], []
    for mutant, verdict in sorted(status.items()):
        listed = equivalents.get(mutant)
        if verdict == "killed":
            counts["killed"] += 1
            if listed:
                notes.append(f"{mutant} is listed as equivalent but a test kills it: take it off the list")
        elif verdict == "timeout":
            counts["timeout"] += 1
        elif verdict in ("survived", "no tests"):
            if listed and planted_line(folder, mutant) == listed["mutation"]:
                counts["equivalent"] += 1
            else:
                counts["survived"] += 1
                survivors.append(mutant)
                if listed:
                    notes.append(f"{mutant} is listed as equivalent, but now plants another line (stale)")
        else:
            counts["other"] += 1
            survivors.append(f"{mutant} ({verdict})")
    total = sum(counts.values())
    return {"module": name, **counts, "total": total, "killed %": 100 * counts["killed"] / max(total, 1),
            "seconds": round(seconds), "date": date.today().isoformat(), "survivors": survivors, "notes": notes}


HEADER = ["module", "mutants", "killed", "survived", "equivalent", "timeout", "other", "killed %", "seconds", "date"]


def row(result: dict[str, object]) -> list[str]:
    return [str(result["module"]), str(result["total"]), *(str(result[k]) for k in
            ("killed", "survived", "equivalent", "timeout", "other")),
            f"{result['killed %']:.1f}", str(result["seconds"]), str(result["date"])]


def write_table(rows: dict[str, list[str]]) -> None:
    """Rows of modules not rerun are kept from the last table."""
    if TABLE.exists():
        for line in TABLE.read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == len(HEADER) and cells[0] in MODULES and cells[0] not in rows:
                rows[cells[0]] = cells
    body = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    body += ["| " + " | ".join(rows[name]) + " |" for name in MODULES if name in rows]
    missing = [name for name in MODULES if name not in rows]
    if missing:
        body += ["", f"Not scored yet: {', '.join(missing)}."]
    TABLE.write_text("# Mutation score per module\n\nWritten by `python -m scripts.mutation_score` (mutmut; "
                     "see docs/TESTING.md). *killed %* counts killed mutants of all mutants; *equivalent* "
                     "ones are listed with their reason in tests/mutation_equivalents.json; *other* is "
                     "what mutmut could not decide (suspicious, segfault). Target: "
                     f"{TARGET:.0%} killed in each module.\n\n" + "\n".join(body) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"some of: {', '.join(MODULES)} (default: all)")
    chosen = parser.parse_args().modules or list(MODULES)
    unknown = [m for m in chosen if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; choose from {list(MODULES)}")
    equivalents = json.loads(EQUIVALENTS.read_text()) if EQUIVALENTS.exists() else {}
    rows, short = {}, []
    print(" | ".join(HEADER), flush=True)
    for name in chosen:
        result = score(name, MODULES[name], equivalents)
        rows[name] = row(result)
        print(" | ".join(rows[name]), flush=True)
        for line in result["notes"] + [f"  survives: {m}" for m in result["survivors"]]:
            print("  " + line, flush=True)
        if result["killed %"] < 100 * TARGET:
            short.append(name)
    write_table(rows)
    if short:
        print(f"below {TARGET:.0%} killed: {', '.join(short)}")
    return 1 if short else 0


if __name__ == "__main__":
    raise SystemExit(main())
