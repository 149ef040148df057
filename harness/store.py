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
  plans(grid, record JSON): the runnable cells of each grid as `harness run` expanded
        them when it started, and its command (harness/coverage.py), so a board built
        from the database alone can say which cells are missing; absent in databases
        written before plans were recorded (read as no plan).
  claims(id, pid, host, started): the cells a live run is computing now, so that two
        runs on one folder share the work; a claim whose process is gone is taken over.

A record's "outcomes" ({split: {name: array}}; also its "teacher_run"'s) goes to the
outcomes table, not into the record's JSON; `records()` and `teachers()` put it back.

Read-only commands open the file with SQLite's mode=ro, so they never change it, and
refuse a file that is not a harness store.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sqlite3
import time
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from .record import COLUMNS

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
CREATE TABLE IF NOT EXISTS plans (grid TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outcomes (
  kind TEXT NOT NULL, key TEXT NOT NULL, split TEXT NOT NULL, data BLOB NOT NULL,
  PRIMARY KEY (kind, key, split)
);
"""

FINISHED = ("ok", "failed")

CLAIMS_SCHEMA = """
CREATE TABLE IF NOT EXISTS claims (id TEXT PRIMARY KEY, pid INTEGER, host TEXT, started REAL);
"""

#: A claim made on another host cannot be checked for a live process; it is taken over
#: when older than this (seconds).
FOREIGN_CLAIM_TTL = 24 * 3600.0


def _this_process() -> tuple[int, str]:
    """(pid, host): who holds a claim."""
    return os.getpid(), socket.gethostname()


def _claim_alive(pid: int, host: str, started: float) -> bool:
    """Whether the process that made a claim still runs: on this host by pid and start
    time (a recycled pid started after the claim is another process); elsewhere by age."""
    if host != socket.gethostname():
        return time.time() - started < FOREIGN_CLAIM_TTL
    try:
        return psutil.Process(pid).create_time() <= started + 1.0
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.Error:
        return True  # (another user's process: assume it is the run)


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
    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:  # SQLite refuses every write on this connection
            uri = "file:" + urllib.parse.quote(str(self.path.resolve())) + "?mode=ro"
            self.conn = sqlite3.connect(uri, uri=True, timeout=30)
            self.conn.row_factory = sqlite3.Row
            return
        self.conn = sqlite3.connect(self.path, timeout=30)
        self.conn.row_factory = sqlite3.Row
        with self.conn:
            self.conn.executescript(SCHEMA)
            self.conn.executescript(CLAIMS_SCHEMA)
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))

    @classmethod
    def open_existing(cls, path: str | Path) -> Store:
        """Open a results database read-only; UsageError unless it is a harness store."""
        from .errors import UsageError

        p = Path(path)
        if not p.is_file():
            raise UsageError(f"{p}: results database not found")
        if p.stat().st_size == 0:
            raise UsageError(f"{p}: an empty file, not a harness results database")
        try:
            store = cls(p, readonly=True)
        except sqlite3.DatabaseError as e:
            raise UsageError(f"{p}: cannot open the results database ({e})") from None
        try:
            tables = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            schema = None
            if {"meta", "cells", "teachers"} <= tables:
                row = store.conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                schema = row[0] if row else None
        except sqlite3.DatabaseError as e:
            store.close()
            raise UsageError(f"{p}: not a harness results database ({e})") from None
        if schema is None:
            store.close()
            raise UsageError(f"{p}: not a harness results database (no harness tables in it)")
        return store

    def count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM cells").fetchone()[0]

    def claim(self, cell_id: str, since: float) -> str | None:
        """Claim a cell before it runs: None when this process now holds it, else why
        not (another run finished it after `since`, or a live process holds it)."""
        me = _this_process()
        self.conn.execute("BEGIN IMMEDIATE")  # one claimant at a time across processes
        try:
            row = self.conn.execute("SELECT status, finished FROM cells WHERE id = ?", (cell_id,)).fetchone()
            if row is not None and row["status"] in FINISHED and (row["finished"] or 0) >= since:
                return f"{row['status']} in another run"
            c = self.conn.execute("SELECT pid, host, started FROM claims WHERE id = ?", (cell_id,)).fetchone()
            theirs = c is not None and (c["pid"], c["host"]) != me
            if theirs and _claim_alive(c["pid"], c["host"], c["started"]):
                return f"running in another run (pid {c['pid']} on {c['host']})"
            self.conn.execute(
                "INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?)", (cell_id, me[0], me[1], time.time())
            )
            return None
        finally:
            self.conn.commit()

    def release(self, cell_id: str | None = None) -> None:
        """Drop this process's claim on a cell (or, with None, all of its claims)."""
        me = _this_process()
        with self.conn:
            if cell_id is None:
                self.conn.execute("DELETE FROM claims WHERE pid = ? AND host = ?", me)
            else:
                self.conn.execute("DELETE FROM claims WHERE id = ? AND pid = ? AND host = ?", (cell_id, *me))

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
        """Write a cell's record (and the teacher it trained, if any) and drop this
        process's claim on the cell, in one transaction."""
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
            # the claim goes in the record's transaction: a run killed between the two
            # would leave a claim on a finished cell that no rerun takes up again
            me = _this_process()
            self.conn.execute("DELETE FROM claims WHERE id = ? AND pid = ? AND host = ?", (record["id"], *me))
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
        """The cells' columns, their finish time and the worker ("host:pid") that ran each
        (None in records written before workers were named, and for skipped cells)."""
        return list(
            self.conn.execute(
                f"SELECT {', '.join(COLUMNS)}, finished, json_extract(record, '$.worker') AS worker "
                "FROM cells ORDER BY grid, dataset, task, method, seed"
            )
        )

    def put_plan(self, plan: dict[str, Any]) -> None:
        """Record a grid's plan (`harness.coverage.Plan.to_json()`), replacing the last one
        of the same grid name."""
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO plans VALUES (?, ?)", (plan["grid"], json.dumps(plan)))

    def plans(self) -> list[dict[str, Any]]:
        """Every recorded plan, by grid name ([] in a database written before plans)."""
        try:
            rows = self.conn.execute("SELECT record FROM plans ORDER BY grid").fetchall()
        except sqlite3.OperationalError:  # (no such table: an older database, opened read-only)
            return []
        return [json.loads(r["record"]) for r in rows]

    def teachers(self) -> list[dict[str, Any]]:
        found = self._all_outcomes("teacher")
        out = []
        for r in self.conn.execute("SELECT key, record FROM teachers ORDER BY dataset, task, teacher, seed"):
            rec = json.loads(r["record"])
            if r["key"] in found:
                rec["outcomes"] = found[r["key"]]
            out.append(rec)
        return out
