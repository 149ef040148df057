"""The results store: one SQLite file, one row per cell, written in one transaction
when the cell ends. Only the process that runs the grid writes it (workers return
records), so a worker that dies loses nothing already stored.

Tables:
  cells(id, grid, status, reason, dataset, task, teacher, student, distiller, pruner,
        method, seed, record JSON, started, finished)
  teachers(key, grid, dataset, task, teacher, seed, record JSON)
  meta(key, value): schema version.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SCHEMA_VERSION = "1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS cells (
  id TEXT PRIMARY KEY, grid TEXT, status TEXT NOT NULL, reason TEXT,
  dataset TEXT, task TEXT, teacher TEXT, student TEXT, distiller TEXT, pruner TEXT,
  method TEXT, seed INTEGER, record TEXT NOT NULL, started REAL, finished REAL
);
CREATE TABLE IF NOT EXISTS teachers (
  key TEXT PRIMARY KEY, grid TEXT, dataset TEXT, task TEXT, teacher TEXT, seed INTEGER,
  record TEXT NOT NULL
);
"""

COLUMNS = (
    "id",
    "grid",
    "status",
    "reason",
    "dataset",
    "task",
    "teacher",
    "student",
    "distiller",
    "pruner",
    "method",
    "seed",
)

FINISHED = ("ok", "failed")


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.conn = sqlite3.connect(self.path, timeout=30)
        self.conn.row_factory = sqlite3.Row
        with self.conn:
            self.conn.executescript(SCHEMA)
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))

    @classmethod
    def open_existing(cls, path: str | Path) -> Store:
        from .errors import UsageError

        p = Path(path)
        if not p.is_file():
            raise UsageError(f"{p}: results database not found")
        try:
            store = cls(p)
            store.conn.execute("SELECT count(*) FROM cells").fetchone()
        except sqlite3.DatabaseError as e:
            raise UsageError(f"{p}: not a harness results database ({e})") from None
        return store

    def close(self) -> None:
        self.conn.close()

    def status_of(self, ids: Iterable[str]) -> dict[str, str]:
        ids = list(ids)
        out: dict[str, str] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            q = f"SELECT id, status FROM cells WHERE id IN ({','.join('?' * len(chunk))})"
            out.update({r["id"]: r["status"] for r in self.conn.execute(q, chunk)})
        return out

    def put(self, record: dict[str, Any]) -> None:
        """Write a cell's record (and the teacher it trained, if any) in one transaction."""
        row = [record.get(c) for c in COLUMNS]
        payload = json.dumps(record, default=str)
        with self.conn:
            self.conn.execute(
                f"INSERT OR REPLACE INTO cells ({', '.join(COLUMNS)}, record, started, finished) "
                f"VALUES ({', '.join('?' * (len(COLUMNS) + 3))})",
                [*row, payload, record.get("started"), record.get("finished")],
            )
            t = record.get("teacher_run")
            if t and not t.get("cached"):
                self.conn.execute(
                    "INSERT OR REPLACE INTO teachers VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        t["key"],
                        record.get("grid"),
                        t["dataset"],
                        t["task"],
                        t["teacher"],
                        t["seed"],
                        json.dumps(t, default=str),
                    ),
                )

    def put_skipped(self, record: dict[str, Any]) -> None:
        """Record a skipped cell unless the cell already finished."""
        if self.status_of([record["id"]]).get(record["id"]) in FINISHED:
            return
        self.put(record)

    def records(self, status: str | None = None, grid: str | None = None) -> list[dict[str, Any]]:
        q, args = "SELECT record FROM cells", []
        where = []
        if status:
            where.append("status = ?")
            args.append(status)
        if grid:
            where.append("grid = ?")
            args.append(grid)
        if where:
            q += " WHERE " + " AND ".join(where)
        q += " ORDER BY dataset, task, method, seed"
        return [json.loads(r["record"]) for r in self.conn.execute(q, args)]

    def rows(self) -> list[sqlite3.Row]:
        return list(
            self.conn.execute(
                f"SELECT {', '.join(COLUMNS)}, finished FROM cells ORDER BY grid, dataset, task, method, seed"
            )
        )

    def teachers(self) -> list[dict[str, Any]]:
        return [
            json.loads(r["record"])
            for r in self.conn.execute("SELECT record FROM teachers ORDER BY dataset, task, teacher, seed")
        ]
