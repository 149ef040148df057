"""The store (one row per cell, resume states) and the leaderboard tables."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from harness import stats as sig
from harness.errors import UsageError
from harness.leaderboard import build_tables, paired_p, render, write_leaderboards
from harness.record import Record
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
    assert t["headers"][9] == "p seeds (t)"
    assert rows["KD"][9] == f"{p:.2g}"
    assert rows["KD"][5] == "—"  # no per-example outcomes stored: no per-example test
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


def teacher(seed, outcomes=None, dataset="movies", task="rating", label="dcnn:teacher"):
    t = {
        "key": f"t{seed}",
        "dataset": dataset,
        "task": task,
        "teacher": label,
        "seed": seed,
        "metrics": {"test": {"mae": 0.7, "mse": 0.49, "rmse": 0.7}},
        "size": {"params": 1000, "nonzero_params": 1000, "bytes": 9000, "flops": 4000},
        "energy": {"train_j": 50.0, "meter": "cpu-estimate"},
        "times": {"train_s": 3.0},
    }
    if outcomes is not None:
        t["outcomes"] = {"test": outcomes}
    return t


def _cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def test_store_keeps_outcomes_and_a_board_from_two_stored_cells_reproduces_the_p_values(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.gamma(2.0, 0.4, 300)
    plain = truth + rng.normal(0, 0.2, 300)
    kd = truth + rng.normal(0, 0.2, 300) - 0.05
    t_out = truth + rng.normal(0, 0.2, 300)
    s = Store(tmp_path / "r.db")
    base = rec("DCNN", 0, float(plain.mean()), distiller="none")
    base["outcomes"] = {
        "test": {"abs_err": plain.astype(np.float32), "sq_err": (plain**2).astype(np.float32)}
    }
    s.put(base)
    row = rec("KD", 0, float(kd.mean()))
    row["outcomes"] = {"test": {"abs_err": kd.astype(np.float32)}}
    row["teacher_run"] = dict(teacher(0, {"abs_err": t_out.astype(np.float32)}), cached=False)
    s.put(row)
    s.close()
    s = Store.open_existing(tmp_path / "r.db")
    records, teachers = s.records(), s.teachers()
    saved = s.conn.execute("select record from cells where id = ?", (row["id"],)).fetchone()[0]
    assert "outcomes" not in saved  # the arrays live in their own table, not in the JSON
    stored = {r["method"]: r["outcomes"]["test"] for r in records}
    np.testing.assert_array_equal(stored["DCNN"]["abs_err"], plain.astype(np.float32))
    np.testing.assert_array_equal(stored["DCNN"]["sq_err"], (plain**2).astype(np.float32))
    np.testing.assert_array_equal(teachers[0]["outcomes"]["test"]["abs_err"], t_out.astype(np.float32))
    # the same comparisons by hand, from the arrays as stored (float32)
    a32, b32, t32 = (x.astype(np.float32) for x in (kd, plain, t_out))
    c_kd = sig.compare({0: a32}, {0: b32}, "wilcoxon")
    c_t = sig.compare({0: t32}, {0: b32}, "wilcoxon")
    p_kd, p_t = sig.holm([c_kd.p, c_t.p])
    md = write_leaderboards(records, teachers, tmp_path / "lb")[0].read_text()
    lines = md.split("## Every column")[1].splitlines()  # the whole table, every column
    kd_row = _cells(next(x for x in lines if x.startswith("| KD")))
    t_row = _cells(next(x for x in lines if x.startswith("| Teacher")))
    assert kd_row[5] == f"▲ {c_kd.delta:+.3g} [{c_kd.ci[0]:+.3g}, {c_kd.ci[1]:+.3g}]"
    assert kd_row[6] == f"{p_kd:.2g}" and kd_row[7] == f"{c_kd.p_t:.2g}"
    assert kd_row[8] == f"{c_kd.wins}/{c_kd.ties}/{c_kd.losses}"
    assert t_row[6] == f"{p_t:.2g}" and not t_row[5].startswith("▲")
    # the teacher verdict is in the board's first lines, naming the test and correction
    head = "\n".join(md.splitlines()[:5])
    assert "**Teacher dcnn:teacher is NOT significantly better than the plain student dcnn:student**" in head
    assert "(Wilcoxon, Holm)" in head
    assert "Holm-corrected across the 2 comparisons" in md
    assert "95% CI (paired bootstrap" in md
    index = (tmp_path / "lb" / "README.md").read_text()
    assert "; teacher dcnn:teacher **NOT** better than student dcnn:student" in index
    # rebuilding gives the same board (the bootstrap is seeded)
    assert write_leaderboards(s.records(), s.teachers(), tmp_path / "lb2")[0].read_text() == md


def test_boards_from_typed_records_are_the_boards_from_the_stores_dicts(tmp_path):
    rng = np.random.default_rng(0)
    records = []
    for method, distiller, err in (("DCNN", "none", 0.9), ("KD", "kd", 0.8)):
        for s in range(3):
            abs_err = rng.normal(err, 0.1, 50).astype(np.float32)
            r = rec(method, s, float(abs_err.mean()), distiller=distiller)
            r["outcomes"] = {"test": {"abs_err": abs_err}}
            records.append(r)
    records.append(dict(rec("SAD", 0, 0), status="skipped", reason="needs features"))
    teachers = [teacher(s, {"abs_err": rng.normal(0.7, 0.1, 50).astype(np.float32)}) for s in range(3)]
    from_dicts = write_leaderboards(records, teachers, tmp_path / "dicts")
    typed = [Record.from_dict(r) for r in records]
    from_typed = write_leaderboards(typed, teachers, tmp_path / "typed")
    assert [p.name for p in from_typed] == [p.name for p in from_dicts]
    for a, b in zip(from_dicts, from_typed, strict=True):
        assert "Wilcoxon" in a.read_text() and a.read_text() == b.read_text()
    readme = (tmp_path / "dicts" / "README.md").read_text()
    assert (tmp_path / "typed" / "README.md").read_text() == readme
    with pytest.raises(UsageError, match="record 'KD-0-dcnn:student': unknown field 'metric'"):
        build_tables([dict(records[3], metric=1)], teachers)


def test_a_stored_cell_rerun_replaces_its_outcomes_and_a_failure_drops_them(tmp_path):
    s = Store(tmp_path / "r.db")
    r = rec("KD", 0, 0.8)
    r["outcomes"] = {"test": {"abs_err": np.ones(3, dtype=np.float32)}}
    s.put(r)
    assert s.outcomes("cell", r["id"])["test"]["abs_err"].tolist() == [1, 1, 1]
    s.put(dict(r, outcomes={"test": {"abs_err": np.zeros(3, dtype=np.float32)}}))
    assert s.outcomes("cell", r["id"])["test"]["abs_err"].tolist() == [0, 0, 0]
    s.put({k: v for k, v in r.items() if k != "outcomes"} | {"status": "failed"})
    assert s.outcomes("cell", r["id"]) == {}


def test_a_cached_teacher_is_stored_once_and_never_replaced(tmp_path):
    s = Store(tmp_path / "r.db")
    first = rec("KD", 0, 0.8)
    first["teacher_run"] = dict(teacher(0, {"abs_err": np.ones(2, dtype=np.float32)}), cached=True)
    s.put(first)  # its training cell was never stored (an interrupted run): stored now
    second = dict(rec("KD", 0, 0.8), id="other")
    second["teacher_run"] = dict(teacher(0, {"abs_err": np.zeros(2, dtype=np.float32)}), cached=True)
    s.put(second)
    (t,) = s.teachers()
    assert t["outcomes"]["test"]["abs_err"].tolist() == [1, 1]


def test_ranking_board_tests_per_user_with_win_tie_loss_and_says_the_teacher_is_better():
    rng = np.random.default_rng(5)
    users = 400
    ranks_base = rng.geometric(0.02, users) - 1

    def per_user(ranks):
        hit = (ranks < 50).astype(np.float32)
        return {"hr@50": hit, "ndcg@50": hit / np.log2(ranks + 2.0).astype(np.float32)}

    def ranking_rec(method, seed, ranks, distiller):
        r = rec(method, seed, 0.0, distiller=distiller, student="cdae:student")
        oc = per_user(ranks)
        r.update(task="ranking", dataset="ml", teacher="cdae:teacher")
        r["metrics"] = {"test": {k: float(v.mean()) for k, v in oc.items()}, "val": {}}
        r["outcomes"] = {"test": oc}
        return r

    records, teachers = [], []
    for seed in range(3):
        noise = rng.integers(-3, 4, users)
        records.append(ranking_rec("CDAE", seed, np.maximum(ranks_base + noise, 0), "none"))
        worse = ranks_base * 2 + rng.integers(0, 4, users)
        records.append(ranking_rec("RD", seed, worse, "rd"))
        better = np.maximum(ranks_base // 3 + rng.integers(-1, 2, users), 0)
        t = teacher(seed, per_user(better), dataset="ml", task="ranking", label="cdae:teacher")
        t["metrics"] = {"test": {k: float(v.mean()) for k, v in per_user(better).items()}}
        teachers.append(t)
    tab = build_tables(records, teachers)[("ml", "ranking")]
    assert tab["headers"][6:11] == [
        "Δ NDCG@50 vs student [95% CI]",
        "p (Wilcoxon, Holm)",
        "p (paired t)",
        "W/T/L",
        "p seeds (t)",
    ]
    rows = {r[0]: r for r in tab["rows"]}
    w, t_, loss = (int(x) for x in rows["RD"][9].split("/"))
    assert w + t_ + loss == users and t_ > 0  # users outside the top 50 in both are ties
    assert loss > w and rows["RD"][6].startswith("▼ -")  # a significant loss
    assert rows["Teacher (cdae:teacher)"][6].startswith("▲ +")
    md = render("ml", "ranking", tab)
    assert "- Teacher cdae:teacher is significantly better than the plain student cdae:student" in md
    assert "Smallest detectable difference, cdae:student" in md
    # the plain verdict, with the paper's own gain of the same method beside ours
    published = [
        {
            "source": "a paper",
            "dataset": "ml",
            "task": "ranking",
            "rows": [
                {"method": "RD", "model": "cdae", "metrics": {"ndcg@50": 0.112}},
                {"method": "CDAE", "model": "cdae", "metrics": {"ndcg@50": 0.110}},
            ],
        }
    ]
    md = render("ml", "ranking", build_tables(records, teachers, published)[("ml", "ranking")])
    line = next(x for x in md.splitlines() if x.startswith("- RD / cdae:student:"))
    assert "**is worse than the plain student**: Δ -" in line
    assert line.endswith("; published gain +0.002 (0.112 vs 0.11) [1].")


def test_meter_line_says_when_readings_were_filled_or_unmeasured():
    a, b = rec("KD", 0, 0.8), rec("KD", 1, 0.8)
    for r in (a, b):
        r["energy"] = dict(r["energy"], meter="nvml-energy", estimate=False, detail="NVML counter")
    a["energy"]["inference_quality"] = "filled"
    md = render("movies", "rating", build_tables([a, b], [])[("movies", "rating")])
    line = next(x for x in md.splitlines() if x.startswith("- Energy meter: `nvml-energy`"))
    assert "measured; some windows were shorter than the counter's update and filled" in line
    assert "could not be measured" not in line


def test_the_issues_inference_energy_reads_as_noise():
    from harness.leaderboard import noisy

    assert noisy([0.135, 3.14])  # identical students: std 2.1 J over a mean of 1.6 J
    assert not noisy([0.135, 0.14, 0.13])
    assert not noisy([3.14])  # one seed: no spread to judge
    assert not noisy([None, 0.1, float("nan")])


def test_noisy_energy_is_marked_never_bold_and_windows_and_peak_memory_survive_the_store(tmp_path):
    """A figure whose spread across seeds exceeds its mean carries the noise mark and a
    one-line legend; the inference window (passes, seconds) and peak memory go through
    the store to the Every column table; records stored before they existed show —."""
    from harness.leaderboard import NOISE_LEGEND, NOISE_MARK

    records = []
    for seed, j in enumerate([0.01, 0.2, 0.0]):  # mean 0.07, std 0.11: noise
        r = rec("DCNN", seed, 0.9, distiller="none")  # an old record: no window, no memory
        r["energy"] = dict(r["energy"], inference_j_per_1k=j)
        records.append(r)
    for seed, (j, passes) in enumerate([(0.1, 400), (0.11, 420), (0.1, 410)]):
        r = rec("KD", seed, 0.8)
        r["energy"] = dict(
            r["energy"],
            inference_j_per_1k=j,
            inference_passes=passes,
            inference_window_s=1.0,
            inference_load_1m=3.5,
        )
        r["config"] = {"energy": {"inference_min_seconds": 1.0}}
        records.append(
            dict(
                r,
                method="RD",
                distiller="rd",
                id=f"rd{seed}",
                energy=dict(r["energy"], inference_j_per_1k=0.2),
            )
        )
        r["memory"] = {
            "peak_rss_mib": 400.0 + 10 * seed,
            "start_rss_mib": 300.0,
            "rss_method": "kernel-peak",
            "cuda_max_allocated_mib": None,
        }
        records.append(r)
    s = Store(tmp_path / "r.db")
    for r in records:
        s.put(r)
    s.close()
    s = Store.open_existing(tmp_path / "r.db")
    stored = s.records()
    s.close()
    kd0 = next(r for r in stored if r["method"] == "KD" and r["seed"] == 0)
    assert kd0["memory"]["peak_rss_mib"] == 400.0 and kd0["energy"]["inference_passes"] == 400
    md = write_leaderboards(stored, [], tmp_path / "lb")[0].read_text()
    compact, every = md.split("## Every column")
    rows = {_cells(x)[0]: _cells(x) for x in compact.splitlines() if x.startswith("| ")}
    infer = rows["Method"].index("Infer J/1k")
    assert rows["DCNN"][infer] == f"0.07 ± 0.11 {NOISE_MARK}"
    assert rows["KD"][infer] == "**0.103 ± 0.0058**"  # the noisy row's lower mean is not bold
    assert compact.count(NOISE_LEGEND) == 1 and every.count(NOISE_LEGEND) == 1
    wide = {_cells(x)[0]: _cells(x) for x in every.splitlines() if x.startswith("| ")}
    head = wide["Method"]
    assert "CUDA peak MiB" not in head  # (no record ran on CUDA)
    assert wide["KD"][head.index("Infer passes (window)")] == "400–420 (1 s)"
    assert wide["KD"][head.index("Peak RSS MiB")] == "410 ± 10"
    assert wide["DCNN"][head.index("Infer passes (window)")] == "—"
    assert wide["DCNN"][head.index("Peak RSS MiB")] == "—"
    assert wide["DCNN"][head.index("Infer J/1k")].endswith(NOISE_MARK)
    assert "- Inference energy: the test split's passes repeated until the window lasted at least 1 s" in md
    assert "load average at the windows' ends 3.5–3.5 on 2 cores (more runnable work than cores" in md
    assert "- Peak RSS: the kernel's peak RSS (VmHWM), reset when the cell started." in md
