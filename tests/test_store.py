"""The results store: read-only opening, and per-cell claims between concurrent runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from harness.errors import UsageError
from harness.store import Store


def _claim_row(store: Store, cell: str, pid: int, host: str, started: float) -> None:
    with store.conn:
        store.conn.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?)", (cell, pid, host, started))


def test_claims_live_dead_recycled_and_foreign(tmp_path):
    store = Store(tmp_path / "r.db")
    t0 = time.time()
    assert store.claim("a", t0) is None  # free: now ours
    assert store.claim("a", t0) is None  # ours already
    host = socket.gethostname()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.2)
        _claim_row(store, "b", live.pid, host, time.time())
        assert store.claim("b", t0) == f"running in another run (pid {live.pid} on {host})"
        # the same pid, but the process started after the claim: a recycled pid
        _claim_row(store, "c", live.pid, host, time.time() - 3600)
        assert store.claim("c", t0) is None
    finally:
        live.kill()
        live.wait()
    _claim_row(store, "d", live.pid, host, time.time())  # its process is gone
    assert store.claim("d", t0) is None
    _claim_row(store, "e", 1234, "another-host", time.time())
    assert "on another-host" in store.claim("e", t0)
    _claim_row(store, "f", 1234, "another-host", time.time() - 2 * 24 * 3600)  # stale
    assert store.claim("f", t0) is None
    # a cell another run finished since this run started is not run again
    store.put({"id": "g", "status": "ok", "started": t0, "finished": time.time()})
    assert store.claim("g", t0) == "ok in another run"
    store.release()
    mine = store.conn.execute("SELECT count(*) FROM claims WHERE pid = ?", (os.getpid(),)).fetchone()[0]
    assert mine == 0
    store.close()


def test_a_stored_record_and_the_end_of_its_claim_are_one_transaction(tmp_path):
    """A run killed right after storing a cell must not leave its claim behind: a rerun
    passes over finished cells, so nothing would ever take that claim up again."""
    store = Store(tmp_path / "r.db")
    t0 = time.time()
    assert store.claim("a", t0) is None
    _claim_row(store, "b", 1234, "another-host", time.time())
    store.put({"id": "a", "status": "ok", "started": t0, "finished": time.time()})
    store.put({"id": "b", "status": "ok", "started": t0, "finished": time.time()})
    left = store.conn.execute("SELECT id, pid FROM claims ORDER BY id").fetchall()
    assert [tuple(r) for r in left] == [("b", 1234)]  # (only this process's claim goes)
    store.close()


def test_open_existing_is_read_only(tmp_path):
    Store(tmp_path / "r.db").close()
    store = Store.open_existing(tmp_path / "r.db")
    with pytest.raises(Exception, match="readonly"):
        store.conn.execute("INSERT INTO meta VALUES ('x', 'y')")
    store.close()
    with pytest.raises(UsageError, match="results database not found"):
        Store.open_existing(tmp_path / "absent.db")
