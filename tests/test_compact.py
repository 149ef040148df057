"""The compact per-pair tables, their plots' data and the overview page."""

from __future__ import annotations

import re

import numpy as np

from harness.compact import best_rows, short_labels
from harness.leaderboard import build_tables, render, write_leaderboards
from tests.test_leaderboard import rec, teacher

PAIRS = {"cdae:student": "cdae:teacher", "caser:student": "caser:teacher"}


def board_records(rng: np.random.Generator) -> tuple[list[dict], list[dict]]:
    """Two teacher → student pairs on one board, plain / KD / RD, a pruned family for
    one of them; per-example outcomes so every row is tested."""
    truth = rng.gamma(2.0, 0.4, 300)
    records, teachers = [], []
    shift = {"DCNN": 0.0, "KD": -0.08, "RD": 0.06, "SP": 0.01, "SP-KD": -0.02}
    for stu, tch in PAIRS.items():
        methods = ["DCNN", "KD", "RD"] + (["SP", "SP-KD"] if stu == "cdae:student" else [])
        for seed in range(3):
            for m in methods:
                err = np.abs(truth + rng.normal(0, 0.2, 300)) + shift[m]
                distiller = {"DCNN": "none", "SP": "none", "RD": "rd"}.get(m, "kd")
                r = rec(m, seed, float(err.mean()), distiller=distiller, student=stu)
                r["teacher"] = tch
                r["pruner"] = "sp" if m.startswith("SP") else "none"
                r["outcomes"] = {"test": {"abs_err": err.astype(np.float32)}}
                if r["pruner"] == "sp":
                    r["size"] = dict(r["size"], params=60, nonzero_params=60, flops=250, pct_of_teacher=6.0)
                    r["levels"] = [
                        {"removed": 0.0, "params": 100, "nonzero_params": 100, "val": {"mae": 0.9}},
                        {
                            "removed": 0.4,
                            "params": 60,
                            "nonzero_params": 60,
                            "val": {"mae": 0.92},
                            "winner": True,
                        },
                    ]
                records.append(r)
            t_err = np.abs(truth + rng.normal(0, 0.1, 300))
            t = teacher(seed, {"abs_err": t_err.astype(np.float32)}, label=tch)
            t["metrics"] = {"test": {"mae": float(t_err.mean()), "mse": 0.5, "rmse": 0.7}}
            teachers.append(t)
    return records, teachers


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def tables_of(md: str) -> dict[str, list[list[str]]]:
    """The compact tables of a board by their heading: rows as cells, header first."""
    out, title = {}, None
    for line in md.split("Rows: the plain student first")[0].splitlines():
        if line.startswith("## "):
            title = line[3:]
        elif line.startswith("|") and title and not line.startswith("|--"):
            out.setdefault(title, []).append(cells(line))
        elif not line.startswith("|"):
            title = title if not out.get(title) else None
    return out


def test_one_table_per_pair_plain_student_first_best_in_bold_at_most_12_columns():
    records, teachers = board_records(np.random.default_rng(0))
    t = build_tables(records, teachers)[("movies", "rating")]
    md = render("movies", "rating", t)
    tabs = tables_of(md)
    assert list(tabs) == [
        "caser:teacher → caser:student",
        "cdae:teacher → cdae:student",
        "cdae:teacher → cdae:student, pruned by SP",
    ]
    for rows in tabs.values():
        header, body = rows[0], rows[1:]
        assert len(header) <= 12
        assert header == [
            "Method",
            "MAE",
            "MSE",
            "Δ MAE vs student [95% CI]",
            "Params (% teacher)",
            "FLOPs/sample",
            "Train J",
            "Infer J/1k",
        ]
        assert body[0][0] == "DCNN" and body[0][3] == "baseline"  # the plain student first
        assert body[-1][0].startswith("Teacher (")  # the teacher last, for reference
        assert not any("**" in c for c in body[-1])  # and not ranked
    unpruned = tabs["cdae:teacher → cdae:student"]
    assert [r[0] for r in unpruned[1:]] == ["DCNN", "KD", "RD", "Teacher (cdae:teacher)"]
    assert [r[0] for r in tabs["cdae:teacher → cdae:student, pruned by SP"][1:]] == [
        "DCNN",
        "SP",
        "SP-KD",
        "Teacher (cdae:teacher)",
    ]
    # KD is shifted 0.08 lower in MAE: it is the best MAE and the best Δ, with its ▲
    kd = unpruned[2]
    assert kd[1].startswith("**") and kd[1].endswith("**")
    assert re.match(r"^\*\*▲ -0\.\d+ \[-[\d.]+, -[\d.]+\]\*\*$", kd[3]), kd[3]
    assert unpruned[3][3].startswith("▼ +")  # RD: a significant loss, never bold
    # every row has the same params, FLOPs and inference energy: no column winner
    assert not any(r[4].startswith("**") or r[5].startswith("**") for r in unpruned[1:])
    # the pruned rows are smaller: their params and FLOPs are the bold ones
    pruned = tabs["cdae:teacher → cdae:student, pruned by SP"]
    assert pruned[2][4] == "**60 (6%)**" and pruned[3][5] == "**250**" and pruned[1][4] == "100 (10%)"
    # the information the wide table had is all still on the board
    assert "## Every column" in md and "W/T/L" in md.split("## Every column")[1]
    assert "Teacher check" in "\n".join(md.splitlines()[:3])


def test_best_rows_ties_and_a_column_without_a_winner():
    assert best_rows([3.0, 1.0, 1.0, None], lower=True) == {1, 2}
    assert best_rows([3.0, 1.0, 2.0], lower=False) == {0}
    assert best_rows([5.0, 5.0, None], lower=True) == set()
    assert best_rows([None, None], lower=True) == set()


def test_short_labels_keep_only_the_hyper_parameters_that_vary():
    methods = [
        "CD-TG(lambda_=0.1,T1=1.0)",
        "CD-TG(lambda_=0.5,T1=1.0)",
        "RD(rho=0.5,K=10)",
        "SP(rate=0.2,every=4)-KD(alpha=0.5)",
        "SP(rate=0.2,every=4)",
        "Caser",
    ]
    assert short_labels(methods) == {
        "CD-TG(lambda_=0.1,T1=1.0)": "CD-TG(lambda_=0.1)",
        "CD-TG(lambda_=0.5,T1=1.0)": "CD-TG(lambda_=0.5)",
        "RD(rho=0.5,K=10)": "RD",
        "SP(rate=0.2,every=4)-KD(alpha=0.5)": "SP-KD",
        "SP(rate=0.2,every=4)": "SP",
        "Caser": "Caser",
    }


def test_overview_lists_every_table_with_its_best_method_gain_and_links(tmp_path):
    records, teachers = board_records(np.random.default_rng(1))
    write_leaderboards(records, teachers, tmp_path)
    readme = (tmp_path / "README.md").read_text()
    assert readme.startswith("# Leaderboards: g\n")
    lines = [cells(x) for x in readme.splitlines() if x.startswith("| [")]
    assert len(lines) == 3  # one line per compact table
    by = {re.search(r"rating: (.*?)\]", x[0]).group(1): x for x in lines}
    line = by["cdae:teacher → cdae:student"]
    assert line[2] == "KD" and line[3].startswith("MAE ")
    assert line[4].startswith("▲ -") and line[5].startswith("significant win (p ")
    assert "Wilcoxon, Holm" in line[5]
    assert by["cdae:teacher → cdae:student, pruned by SP"][2] == "SP-KD"
    for x in lines:  # links to the board's table and its plots, all of which exist
        target = re.search(r"\]\((.*?)\)", x[0]).group(1)
        name, anchor = target.split("#")
        assert f'<a id="{anchor}"></a>' in (tmp_path / name).read_text()
        for f in re.findall(r"\]\((.*?)\)", x[6]):
            assert (tmp_path / f).is_file(), f
    assert "- Hardware: Test CPU (2 cores)" in readme and "`cpu-estimate`: **estimate**" in readme
    assert "Regenerate: `harness run --grid g.yaml`" in readme
    assert "[movies — rating](movies__rating.md): 24 ok, 0 failed, 0 skipped" in readme
