"""OUT/audit/audit.db: users and their annotations, in SQLite.

Annotations are append-only (triggers refuse UPDATE and DELETE): a correction is a newer row,
so the history of who said what stays for agreement statistics and audits of the audit.
WAL with synchronous=FULL: a submission is on disk when `submit` returns, so a killed server
loses nothing it acknowledged, and readers never block the writer.
Sessions end after SESSION_MAX_AGE from login or SESSION_IDLE without a request, whichever
comes first; `revoke` ends a user's token and sessions at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from pks.errors import UserError

ROLES = ("annotator", "lead")
# label: an annotator's answer; adjudication: a lead's final answer for a clip (what `pks
# audit apply` writes back); gold: a known answer that queues mix in to measure annotators.
KINDS = ("label", "adjudication", "gold")
SESSION_MAX_AGE = 7 * 86400  # seconds from login
SESSION_IDLE = 12 * 3600  # seconds without a request
# `seen` is written at most this often: a write (an fsync) on every request would double the
# disk work of a busy server, and idle timeouts of hours do not need better than a minute.
TOUCH_EVERY = 60

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('annotator', 'lead')),
    token_sha256 TEXT NOT NULL UNIQUE,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS annotations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    clip_id TEXT NOT NULL,
    user TEXT NOT NULL REFERENCES users(name),
    kind TEXT NOT NULL CHECK (kind IN ('label', 'adjudication', 'gold')),
    mode TEXT NOT NULL DEFAULT '',
    labels TEXT NOT NULL,
    failure INTEGER NOT NULL DEFAULT 0,
    reasons TEXT NOT NULL DEFAULT '[]',
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id_sha256 TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users(name),
    csrf TEXT NOT NULL,
    created REAL NOT NULL,
    seen REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS annotations_clip ON annotations (clip_id, kind);
CREATE TRIGGER IF NOT EXISTS annotations_no_update BEFORE UPDATE ON annotations
BEGIN SELECT RAISE(ABORT, 'annotations are append-only'); END;
CREATE TRIGGER IF NOT EXISTS annotations_no_delete BEFORE DELETE ON annotations
BEGIN SELECT RAISE(ABORT, 'annotations are append-only'); END;
"""


@dataclass(frozen=True)
class Annotation:
    id: int
    clip_id: str
    user: str
    kind: str
    mode: str
    labels: dict  # a caption in canonical form (taxonomy.validate)
    failure: bool  # "this is a failure, not art"
    reasons: list[str]
    created: float


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Store:
    def __init__(self, out: str | Path):
        self.path = Path(out) / "audit" / "audit.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection per Store; the web app opens one per request thread.
        self.db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)
        if "seen" not in {r[1] for r in self.db.execute("PRAGMA table_info(sessions)")}:
            # a store from before idle timeouts: its sessions count as idle (their users log in again)
            with contextlib.suppress(sqlite3.OperationalError):  # another connection added it first
                self.db.execute("ALTER TABLE sessions ADD COLUMN seen REAL NOT NULL DEFAULT 0")

    def close(self) -> None:
        self.db.close()

    # ---- people -------------------------------------------------------------------------
    def add_user(self, name: str, role: str) -> str:
        """Create a user; returns the login token (only its hash is stored)."""
        if role not in ROLES:
            raise UserError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if not name or not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise UserError(f"user name {name!r}: letters, digits, '.', '_' and '-' only")
        token = secrets.token_urlsafe(24)
        try:
            self.db.execute("INSERT INTO users VALUES (?, ?, ?, ?)", (name, role, _digest(token), time.time()))
        except sqlite3.IntegrityError:
            raise UserError(f"user {name!r} already exists") from None
        return token

    def ensure_user(self, name: str, role: str) -> None:
        """A user who labels elsewhere (imported annotations): no token anyone knows."""
        if not self.db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
            self.add_user(name, role)

    def user(self, token: str) -> tuple[str, str] | None:
        """(name, role) of the user with this token, or None."""
        row = self.db.execute("SELECT name, role FROM users WHERE token_sha256 = ?", (_digest(token),)).fetchone()
        return (row[0], row[1]) if row else None

    def new_session(self, user: str) -> tuple[str, str]:
        """(session id for the cookie, CSRF token for forms) of a fresh login."""
        sid, csrf, now = secrets.token_urlsafe(32), secrets.token_urlsafe(24), time.time()
        self.db.execute(
            "INSERT INTO sessions (id_sha256, user, csrf, created, seen) VALUES (?, ?, ?, ?, ?)",
            (_digest(sid), user, csrf, now, now),
        )
        return sid, csrf

    def session(
        self, sid: str, max_age: float = SESSION_MAX_AGE, idle: float = SESSION_IDLE
    ) -> tuple[str, str, str] | None:
        """(user, role, csrf) of a live session, or None; a hit counts as activity."""
        now = time.time()
        row = self.db.execute(
            "SELECT s.user, u.role, s.csrf, s.seen FROM sessions s JOIN users u ON u.name = s.user "
            "WHERE s.id_sha256 = ? AND s.created > ? AND s.seen > ?",
            (_digest(sid), now - max_age, now - idle),
        ).fetchone()
        if row is None:
            return None
        if row[3] < now - TOUCH_EVERY:
            self.db.execute("UPDATE sessions SET seen = ? WHERE id_sha256 = ?", (now, _digest(sid)))
        return row[0], row[1], row[2]

    def purge_sessions(self, max_age: float = SESSION_MAX_AGE, idle: float = SESSION_IDLE) -> int:
        """Delete expired sessions (they no longer work anyway); returns how many."""
        now = time.time()
        return self.db.execute(
            "DELETE FROM sessions WHERE created <= ? OR seen <= ?", (now - max_age, now - idle)
        ).rowcount

    def revoke(self, name: str) -> int:
        """Lock `name` out at once: their token is replaced by one no one knows (the column is
        UNIQUE NOT NULL) and every session of theirs ends, in one transaction. The server looks
        sessions up in the database on every request, so this holds for running servers too.
        Returns how many sessions ended."""
        with self.db:  # commits, or rolls back on an exception
            self.db.execute("BEGIN IMMEDIATE")
            if not self.db.execute(
                "UPDATE users SET token_sha256 = ? WHERE name = ?", (_digest(secrets.token_urlsafe(24)), name)
            ).rowcount:
                raise UserError(f"no such user: {name!r}")
            return self.db.execute("DELETE FROM sessions WHERE user = ?", (name,)).rowcount

    def end_session(self, sid: str) -> None:
        self.db.execute("DELETE FROM sessions WHERE id_sha256 = ?", (_digest(sid),))

    def users(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT name, role FROM users ORDER BY name").fetchall())

    # ---- annotations --------------------------------------------------------------------
    def submit(
        self,
        clip_id: str,
        user: str,
        labels: dict,
        *,
        kind: str = "label",
        mode: str = "",
        failure: bool = False,
        reasons: list[str] | tuple = (),
    ) -> int:
        """Append one annotation (labels already validated against the taxonomy); durable on return."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        cur = self.db.execute(
            "INSERT INTO annotations (clip_id, user, kind, mode, labels, failure, reasons, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                clip_id,
                user,
                kind,
                mode,
                json.dumps(labels, sort_keys=True),
                int(failure),
                json.dumps(list(reasons)),
                time.time(),
            ),
        )
        assert cur.lastrowid is not None  # set by the INSERT
        return int(cur.lastrowid)

    def history(self, kind: str | None = None, clip_id: str | None = None) -> list[Annotation]:
        """Annotations in the order they were made (of one kind, on one clip, when given)."""
        where = {"kind = ?": kind, "clip_id = ?": clip_id}
        where = {k: v for k, v in where.items() if v is not None}
        rows = self.db.execute(
            "SELECT id, clip_id, user, kind, mode, labels, failure, reasons, created FROM annotations"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY id",
            tuple(where.values()),
        )
        return [
            Annotation(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), bool(r[6]), json.loads(r[7]), r[8]) for r in rows
        ]

    def latest(self, kind: str = "label", clip_id: str | None = None) -> dict[str, dict[str, Annotation]]:
        """{clip_id: {user: their newest annotation of this kind}} (on one clip, when given)."""
        out: dict[str, dict[str, Annotation]] = {}
        for a in self.history(kind, clip_id):
            out.setdefault(a.clip_id, {})[a.user] = a
        return out

    def annotators(self, kind: str = "label") -> dict[str, set[str]]:
        """{clip_id: users with an annotation of this kind}: what a queue needs on every request,
        without reading (and parsing) every label ever given."""
        out: dict[str, set[str]] = {}
        for clip_id, user in self.db.execute("SELECT DISTINCT clip_id, user FROM annotations WHERE kind = ?", (kind,)):
            out.setdefault(clip_id, set()).add(user)
        return out

    def final(self, kind: str) -> dict[str, Annotation]:
        """{clip_id: the newest annotation of this kind by anyone} (adjudications, gold)."""
        return {a.clip_id: a for a in self.history(kind)}
