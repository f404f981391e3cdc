"""The journal: an append-only SQLite (WAL) record of deployments and node phase transitions.
(The lock that keeps two deployments of one environment apart is :mod:`deployer.adapters.lock`.)

Every phase change is committed as it happens, so after a crash the journal still says which
nodes were out of the load balancer and what they were doing.

Commands that only read (``status``, ``history``, ``plan``) open it read-only
(``Journal(path, read_only=True)``): SQLite's ``mode=ro``, no migration, nothing written; a
deployment whose process is gone without finishing is shown as abandoned
(:func:`is_abandoned`), and only marked failed by the next command that writes.

Schema versions (``PRAGMA user_version``): 1, the first; 2 adds ``deployments.deployer_version``,
the version of deployer that ran each deployment (empty for those recorded before); 3 adds
``deployments.pid_start``, the start time of the deploying process, so that a reused PID is not
taken for it; 4 adds ``deployments.uid``, a globally unique id (a ULID) per deployment, given
to the rows already there from their start times; 5 adds the ``evidence`` table, each
deployment's signed evidence record (:mod:`deployer.gates.evidence`). Opening a journal
migrates it in place; rows already there stay readable.

A deployment is named by its number in this journal or by its uid (:meth:`Journal.find`).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from .._clock import iso_utc
from .._ids import new_ulid
from .process import actor, pid_start, process_alive

__all__ = ["ABANDONED_SUMMARY", "DeploymentRecord", "EvidenceRow", "Journal", "NodeEvent",
           "is_abandoned"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    env TEXT NOT NULL,
    app TEXT NOT NULL,
    kind TEXT NOT NULL,               -- deploy | rollback | resume | recover | unlock | freeze
                                      -- | unfreeze
    version TEXT NOT NULL,            -- the target release
    status TEXT NOT NULL,             -- running | succeeded | failed | rolled_back | cancelled
                                      -- | refused | stopped | paused
    started_at REAL NOT NULL,
    ended_at REAL,
    actor TEXT NOT NULL,              -- user@host
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    command TEXT NOT NULL,
    summary TEXT NOT NULL DEFAULT '',
    details TEXT NOT NULL DEFAULT '{}', -- JSON: manifest digest, plan, ...
    deployer_version TEXT NOT NULL DEFAULT '', -- the deployer that ran it (schema 2)
    pid_start TEXT NOT NULL DEFAULT '',        -- the start time of pid (schema 3)
    uid TEXT NOT NULL DEFAULT ''               -- globally unique id, a ULID (schema 4)
);
CREATE TABLE IF NOT EXISTS node_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id INTEGER NOT NULL REFERENCES deployments(id),
    node TEXT NOT NULL,
    phase TEXT NOT NULL,
    at REAL NOT NULL,
    from_version TEXT,
    to_version TEXT,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS node_events_by_deployment ON node_events(deployment_id, id);
CREATE TABLE IF NOT EXISTS evidence (
    deployment_id INTEGER PRIMARY KEY REFERENCES deployments(id),
    uid TEXT NOT NULL,
    created_at REAL NOT NULL,
    record TEXT NOT NULL,             -- the evidence record, exactly the bytes signed (JSON)
    signature TEXT NOT NULL DEFAULT '', -- its minisign signature ('' unsigned)
    key_id TEXT NOT NULL DEFAULT '',    -- the signing key's id
    published TEXT NOT NULL DEFAULT ''  -- where it was published ('' nowhere)
);
"""
SCHEMA_VERSION = 5
# Columns added since schema 1, in order: (table, column, definition).
_ADDED_COLUMNS = (
    ("deployments", "deployer_version", "TEXT NOT NULL DEFAULT ''"),
    ("deployments", "pid_start", "TEXT NOT NULL DEFAULT ''"),
    ("deployments", "uid", "TEXT NOT NULL DEFAULT ''"),
)


@dataclass(frozen=True)
class DeploymentRecord:
    id: int
    env: str
    app: str
    kind: str
    version: str
    status: str
    started_at: float
    ended_at: float | None
    actor: str
    host: str
    pid: int
    command: str
    summary: str
    details: dict[str, Any]
    deployer_version: str = ""  # empty for deployments recorded before schema 2
    pid_start: str = ""  # the start time of pid; empty for deployments recorded before schema 3
    uid: str = ""  # the globally unique id (given to older rows when the journal is migrated)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "uid": self.uid, "env": self.env, "app": self.app, "kind": self.kind,
            "version": self.version, "status": self.status,
            "start": iso_utc(self.started_at), "end": iso_utc(self.ended_at) if self.ended_at else None,
            "actor": self.actor, "host": self.host, "pid": self.pid, "command": self.command,
            "summary": self.summary, "deployer_version": self.deployer_version,
            **({"resumes": self.details["resumes"]} if self.details.get("resumes") else {}),
        }


@dataclass(frozen=True)
class NodeEvent:
    deployment_id: int
    node: str
    phase: str
    at: float
    from_version: str | None
    to_version: str | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment_id, "node": self.node, "phase": self.phase,
            "at": iso_utc(self.at), "from_version": self.from_version,
            "to_version": self.to_version, "detail": self.detail,
        }


@dataclass(frozen=True)
class EvidenceRow:
    """A deployment's evidence record as the journal keeps it."""

    deployment_id: int
    uid: str
    created_at: float
    record: bytes
    signature: str
    key_id: str
    published: str


def is_abandoned(record: DeploymentRecord) -> bool:
    """A deployment still recorded as running whose process is gone from this host: its PID
    and the PID's start time (a PID the kernel handed to another process since is gone; a
    record older than schema 3 has no start time, its PID alone is checked). A deployment run
    from another host is never judged from here."""
    return (
        record.status == "running" and record.host == socket.gethostname()
        and not process_alive(record.pid, record.pid_start or None)
    )


ABANDONED_SUMMARY = "the deploying process ended unexpectedly"


class Journal:
    """One SQLite database per config's state directory; ``read_only`` for commands that only
    read it (a journal not written yet then reads as an empty one, and is not created)."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        if read_only:
            if path.exists():
                self._db = sqlite3.connect(
                    f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0, isolation_level=None
                )
                self._db.row_factory = sqlite3.Row
                self._stand_in_for_missing_tables()
            else:
                self._db = sqlite3.connect(":memory:", isolation_level=None)
                self._db.row_factory = sqlite3.Row
                self._db.executescript(_SCHEMA)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=10.0, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._migrate()
        self._db.execute("CREATE UNIQUE INDEX IF NOT EXISTS deployments_by_uid ON deployments(uid)")

    def _stand_in_for_missing_tables(self) -> None:
        """Read-only, a journal written before a table existed reads as if that table were
        empty: an empty temporary table of the same name (in memory) stands in for it."""
        present = {r["name"] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for statement in _SCHEMA.split(";"):
            words = statement.split()
            if words[:5] == ["CREATE", "TABLE", "IF", "NOT", "EXISTS"] and words[5] not in present:
                self._db.execute(statement.replace("CREATE TABLE", "CREATE TEMP TABLE", 1))

    def _migrate(self) -> None:
        """Bring a journal written by an older deployer to :data:`SCHEMA_VERSION`."""
        if self._db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return
        with self._tx() as db:
            for table, column, definition in _ADDED_COLUMNS:
                present = {r["name"] for r in db.execute(f"PRAGMA table_info({table})")}
                if column not in present:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
            # Rows from before schema 4 get a uid too, from their start time.
            for row in db.execute("SELECT id, started_at FROM deployments WHERE uid = ''").fetchall():
                db.execute("UPDATE deployments SET uid = ? WHERE id = ?",
                           (new_ulid(row["started_at"]), row["id"]))
            db.execute("CREATE UNIQUE INDEX IF NOT EXISTS deployments_by_uid ON deployments(uid)")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if self.read_only:
            raise RuntimeError(f"the journal {self.path} was opened read-only")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- deployments and node events -----------------------------------------------------

    def start_deployment(
        self, *, env: str, app: str, kind: str, version: str, command: str,
        details: dict[str, Any] | None = None,
    ) -> int:
        return self.start(env=env, app=app, kind=kind, version=version, command=command,
                          details=details)[0]

    def start(
        self, *, env: str, app: str, kind: str, version: str, command: str,
        details: dict[str, Any] | None = None,
    ) -> tuple[int, str]:
        """Record a deployment as running; its number here and its uid."""
        started = time.time()
        uid = new_ulid(started)
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO deployments (env, app, kind, version, status, started_at, actor, host,"
                " pid, command, details, deployer_version, pid_start, uid)"
                " VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (env, app, kind, version, started, actor(), socket.gethostname(),
                 os.getpid(), command, json.dumps(details or {}, sort_keys=True), __version__,
                 pid_start(os.getpid()), uid),
            )
            return int(cur.lastrowid or 0), uid

    def finish_deployment(self, deployment_id: int, status: str, summary: str = "") -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE deployments SET status = ?, ended_at = ?, summary = ? WHERE id = ?",
                (status, time.time(), summary, deployment_id),
            )

    def update_details(self, deployment_id: int, **details: Any) -> None:
        with self._tx() as db:
            row = db.execute("SELECT details FROM deployments WHERE id = ?", (deployment_id,)).fetchone()
            merged = json.loads(row["details"]) if row else {}
            merged.update(details)
            db.execute(
                "UPDATE deployments SET details = ? WHERE id = ?",
                (json.dumps(merged, sort_keys=True, default=str), deployment_id),
            )

    def record_phase(
        self, deployment_id: int, node: str, phase: str, *,
        from_version: str | None = None, to_version: str | None = None, detail: str = "",
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO node_events (deployment_id, node, phase, at, from_version, to_version,"
                " detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (deployment_id, node, phase, time.time(), from_version, to_version, detail),
            )

    def deployments(self, env: str, limit: int = 50) -> list[DeploymentRecord]:
        rows = self._db.execute(
            "SELECT * FROM deployments WHERE env = ? ORDER BY id DESC LIMIT ?", (env, limit)
        ).fetchall()
        return [self._record(r) for r in rows]

    def deployment(self, deployment_id: int) -> DeploymentRecord | None:
        row = self._db.execute("SELECT * FROM deployments WHERE id = ?", (deployment_id,)).fetchone()
        return self._record(row) if row else None

    def find(self, ref: str | int, env: str | None = None) -> DeploymentRecord | None:
        """A deployment by its number in this journal or its uid (case-insensitive), in ``env``
        if given."""
        text = str(ref).strip()
        if text.isdigit():
            found = self.deployment(int(text))
        else:
            try:
                row = self._db.execute("SELECT * FROM deployments WHERE uid = ?",
                                       (text.upper(),)).fetchone()
            except sqlite3.OperationalError:  # a journal from before uids, opened read-only
                row = None
            found = self._record(row) if row else None
        if found is None or (env is not None and found.env != env):
            return None
        return found

    def node_events(self, deployment_id: int) -> list[NodeEvent]:
        rows = self._db.execute(
            "SELECT deployment_id, node, phase, at, from_version, to_version, detail"
            " FROM node_events WHERE deployment_id = ? ORDER BY id", (deployment_id,)
        ).fetchall()
        return [NodeEvent(**dict(r)) for r in rows]

    def put_evidence(self, deployment_id: int, uid: str, record: bytes, *, signature: str = "",
                     key_id: str = "", published: str = "") -> None:
        """Keep a deployment's evidence record (exactly the bytes signed) and its signature."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO evidence (deployment_id, uid, created_at, record, signature,"
                " key_id, published) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (deployment_id, uid, time.time(), record.decode("utf-8"), signature, key_id,
                 published),
            )

    def evidence(self, deployment_id: int) -> EvidenceRow | None:
        row = self._db.execute("SELECT * FROM evidence WHERE deployment_id = ?",
                               (deployment_id,)).fetchone()
        if row is None:
            return None
        return EvidenceRow(deployment_id=row["deployment_id"], uid=row["uid"],
                           created_at=row["created_at"], record=row["record"].encode("utf-8"),
                           signature=row["signature"], key_id=row["key_id"],
                           published=row["published"])

    def mark_abandoned(self, env: str) -> list[DeploymentRecord]:
        """Mark 'running' deployments whose process is gone from this host as failed; return
        them (a ``paused`` deployment is not running: it waits for ``resume``, untouched). The
        process is its PID and the PID's start time: a PID the kernel handed to another process
        since is gone (a record older than schema 3 has no start time; its PID alone is
        checked). A deployment run from another host is left as it is."""
        gone = []
        for rec in self.deployments(env, limit=20):
            if is_abandoned(rec):
                self.finish_deployment(rec.id, "failed", ABANDONED_SUMMARY)
                gone.append(rec)
        return gone

    @staticmethod
    def _record(row: sqlite3.Row) -> DeploymentRecord:
        # Columns a newer deployer added are left out, so this one still reads its journal.
        d = {k: v for k, v in dict(row).items() if k in DeploymentRecord.__dataclass_fields__}
        d["details"] = json.loads(d.get("details") or "{}")
        return DeploymentRecord(**d)
