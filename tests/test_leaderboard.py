"""The store (one row per cell, resume states) and the leaderboard tables."""

from __future__ import annotations

import pytest
from scipy import stats

from harness.leaderboard import build_tables, paired_p, render, write_leaderboards
from harness.store import Store

ENV = {
    "cpu": "Test CPU",
    "cores": 2,
    "gpu": None,
    "device": "cpu",
    "python": "3.11",
    "versions": {"harness": "0.1.0", "torch": "2.13.0"},
    "git": "abc",
}


def rec(method, seed, mae, distiller="kd", status="ok", student="dcnn:student"):
    return {
        "id": f"{method}-{seed}-{student}",
        "grid": "g",
        "status": status,
        "reason": None,
        "dataset": "movies",
        "task": "rating",
        "teacher": "dcnn:teacher",
        "student": student,
        "distiller": distiller,
        "pruner": "none",
        "method": method,
        "seed": seed,
        "metrics": {"test": {"mae": mae, "mse": mae * mae, "rmse": mae}, "val": {}},
        "size": {"params": 100, "nonzero_params": 100, "bytes": 2048, "flops": 400, "pct_of_teacher": 10.0},
        "energy": {
            "train_j": 5.0 + seed,
            "meter": "cpu-estimate",
            "estimate": True,
            "detail": "estimate: 1.00 CPU-s × 10 W/core",
            "inference_j_per_1k": 0.1,
        },
        "times": {"train_s": 1.0},
        "env": ENV,
        "command": "harness run --grid g.yaml",
        "data_note": "a note about the data",
    }


def test_store_writes_one_row_per_cell_and_reports_status(tmp_path):
    s = Store(tmp_path / "r.db")
    s.put(rec("KD", 0, 0.8))
    s.put(rec("KD", 0, 0.7))  # rerun of the same cell replaces its row
    s.put(rec("KD", 1, 0.9, status="failed"))
    assert s.status_of(["KD-0-dcnn:student", "KD-1-dcnn:student", "nope"]) == {
        "KD-0-dcnn:student": "ok",
        "KD-1-dcnn:student": "failed",
    }
    assert [r["metrics"]["test"]["mae"] for r in s.records(status="ok")] == [0.7]
    skipped = dict(rec("KD", 0, 0.0), status="skipped", reason="incompatible")
    s.put_skipped(skipped)  # never overwrites a finished cell
    assert s.status_of(["KD-0-dcnn:student"])["KD-0-dcnn:student"] == "ok"
    s.close()
    assert len(Store.open_existing(tmp_path / "r.db").records()) == 2


def test_paired_p_is_scipys_paired_t_test():
    a = {0: 0.80, 1: 0.82, 2: 0.79}
    b = {0: 0.85, 1: 0.86, 2: 0.86, 3: 0.9}
    expected = stats.ttest_rel([0.80, 0.82, 0.79], [0.85, 0.86, 0.86]).pvalue
    assert paired_p(a, b) == pytest.approx(expected)
    assert paired_p({0: 1.0}, {0: 2.0}) is None  # one common seed: no test
    assert paired_p(a, a) == 1.0


def test_table_has_mean_std_p_and_the_baseline():
    records = [rec("DCNN", s, m, distiller="none") for s, m in enumerate([0.90, 0.92, 0.91])]
    records += [rec("KD", s, m) for s, m in enumerate([0.80, 0.83, 0.81])]
    records.append(dict(rec("SAD", 0, 0), status="skipped", reason="needs features"))
    teachers = [
        {
            "dataset": "movies",
            "task": "rating",
            "teacher": "dcnn:teacher",
            "seed": s,
            "metrics": {"test": {"mae": 0.7, "mse": 0.49, "rmse": 0.7}},
            "size": {"params": 1000, "nonzero_params": 1000, "bytes": 9000, "flops": 4000},
            "energy": {"train_j": 50.0, "meter": "cpu-estimate"},
            "times": {"train_s": 3.0},
        }
        for s in range(3)
    ]
    t = build_tables(records, teachers)[("movies", "rating")]
    rows = {r[0]: r for r in t["rows"]}
    assert list(rows) == ["Teacher (dcnn:teacher)", "KD", "DCNN"]  # best MAE first
    assert rows["KD"][2] == "0.8133 ± 0.015"
    assert rows["DCNN"][5] == "baseline"
    p = stats.ttest_rel([0.80, 0.83, 0.81], [0.90, 0.92, 0.91]).pvalue
    assert rows["KD"][5] == f"{p:.3g}"
    md = render("movies", "rating", t)
    for needle in (
        "# movies — rating",
        "Data: a note about the data",
        "Test CPU (2 cores)",
        "`cpu-estimate`: **estimate**",
        "CPU-s × 10 W/core",
        "Regenerate: `harness run --grid g.yaml`",
        "Skipped cells (1)",
        "SAD: needs features",
        "| Teacher (dcnn:teacher)",
    ):
        assert needle in md, needle


def test_write_leaderboards_one_file_per_dataset_and_task(tmp_path):
    records = [rec("KD", 0, 0.8)]
    other = dict(rec("KD", 0, 0.5), dataset="other data", id="x")
    paths = write_leaderboards(records + [other], [], tmp_path / "lb")
    assert sorted(p.name for p in paths) == ["movies__rating.md", "other_data__rating.md"]
    index = (tmp_path / "lb" / "README.md").read_text()
    assert "[movies — rating](movies__rating.md): 1 ok, 0 failed, 0 skipped" in index


def test_diagnostics_section_shows_term_ratios_and_flags_inactive_distillers():
    from harness.runner import loss_diagnostics

    def history(ratios, stats=None):
        return [
            {
                "epoch": i + 1,
                "loss": 1.0,
                "terms": {"task": 2.0, "kd": 2.0 * r},
                **({"stats": stats} if stats else {}),
            }
            for i, r in enumerate(ratios)
        ]

    strong, weak = [], []
    for seed in (0, 1):
        r = rec("KD", seed, 0.8)
        r["diagnostics"] = loss_diagnostics(
            history([0.5, 0.25], {"sample_size": 10.0, "sample_rank_pct": 20.0})
        )
        strong.append(r)
        w = rec("TINY", seed, 0.8)
        w["diagnostics"] = loss_diagnostics(history([0.02, 0.004]), "its paper's weights make it so")
        weak.append(w)
    assert strong[0]["diagnostics"]["ratio_first"] == 0.5 and strong[0]["diagnostics"]["ratio_last"] == 0.25
    md = render("movies", "rating", build_tables([*strong, *weak], [])[("movies", "rating")])
    assert "## Distiller diagnostics" in md
    section = md.split("## Distiller diagnostics")[1].splitlines()
    kd_row = next(line for line in section if line.startswith("| KD "))
    assert "50%" in kd_row and "25%" in kd_row and "10.0" in kd_row and "20.0" in kd_row
    tiny_row = next(line for line in section if line.startswith("| TINY "))
    assert "0.4% ⚠" in tiny_row
    assert "- TINY / dcnn:student (its paper's weights make it so)" in md
    assert loss_diagnostics([{"epoch": 1, "loss": 1.0}]) is None  # a distiller that logs nothing
