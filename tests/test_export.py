"""`harness export`: one row per stored cell, every metric and parameter, read-only,
and a round trip through pandas."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pandas as pd

from harness.cli import main
from harness.export import cells_frame
from harness.store import Store
from tests.test_leaderboard import rec


def store_with_cells(path):
    s = Store(path)
    cells = []
    for seed in (0, 1):
        for method, distiller in (("DCNN", "none"), ("KD", "kd")):
            r = rec(method, seed, 0.8 + 0.01 * seed + (distiller == "kd") * 0.1234567890123, distiller)
            r["config"] = {
                "seed": seed,
                "distiller": {"name": distiller, "params": {"alpha": 0.5} if distiller == "kd" else {}},
                "student": {"model": "dcnn", "params": {"channels": [2, 4], "hidden": 4}},
                "budget": {"epochs": 20},
            }
            r["outcomes"] = {"test": {"abs_err": np.ones(3, dtype=np.float32)}}
            r["history"] = [{"epoch": 1, "loss": 1.0}]
            s.put(r)
            cells.append(r)
    failed = dict(rec("SAD", 0, 0.0, "sad"), status="failed", reason="RuntimeError: boom", id="f")
    for k in ("metrics", "size", "energy", "times"):
        failed.pop(k)
    s.put(failed)
    s.close()
    return cells + [failed]


def as_text(df: pd.DataFrame) -> pd.DataFrame:
    return df.astype(object).map(
        lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
    )


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_csv_has_one_row_per_cell_with_every_metric_and_parameter_and_round_trips(tmp_path, capsys):
    db = tmp_path / "results.db"
    cells = store_with_cells(db)
    before = digest(db)
    assert main(["export", "--results", str(db), "--format", "csv"]) == 0
    text = capsys.readouterr().out
    assert digest(db) == before  # read-only
    df = pd.read_csv(io.StringIO(text), float_precision="round_trip")
    assert len(df) == len(cells) == 5
    assert list(df.columns[:12]) == [
        "id", "grid", "status", "reason", "dataset", "task",
        "teacher", "student", "distiller", "pruner", "method", "seed",
    ]  # fmt: skip
    for col in (
        "metrics.test.mae",
        "metrics.test.rmse",
        "size.params",
        "size.flops",
        "energy.train_j",
        "energy.inference_j_per_1k",
        "energy.meter",
        "times.train_s",
        "config.distiller.params.alpha",
        "config.budget.epochs",
        "env.cpu",
    ):
        assert col in df.columns, col
    assert not any(c.startswith(("outcomes", "history")) for c in df.columns)
    by = df.set_index("id")
    for r in cells[:4]:
        row = by.loc[r["id"]]
        assert row["metrics.test.mae"] == r["metrics"]["test"]["mae"]  # every digit kept
        assert row["energy.train_j"] == r["energy"]["train_j"] and row["seed"] == r["seed"]
        assert json.loads(row["config.student.params.channels"]) == [2, 4]
    assert by.loc["f", "status"] == "failed" and by.loc["f", "reason"] == "RuntimeError: boom"
    assert np.isnan(by.loc["f", "metrics.test.mae"])
    # what pandas reads back is the frame the export wrote, cell for cell (CSV has no
    # types: a text such as Python's "3.11" reads back as a number, so compare as text)
    s = Store.open_existing(db)
    frame = cells_frame(s.records())
    s.close()
    assert list(df.columns) == list(frame.columns)
    pd.testing.assert_frame_equal(as_text(df), as_text(frame))


def test_json_to_a_file_round_trips_and_bad_outputs_are_refused(tmp_path, capsys):
    db = tmp_path / "results.db"
    cells = store_with_cells(db)
    out = tmp_path / "sub" / "cells.json"
    assert main(["export", "--results", str(db), "--format", "json", "--out", str(out)]) == 0
    assert f"{out}: 5 cells" in capsys.readouterr().err
    rows = json.loads(out.read_text())
    assert len(rows) == 5 and rows[0]["id"] in {c["id"] for c in cells}
    kd = next(r for r in rows if r["id"] == cells[1]["id"])
    assert kd["metrics.test.mae"] == cells[1]["metrics"]["test"]["mae"]
    assert kd["config.distiller.params.alpha"] == 0.5
    assert next(r for r in rows if r["id"] == "f")["metrics.test.mae"] is None  # NaN as null
    s = Store.open_existing(db)
    frame = cells_frame(s.records())
    s.close()
    back = pd.read_json(out, orient="records", dtype=False, precise_float=True)
    assert list(back.columns) == list(frame.columns)
    pd.testing.assert_frame_equal(as_text(back), as_text(frame))
    # a folder as --out, a missing store, a bad format: one line, exit 2, nothing written
    assert main(["export", "--results", str(db), "--format", "csv", "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(["export", "--results", str(tmp_path / "nope.db"), "--format", "csv"]) == 2
    assert "results database not found" in capsys.readouterr().err
    assert main(["export", "--results", str(db), "--format", "xlsx"]) == 2
    assert "invalid choice" in capsys.readouterr().err
