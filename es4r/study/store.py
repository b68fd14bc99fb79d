"""The study's durable state: one SQLite file in WAL mode, every answer committed the moment
it is given, so a crash or restart loses nothing that was submitted.

Each call opens its own connection (safe across Gradio's worker threads and across
processes); writes that must not race run inside ``BEGIN IMMEDIATE``, and unique keys make
a second answer to the same item by the same annotator impossible. The blinding key (which
system is "A") lives in ``assignments`` and is only read by the export. A study is created
from an evaluation's outputs by es4r.study.build.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from es4r.study.design import CHOICES, Criterion, ItemLoad, annotator_seed, plan_annotator
from es4r.study.listening import Hearing, hearing

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: play events carry the stretch played; clips are fetched by opaque token
BUSY_TIMEOUT_MS = 30_000  # wait this long for another writer before giving up
ANNOTATOR_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
ID_RULE = ("1-64 letters, digits or . _ @ -; capitals and surrounding spaces are ignored "
           "(' Rater07' and 'rater07' are the same annotator)")


def normalise_annotator_id(raw: str | None) -> str:
    """The one spelling an ID is stored under: surrounding space removed, lower case."""
    return (raw or "").strip().lower()
SIDES = ("A", "B")
PLAY_EVENTS = ("play", "pause", "seek", "ended")  # 'seek': the player jumped while playing
ORGANISER_CODE_BYTES = 9  # 12 url-safe characters
CLIP_TOKEN_BYTES = 12  # 16 url-safe characters: a clip's only name in the page

PLAY_EVENTS_TABLE = """
CREATE TABLE play_events (
    event_id     INTEGER PRIMARY KEY,
    annotator_id TEXT NOT NULL,
    item_id      INTEGER NOT NULL,
    side         TEXT NOT NULL CHECK (side IN ('A', 'B')),
    event        TEXT NOT NULL CHECK (event IN ('play', 'pause', 'seek', 'ended')),
    at           REAL NOT NULL,           -- server time the report arrived
    from_s       REAL,                    -- play: where it started; else the stretch played ...
    to_s         REAL,                    -- ... up to here (clip seconds); NULL in schema 1
    played_at    REAL,                    -- when the player did it, by the page's clock (seconds)
    page         TEXT,                    -- the page load that reported it
    seq          INTEGER,                 -- its number there: a repeated report is kept once
    UNIQUE (page, seq));
"""
CLIPS_TABLE = """
CREATE TABLE clips (
    token        TEXT PRIMARY KEY,        -- the opaque name the page fetches the clip by
    annotator_id TEXT NOT NULL,
    item_id      INTEGER NOT NULL,
    part         TEXT NOT NULL,           -- 'A', 'B' or 'context N'
    file         TEXT NOT NULL,           -- the stimulus (beside the database)
    UNIQUE (annotator_id, item_id, part));
"""
MIGRATE_FROM_1 = ("ALTER TABLE play_events RENAME TO play_events_v1;" + PLAY_EVENTS_TABLE +
                  "INSERT INTO play_events (event_id, annotator_id, item_id, side, event, at) "
                  "SELECT event_id, annotator_id, item_id, side, event, at FROM play_events_v1;"
                  "DROP TABLE play_events_v1;" + CLIPS_TABLE +
                  "UPDATE meta SET value = '2' WHERE key = 'schema_version';")

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    item_id      INTEGER PRIMARY KEY,
    sample_id    TEXT NOT NULL UNIQUE,
    context_json TEXT NOT NULL,          -- [{role, utterance, audio, recognised}]; audio: normalised file
    replies_json TEXT NOT NULL,          -- {system: {text, audio, seconds}}; audio: ditto
    gold_json    TEXT,                   -- {criterion: choice of systems[0] over systems[1]}
    coin         INTEGER NOT NULL);      -- study-level side coin (design.balanced_coins)
CREATE TABLE annotators (
    annotator_id TEXT PRIMARY KEY,
    slot         INTEGER NOT NULL UNIQUE, -- arrival order, drives counterbalancing
    seed         INTEGER NOT NULL,        -- shuffles this annotator's items (logged)
    consented_at REAL NOT NULL);
CREATE TABLE assignments (
    annotator_id TEXT NOT NULL REFERENCES annotators,
    position     INTEGER NOT NULL,
    item_id      INTEGER NOT NULL REFERENCES items,
    system_a     TEXT NOT NULL,           -- the blinding key
    system_b     TEXT NOT NULL,
    shown_at     REAL,                    -- last time the item was put on screen
    PRIMARY KEY (annotator_id, position),
    UNIQUE (annotator_id, item_id));
CREATE TABLE responses (
    annotator_id   TEXT NOT NULL,
    item_id        INTEGER NOT NULL,
    submitted_at   REAL NOT NULL,
    seconds_on_item REAL,
    plays_a        INTEGER NOT NULL,
    plays_b        INTEGER NOT NULL,
    PRIMARY KEY (annotator_id, item_id),
    FOREIGN KEY (annotator_id, item_id) REFERENCES assignments (annotator_id, item_id));
CREATE TABLE judgements (
    annotator_id TEXT NOT NULL,
    item_id      INTEGER NOT NULL,
    criterion    TEXT NOT NULL,
    choice       TEXT NOT NULL CHECK (choice IN ('win', 'tie', 'lose')),  -- A over B
    PRIMARY KEY (annotator_id, item_id, criterion),
    FOREIGN KEY (annotator_id, item_id) REFERENCES responses (annotator_id, item_id));
""" + PLAY_EVENTS_TABLE + CLIPS_TABLE


class StudyError(ValueError):
    """A request the study cannot honour; the message is meant for the person who made it."""


class StudyFull(StudyError):
    """Every item already has the annotators it needs."""


class NotListened(StudyError):
    """An answer arrived before every part of both replies had played."""


@dataclass(frozen=True)
class StudySpec:
    systems: tuple[str, str]  # compared systems; results are systems[0] over systems[1]
    criteria: tuple[Criterion, ...]
    per_item: int  # annotators per item
    per_annotator: int  # regular items per annotator
    seed: int  # study seed: sample choice, side coins, annotator seeds
    target_lufs: float
    organiser_code: str  # unlocks the organiser tab
    pairs_dir: str
    # what participants see as the study's name: organiser-set, never a system's name (blinding)
    title: str = "Listening study"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "StudySpec":
        raw = json.loads(text)
        raw["systems"] = tuple(raw["systems"])
        raw["criteria"] = tuple(Criterion(**c) for c in raw["criteria"])
        return cls(**raw)


@dataclass(frozen=True)
class NewItem:
    sample_id: str
    context: list[dict]  # [{role, utterance, audio: str | None, recognised: bool}]
    replies: dict[str, dict]  # system -> {text, audio}
    gold: dict[str, str] | None
    coin: bool


@dataclass(frozen=True)
class PresentedItem:
    """What the browser may see: no system names, only "A" and "B", and clips by opaque token
    (no file or folder name)."""

    item_id: int
    position: int  # 0-based
    total: int
    context: list[dict]  # [{role, utterance, recognised, clip: token | None}]
    text_a: str
    clip_a: str
    text_b: str
    clip_b: str


@dataclass(frozen=True)
class ClipOwner:
    """Whose page a clip token belongs to, and the file it stands for."""

    annotator_id: str
    item_id: int
    part: str  # 'A', 'B' or 'context N'
    path: Path


@dataclass(frozen=True)
class Progress:
    done: int
    total: int


class StudyStore:
    """Handle on a study database; holds only its path and immutable spec (safe to share)."""

    def __init__(self, db_path: str | Path):
        self.db_path = Path(db_path)
        if not self.db_path.is_file():
            raise StudyError(f"no study database at {self.db_path}; create one with "
                             "`python -m es4r study create`")
        try:
            with self._connect() as db:
                meta = dict(db.execute("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError as error:  # not SQLite at all, or SQLite without our tables
            raise StudyError(f"{self.db_path} is not a study database ({error}); pass the file "
                             "`python -m es4r study create` wrote") from None
        if "spec" not in meta:
            raise StudyError(f"{self.db_path} is not a study database (no study spec in it); pass the "
                             "file `python -m es4r study create` wrote")
        if meta.get("schema_version") == "1":
            self._migrate_from_1()
            meta["schema_version"] = str(SCHEMA_VERSION)
        if int(meta.get("schema_version", -1)) != SCHEMA_VERSION:
            raise StudyError(f"{self.db_path} has schema {meta.get('schema_version')}, expected "
                             f"{SCHEMA_VERSION}; export it with the version that created it")
        self.spec = StudySpec.from_json(meta["spec"])

    def _migrate_from_1(self) -> None:
        """Schema 1 → 2 in one transaction: old play events keep their times (without stretches)."""
        with self._connect() as db:
            db.executescript("BEGIN IMMEDIATE;" + MIGRATE_FROM_1 + "COMMIT;")
        logger.info("%s: upgraded the study database to schema %d", self.db_path, SCHEMA_VERSION)

    @classmethod
    def create(cls, db_path: str | Path, spec: StudySpec, items: list[NewItem]) -> "StudyStore":
        db_path = Path(db_path)
        if db_path.exists():
            raise StudyError(f"{db_path} already exists; choose another --out or delete it")
        db = sqlite3.connect(db_path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript("BEGIN;" + SCHEMA + "COMMIT;")
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO meta VALUES (?, ?)",
                           [("schema_version", str(SCHEMA_VERSION)), ("spec", spec.to_json()),
                            ("created_at", str(time.time()))])
            db.executemany(
                "INSERT INTO items (sample_id, context_json, replies_json, gold_json, coin) "
                "VALUES (?, ?, ?, ?, ?)",
                [(item.sample_id, json.dumps(item.context), json.dumps(item.replies),
                  None if item.gold is None else json.dumps(item.gold), int(item.coin))
                 for item in items])
            db.execute("COMMIT")
        finally:
            db.close()
        return cls(db_path)

    @property
    def stimuli_dir(self) -> Path:
        """Where the loudness-normalised copies live (beside the database)."""
        return stimuli_dir_for(self.db_path)

    @staticmethod
    def _token(db: sqlite3.Connection, annotator_id: str, item_id: int, part: str,
               name: str | None) -> str | None:
        """The opaque token this annotator's page fetches a clip by (made once, then kept)."""
        if name is None:
            return None
        db.execute("INSERT OR IGNORE INTO clips VALUES (?, ?, ?, ?, ?)",
                   (secrets.token_urlsafe(CLIP_TOKEN_BYTES), annotator_id, item_id, part, name))
        return db.execute("SELECT token FROM clips WHERE annotator_id = ? AND item_id = ? AND part = ?",
                          (annotator_id, item_id, part)).fetchone()[0]

    def clip(self, token: str) -> ClipOwner | None:
        """The clip a page asks for by token; None for a token this study never gave out."""
        with self._connect() as db:
            row = db.execute("SELECT annotator_id, item_id, part, file FROM clips WHERE token = ?",
                             (token,)).fetchone()
        return None if row is None else ClipOwner(row[0], row[1], row[2], self.stimuli_dir / row[3])

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.db_path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            yield db
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the lock up front (no upgrade deadlocks)."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def register(self, annotator_id: str) -> Progress:
        """Enrol a new annotator (slot, seed, item plan in one transaction) or find a
        returning one; either way report their progress."""
        annotator_id = normalise_annotator_id(annotator_id)
        if not ANNOTATOR_ID.match(annotator_id):
            raise StudyError(f"annotator id {annotator_id!r} is not valid; use {ID_RULE}")
        with self._write() as db:
            if not db.execute("SELECT 1 FROM annotators WHERE annotator_id = ?",
                              (annotator_id,)).fetchone():
                slot = db.execute("SELECT COUNT(*) FROM annotators").fetchone()[0]
                seed = annotator_seed(self.spec.seed, slot)
                loads = [ItemLoad(item_id, bool(coin), assigned, gold is not None)
                         for item_id, coin, assigned, gold in db.execute(
                             "SELECT i.item_id, i.coin, COUNT(a.annotator_id), i.gold_json "
                             "FROM items i LEFT JOIN assignments a USING (item_id) "
                             "GROUP BY i.item_id ORDER BY i.item_id")]
                plan = plan_annotator(loads, self.spec.systems, self.spec.per_item,
                                      self.spec.per_annotator, seed)
                if not plan:
                    raise StudyFull("this study already has all the answers it needs; thank you")
                db.execute("INSERT INTO annotators VALUES (?, ?, ?, ?)",
                           (annotator_id, slot, seed, time.time()))
                db.executemany("INSERT INTO assignments VALUES (?, ?, ?, ?, ?, NULL)",
                               [(annotator_id, a.position, a.item_id, a.system_a, a.system_b)
                                for a in plan])
                logger.info("annotator %s enrolled: slot %d, seed %d, %d items",
                            annotator_id, slot, seed, len(plan))
        return self.progress(annotator_id)

    def progress(self, annotator_id: str) -> Progress:
        with self._connect() as db:
            total, done = db.execute(
                "SELECT COUNT(*), COUNT(r.item_id) FROM assignments a LEFT JOIN responses r "
                "USING (annotator_id, item_id) WHERE a.annotator_id = ?", (annotator_id,)).fetchone()
        return Progress(done, total)

    def next_item(self, annotator_id: str) -> PresentedItem | None:
        """The first item this annotator has not answered, marked as shown now; None when done."""
        with self._write() as db:
            row = db.execute(
                "SELECT a.position, a.item_id, a.system_a, a.system_b, i.context_json, "
                "i.replies_json FROM assignments a JOIN items i USING (item_id) "
                "LEFT JOIN responses r USING (annotator_id, item_id) "
                "WHERE a.annotator_id = ? AND r.item_id IS NULL ORDER BY a.position LIMIT 1",
                (annotator_id,)).fetchone()
            if row is None:
                return None
            position, item_id, system_a, system_b, context_json, replies_json = row
            db.execute("UPDATE assignments SET shown_at = ? WHERE annotator_id = ? AND item_id = ?",
                       (time.time(), annotator_id, item_id))
            total = db.execute("SELECT COUNT(*) FROM assignments WHERE annotator_id = ?",
                               (annotator_id,)).fetchone()[0]
            replies = json.loads(replies_json)
            context = [{"role": turn["role"], "utterance": turn["utterance"],
                        "recognised": turn.get("recognised", False),
                        "clip": self._token(db, annotator_id, item_id, f"context {index}", turn["audio"])}
                       for index, turn in enumerate(json.loads(context_json))]
            clip_a, clip_b = (self._token(db, annotator_id, item_id, side, replies[system]["audio"])
                              for side, system in zip(SIDES, (system_a, system_b)))
        return PresentedItem(item_id, position, total, context,
                             replies[system_a]["text"], clip_a, replies[system_b]["text"], clip_b)

    def log_play(self, annotator_id: str, item_id: int, side: str, event: str,
                 at: float | None = None, from_s: float | None = None, to_s: float | None = None,
                 page: str | None = None, seq: int | None = None, played_at: float | None = None) -> bool:
        """Record what a player did: 'play' from `from_s`, or the stretch `from_s`–`to_s` it
        played before it paused, jumped ('seek') or ended (`at` defaults to now). A report the
        same page sent before (same `page` and `seq`) is kept once; returns whether it was new.
        `played_at` is the page's clock: reports reach a busy server late and in bursts."""
        if side not in SIDES or event not in PLAY_EVENTS:
            raise StudyError(f"play event {side!r}/{event!r}; expected side in {SIDES} and "
                             f"event in {PLAY_EVENTS}")
        with self._write() as db:
            return db.execute(
                "INSERT OR IGNORE INTO play_events (annotator_id, item_id, side, event, at, from_s, "
                "to_s, played_at, page, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (annotator_id, item_id, side, event, time.time() if at is None else at, from_s, to_s,
                 played_at, page, seq)).rowcount == 1

    def hearing(self, annotator_id: str, item_id: int) -> dict[str, Hearing]:
        """How much of each reply this annotator has heard on this item (side -> Hearing)."""
        with self._connect() as db:
            return self._hearing(db, annotator_id, item_id)

    def listened(self, annotator_id: str, item_id: int) -> set[str]:
        """Sides this annotator has heard in full on this item (es4r.study.listening)."""
        return {side for side, state in self.hearing(annotator_id, item_id).items() if state.complete}

    @staticmethod
    def _hearing(db: sqlite3.Connection, annotator_id: str, item_id: int) -> dict[str, Hearing]:
        """The union of the stretches each player reported must cover its clip; seeking past a
        part leaves a gap, and a stretch longer than the time since the first play is refused (by
        the page's clock where it gave one, so a 'play' report that arrives late does not count)."""
        assigned = db.execute(
            "SELECT a.system_a, a.system_b, i.replies_json FROM assignments a JOIN items i "
            "USING (item_id) WHERE a.annotator_id = ? AND a.item_id = ?",
            (annotator_id, item_id)).fetchone()
        if assigned is None:
            return {}
        replies = json.loads(assigned[2])
        seconds = dict(zip(SIDES, (replies[assigned[0]]["seconds"], replies[assigned[1]]["seconds"])))
        spans: dict[str, list[tuple[float, float]]] = {side: [] for side in SIDES}
        first_play: dict[str, float] = {}
        last_report: dict[str, float] = {}
        for side, event, at, from_s, to_s, played_at in db.execute(
                "SELECT side, event, at, from_s, to_s, played_at FROM play_events WHERE annotator_id = ? "
                "AND item_id = ? ORDER BY event_id", (annotator_id, item_id)):
            at = at if played_at is None else played_at  # the player's own clock where it gave one
            if event == "play":
                first_play[side] = min(at, first_play.get(side, at))
            elif from_s is not None and to_s is not None:
                spans[side].append((from_s, to_s))
                last_report[side] = max(at, last_report.get(side, at))
        return {side: hearing(spans[side], seconds[side],
                              max(0.0, last_report.get(side, 0.0) - first_play[side])
                              if side in first_play else 0.0)
                for side in SIDES}

    def submit(self, annotator_id: str, item_id: int, choices: dict[str, str],
               require_listening: bool = True) -> bool:
        """Commit one item's answers (A over B per criterion). Returns False when this
        annotator had already answered the item (the first answer stands)."""
        names = [criterion.name for criterion in self.spec.criteria]
        if sorted(choices) != sorted(names) or any(c not in CHOICES for c in choices.values()):
            raise StudyError(f"answers {choices} must give one of {CHOICES} for each of {names}")
        with self._write() as db:
            shown = db.execute("SELECT shown_at FROM assignments WHERE annotator_id = ? AND "
                               "item_id = ?", (annotator_id, item_id)).fetchone()
            if shown is None:
                raise StudyError(f"item {item_id} is not assigned to annotator {annotator_id}")
            if db.execute("SELECT 1 FROM responses WHERE annotator_id = ? AND item_id = ?",
                          (annotator_id, item_id)).fetchone():
                return False
            plays = dict(db.execute(
                "SELECT side, SUM(event = 'play') FROM play_events WHERE annotator_id = ? AND "
                "item_id = ? GROUP BY side", (annotator_id, item_id)))
            if require_listening and not all(state.complete for state in
                                             self._hearing(db, annotator_id, item_id).values()):
                raise NotListened("please listen to every part of both replies before answering")
            now = time.time()
            db.execute("INSERT INTO responses VALUES (?, ?, ?, ?, ?, ?)",
                       (annotator_id, item_id, now, None if shown[0] is None else now - shown[0],
                        plays.get("A", 0), plays.get("B", 0)))
            db.executemany("INSERT INTO judgements VALUES (?, ?, ?, ?)",
                           [(annotator_id, item_id, name, choices[name]) for name in names])
        return True

    def rows(self, sql: str, parameters: tuple = ()) -> list[sqlite3.Row]:
        """Read-only query for the export (which alone sees the blinding key)."""
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            return db.execute(sql, parameters).fetchall()


def stimuli_dir_for(db_path: str | Path) -> Path:
    db_path = Path(db_path).resolve()
    return db_path.with_name(f"{db_path.stem}_stimuli")
