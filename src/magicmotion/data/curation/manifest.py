"""The curation manifest: one SQLite row per source video and per clip, with its stage and status.

    sources(id, path, caption, objects, status, error, num_clips, num_frames, longest_scene,
            created, updated)
    clips(id, source, path, start_frame, start_pts, num_frames, frame_step, fps, caption,
          caption_inherited, given_objects, stage, status, error, attempts, objects, created, updated)

caption_inherited is 1 when a clip carries its source video's single caption (no per-scene caption
covers it, see `ingest.clip_caption`), 0 when the caption is its scene's own.
    meta(key, value)            the settings the clips were planned with

status is pending | running | done | failed (a source done with num_clips 0 was too short: its
num_frames and longest_scene say how short); stage is the stage a clip is in (or failed in):
load, objects, grounding, tracking, write. The database runs in WAL mode with synchronous=FULL, so a
committed row survives a killed process. Re-running resumes: sources not done are planned again,
clips not done are processed again from their first stage (work in flight is redone, never
duplicated: see `Manifest.reconcile`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from ...errors import ConfigError, DatasetError

STATUSES = ("pending", "running", "done", "failed")
STAGES = ("ingest", "load", "objects", "grounding", "tracking", "write")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    caption TEXT NOT NULL,
    objects TEXT,
    status TEXT NOT NULL DEFAULT 'pending',
    error TEXT,
    num_clips INTEGER,
    num_frames INTEGER,
    longest_scene INTEGER,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS clips (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL REFERENCES sources(id),
    path TEXT NOT NULL,
    start_frame INTEGER NOT NULL,
    start_pts INTEGER,
    num_frames INTEGER NOT NULL,
    frame_step INTEGER NOT NULL,
    fps REAL NOT NULL,
    caption TEXT NOT NULL,
    caption_inherited INTEGER NOT NULL DEFAULT 0,
    given_objects TEXT,
    stage TEXT NOT NULL DEFAULT 'load',
    status TEXT NOT NULL DEFAULT 'pending',
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    objects TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS clips_status ON clips(status);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Columns added after the first release, for manifests written before them.
_ADDED_COLUMNS = {"sources": (("num_frames", "INTEGER"), ("longest_scene", "INTEGER")),
                  "clips": (("caption_inherited", "INTEGER NOT NULL DEFAULT 0"),)}


@dataclass
class SourceRow:
    id: str
    path: str
    caption: str
    objects: list[str] | None
    status: str = "pending"
    error: str | None = None
    num_clips: int | None = None
    num_frames: int | None = None
    longest_scene: int | None = None


@dataclass
class ClipRow:
    """A clip planned from a source: frames start_frame, start_frame + frame_step, ... (num_frames of
    them). start_pts is the presentation timestamp of the first frame (for seeking), or None."""

    id: str
    source: str
    path: str
    start_frame: int
    num_frames: int
    frame_step: int
    fps: float
    caption: str
    given_objects: list[str] | None = None
    start_pts: int | None = None
    caption_inherited: bool = False
    stage: str = "load"
    status: str = "pending"
    error: str | None = None
    attempts: int = 0
    objects: list[str] | None = None


def _dump(value) -> str | None:
    return None if value is None else json.dumps(value)


def _load(text):
    return None if text is None else json.loads(text)


class Manifest:
    """The SQLite manifest at `path` (created if missing). One connection, one thread."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise DatasetError(f"{self.path}: folder {self.path.parent} does not exist")
        try:
            self.db = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
            for table, columns in _ADDED_COLUMNS.items():
                have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
                for name, kind in columns:
                    if name not in have:
                        self.db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
        except sqlite3.DatabaseError as e:
            raise DatasetError(f"{self.path}: not a curation manifest ({e})") from None
        self.db.row_factory = sqlite3.Row

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _write(self, sql: str, params=()) -> sqlite3.Cursor:
        with self._transaction():
            return self.db.execute(sql, params)

    @contextlib.contextmanager
    def _transaction(self):
        """BEGIN IMMEDIATE ... COMMIT (durable on return); ROLLBACK on any error or interrupt."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ---------------------------------------------------------------------------------- settings

    def check_settings(self, settings: dict) -> None:
        """Store the settings clips are planned with; on resume they must be the same (changing the
        clip length under a half-done dataset would mix two kinds of clips)."""
        stored = {row["key"]: json.loads(row["value"])
                  for row in self.db.execute("SELECT key, value FROM meta")}
        settings = json.loads(json.dumps(settings))  # tuples -> lists, as stored
        changed = {k: (stored[k], v) for k, v in settings.items() if k in stored and stored[k] != v}
        if changed:
            what = ", ".join(f"{k} was {a!r}, now {b!r}" for k, (a, b) in sorted(changed.items()))
            raise ConfigError(f"{self.path}: this dataset was curated with other settings ({what}); "
                              "use the same settings to resume, or another --out")
        with self._transaction():
            for k, v in settings.items():
                self.db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)",
                                (k, json.dumps(v)))

    # ----------------------------------------------------------------------------------- sources

    def add_sources(self, sources: list[SourceRow]) -> int:
        """Insert sources not yet known; returns how many were new."""
        now = time.time()
        with self._transaction():
            before = self.db.total_changes
            self.db.executemany(
                "INSERT OR IGNORE INTO sources(id, path, caption, objects, status, error, created, "
                "updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(s.id, s.path, s.caption, _dump(s.objects), s.status, s.error, now, now)
                 for s in sources])
            return self.db.total_changes - before

    def sources(self, statuses=STATUSES) -> list[SourceRow]:
        marks = ",".join("?" * len(statuses))
        rows = self.db.execute(f"SELECT * FROM sources WHERE status IN ({marks}) ORDER BY rowid",
                               tuple(statuses))
        return [SourceRow(id=r["id"], path=r["path"], caption=r["caption"],
                          objects=_load(r["objects"]), status=r["status"], error=r["error"],
                          num_clips=r["num_clips"], num_frames=r["num_frames"],
                          longest_scene=r["longest_scene"]) for r in rows]

    def start_source(self, source_id: str) -> None:
        self._write("UPDATE sources SET status='running', updated=? WHERE id=?", (time.time(), source_id))

    def finish_source(self, source_id: str, clips: list[ClipRow], num_frames: int | None = None,
                      longest_scene: int | None = None) -> None:
        """Insert the clips planned from a source and mark it done, in one transaction, with the
        video's length and its longest scene (frames)."""
        now = time.time()
        with self._transaction():
            self.db.executemany(
                "INSERT OR IGNORE INTO clips(id, source, path, start_frame, start_pts, num_frames, "
                "frame_step, fps, caption, caption_inherited, given_objects, stage, status, created, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'load', 'pending', ?, ?)",
                [(c.id, c.source, c.path, c.start_frame, c.start_pts, c.num_frames, c.frame_step,
                  c.fps, c.caption, int(c.caption_inherited), _dump(c.given_objects), now, now) for c in clips])
            self.db.execute("UPDATE sources SET status='done', error=NULL, num_clips=?, "
                            "num_frames=?, longest_scene=?, updated=? WHERE id=?",
                            (len(clips), num_frames, longest_scene, now, source_id))

    def fail_source(self, source_id: str, error: str) -> None:
        self._write("UPDATE sources SET status='failed', error=?, updated=? WHERE id=?",
                    (error, time.time(), source_id))

    def short_sources(self) -> list[SourceRow]:
        """Sources that were read but gave no clip (shorter than a clip, or cut into scenes that
        are)."""
        return [s for s in self.sources(("done",)) if s.num_clips == 0]

    # ------------------------------------------------------------------------------------- clips

    def clips(self, statuses=STATUSES) -> list[ClipRow]:
        marks = ",".join("?" * len(statuses))
        rows = self.db.execute(f"SELECT * FROM clips WHERE status IN ({marks}) ORDER BY rowid",
                               tuple(statuses))
        return [self._clip(r) for r in rows]

    def clip(self, clip_id: str) -> ClipRow | None:
        r = self.db.execute("SELECT * FROM clips WHERE id=?", (clip_id,)).fetchone()
        return None if r is None else self._clip(r)

    @staticmethod
    def _clip(r) -> ClipRow:
        return ClipRow(id=r["id"], source=r["source"], path=r["path"], start_frame=r["start_frame"],
                       start_pts=r["start_pts"], num_frames=r["num_frames"],
                       frame_step=r["frame_step"], fps=r["fps"], caption=r["caption"],
                       caption_inherited=bool(r["caption_inherited"]),
                       given_objects=_load(r["given_objects"]), stage=r["stage"],
                       status=r["status"], error=r["error"], attempts=r["attempts"],
                       objects=_load(r["objects"]))

    def start(self, clip_ids: list[str], stage: str) -> None:
        """Clips enter `stage` (the first stage counts an attempt)."""
        now = time.time()
        bump = 1 if stage == "load" else 0
        with self._transaction():
            self.db.executemany(
                "UPDATE clips SET status='running', stage=?, attempts=attempts+?, updated=? "
                "WHERE id=?", [(stage, bump, now, c) for c in clip_ids])

    def set_objects(self, clip_id: str, objects: list[str]) -> None:
        self._write("UPDATE clips SET objects=?, updated=? WHERE id=?",
                    (_dump(objects), time.time(), clip_id))

    def done(self, clip_id: str) -> None:
        self._write("UPDATE clips SET status='done', stage='write', error=NULL, updated=? WHERE id=?",
                    (time.time(), clip_id))

    def fail(self, clip_id: str, stage: str, error: str) -> None:
        self._write("UPDATE clips SET status='failed', stage=?, error=?, updated=? WHERE id=?",
                    (stage, error, time.time(), clip_id))

    def reconcile(self, index_ids: set[str]) -> list[str]:
        """Clips that are in the dataset index but not marked done (the process was killed between
        writing the clip and marking it): mark them done. Returns their ids."""
        fixed = [c.id for c in self.clips(("pending", "running", "failed")) if c.id in index_ids]
        for c in fixed:
            self.done(c)
        return fixed

    def retry_failed(self) -> int:
        """Failed sources and clips go back to pending; returns how many clips."""
        now = time.time()
        with self._transaction():
            self.db.execute("UPDATE sources SET status='pending', error=NULL, updated=? "
                            "WHERE status='failed'", (now,))
            cur = self.db.execute("UPDATE clips SET status='pending', stage='load', error=NULL, "
                                  "updated=? WHERE status='failed'", (now,))
            return cur.rowcount

    # ---------------------------------------------------------------------------------- counting

    def counts(self) -> dict:
        """{"sources": {status: n}, "clips": {status: n}} with every status present."""
        out = {}
        for table in ("sources", "clips"):
            got = dict(self.db.execute(f"SELECT status, COUNT(*) FROM {table} GROUP BY status").fetchall())
            out[table] = {s: int(got.get(s, 0)) for s in STATUSES}
        return out

    def failures(self) -> list[tuple[str, str, str]]:
        """(id, stage, error) of every failed source ('ingest') and clip."""
        rows = [(r["id"], "ingest", r["error"] or "")
                for r in self.db.execute("SELECT id, error FROM sources WHERE status='failed' "
                                         "ORDER BY rowid")]
        rows += [(r["id"], r["stage"], r["error"] or "")
                 for r in self.db.execute("SELECT id, stage, error FROM clips WHERE status='failed' "
                                          "ORDER BY rowid")]
        return rows
