"""The results store: one SQLite file, one row per cell, written in one transaction
when the cell ends. Only the process that runs the grid writes it (workers return
records), so a worker that dies loses nothing already stored.

Tables:
  cells(id, grid, status, reason, dataset, task, teacher, student, distiller, pruner,
        method, seed, record JSON, started, finished)
  teachers(key, grid, dataset, task, teacher, seed, record JSON)
  outcomes(kind, key, split, data BLOB): the per-test-example outcomes of a cell
        (kind "cell", key its id) or a teacher (kind "teacher", key its cache key), as
        np.savez_compressed bytes of {outcome name: array}; written in the cell's
        transaction, so an interrupted grid keeps them for every stored cell.
  meta(key, value): schema version.

A record's "outcomes" ({split: {name: array}}; also its "teacher_run"'s) goes to the
outcomes table, not into the record's JSON; `records()` and `teachers()` put it back.
"""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

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
CREATE TABLE IF NOT EXISTS outcomes (
  kind TEXT NOT NULL, key TEXT NOT NULL, split TEXT NOT NULL, data BLOB NOT NULL,
  PRIMARY KEY (kind, key, split)
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


def pack_outcomes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def unpack_outcomes(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _without_outcomes(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != "outcomes"}


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
        t = record.get("teacher_run")
        saved = _without_outcomes(record)
        if t:
            saved["teacher_run"] = _without_outcomes(t)
        payload = json.dumps(saved, default=str)
        with self.conn:
            self.conn.execute(
                f"INSERT OR REPLACE INTO cells ({', '.join(COLUMNS)}, record, started, finished) "
                f"VALUES ({', '.join('?' * (len(COLUMNS) + 3))})",
                [*row, payload, record.get("started"), record.get("finished")],
            )
            self.conn.execute("DELETE FROM outcomes WHERE kind = 'cell' AND key = ?", (record["id"],))
            self._put_outcomes("cell", record["id"], record.get("outcomes"), replace=True)
            if t:
                # a cached teacher is stored too when its training cell never was (an
                # interrupted run): it never replaces the record of its training
                verb = "IGNORE" if t.get("cached") else "REPLACE"
                self._put_outcomes("teacher", t["key"], t.get("outcomes"), replace=not t.get("cached"))
                self.conn.execute(
                    f"INSERT OR {verb} INTO teachers VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        t["key"],
                        record.get("grid"),
                        t["dataset"],
                        t["task"],
                        t["teacher"],
                        t["seed"],
                        json.dumps(_without_outcomes(t), default=str),
                    ),
                )

    def _put_outcomes(self, kind: str, key: str, by_split: dict[str, Any] | None, replace: bool) -> None:
        verb = "REPLACE" if replace else "IGNORE"
        for split, arrays in (by_split or {}).items():
            if arrays:
                self.conn.execute(
                    f"INSERT OR {verb} INTO outcomes VALUES (?, ?, ?, ?)",
                    (kind, key, split, pack_outcomes(arrays)),
                )

    def outcomes(self, kind: str, key: str) -> dict[str, dict[str, np.ndarray]]:
        """{split: {outcome: array}} of a cell or teacher ({} when none was stored)."""
        q = "SELECT split, data FROM outcomes WHERE kind = ? AND key = ?"
        return {r["split"]: unpack_outcomes(r["data"]) for r in self.conn.execute(q, (kind, key))}

    def _all_outcomes(self, kind: str) -> dict[str, dict[str, dict[str, np.ndarray]]]:
        out: dict[str, dict[str, dict[str, np.ndarray]]] = {}
        for r in self.conn.execute("SELECT key, split, data FROM outcomes WHERE kind = ?", (kind,)):
            out.setdefault(r["key"], {})[r["split"]] = unpack_outcomes(r["data"])
        return out

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
        found = self._all_outcomes("cell")
        out = []
        for r in self.conn.execute(q, args):
            rec = json.loads(r["record"])
            if rec["id"] in found:
                rec["outcomes"] = found[rec["id"]]
            out.append(rec)
        return out

    def rows(self) -> list[sqlite3.Row]:
        return list(
            self.conn.execute(
                f"SELECT {', '.join(COLUMNS)}, finished FROM cells ORDER BY grid, dataset, task, method, seed"
            )
        )

    def teachers(self) -> list[dict[str, Any]]:
        found = self._all_outcomes("teacher")
        out = []
        for r in self.conn.execute("SELECT key, record FROM teachers ORDER BY dataset, task, teacher, seed"):
            rec = json.loads(r["record"])
            if r["key"] in found:
                rec["outcomes"] = found[r["key"]]
            out.append(rec)
        return out
