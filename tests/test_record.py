"""harness.record: one typed record whose column list serves the store, the cli and the
leaderboard; old stores load into it unchanged."""

from __future__ import annotations

import glob
import pickle
import shutil
import sqlite3
from pathlib import Path

import pytest

from harness.errors import UsageError
from harness.record import COLUMNS, LIST_COLUMNS, UNSET, Record
from harness.store import Store


def published_stores(tmp_path: Path) -> list[Path]:
    stores = sorted(glob.glob("/tmp/stores/*.db"))
    if not stores:
        pytest.skip("no published stores copied at /tmp/stores")
    copies = []
    for path in stores:
        copies.append(tmp_path / Path(path).name)
        shutil.copy(path, copies[-1])
    return copies


def test_every_record_of_the_published_stores_loads_and_round_trips(tmp_path):
    n = 0
    for path in published_stores(tmp_path):
        store = Store(path, readonly=True)
        for d in store.records():
            assert Record.from_dict(d).to_dict() == d
            n += 1
        store.close()
    assert n > 0


def test_the_store_table_has_exactly_the_record_columns(tmp_path):
    store = Store(tmp_path / "r.db")
    cols = [r[1] for r in store.conn.execute("PRAGMA table_info(cells)")]
    store.close()
    assert tuple(cols[: len(COLUMNS)]) == COLUMNS
    assert cols[len(COLUMNS) :] == ["record", "started", "finished"]
    for path in published_stores(tmp_path):
        conn = sqlite3.connect(path)
        assert tuple(r[1] for r in conn.execute("PRAGMA table_info(cells)"))[: len(COLUMNS)] == COLUMNS
        conn.close()


def test_unset_fields_stay_out_of_the_dict_and_set_ones_go_in():
    r = Record(id="a", grid="g", status="running", seed=0)
    d = r.to_dict()
    assert set(d) == {*COLUMNS, "config"} and "metrics" not in d
    r.teacher_run = None  # (set, even to None: recorded)
    r.metrics = {"test": {}}
    assert r.to_dict()["teacher_run"] is None and "metrics" in r.to_dict()
    assert r.error is UNSET and not r.error
    back = pickle.loads(pickle.dumps(r))
    assert back.to_dict() == r.to_dict() and back.error is UNSET


def test_an_unknown_field_is_a_clear_error():
    with pytest.raises(UsageError, match="record 'a': unknown field 'metric'"):
        Record.from_dict({"id": "a", "metric": 1})


def test_list_columns_are_record_fields():
    assert set(LIST_COLUMNS) <= {*COLUMNS, "worker"}
