"""Leaderboards: markdown (tabulate) per dataset and task, from the results store.

Each row is a method (pruner and distiller joined as the papers do) for one teacher and
student; figures are mean ± std over seeds. Every row (the teacher's too) is compared
with the plain student of the same teacher/student on the test examples
(harness.stats): Δ of the primary metric with a 95% paired-bootstrap CI, the task's
per-example test (Wilcoxon signed-rank, or McNemar's exact test for classification)
on outcomes averaged over the seeds both rows have, Holm-corrected across the table's
rows, ▲/▼ for significant wins/losses, the paired t-test beside it and per-example
win/tie/loss counts; `p seeds (t)` is the older paired t-test over seed means
(scipy.stats.ttest_rel, as RecBole's significance script), kept as a secondary column.
The board opens with whether each teacher is significantly better than its student.
Every file names the hardware, the versions, the energy meter and the command that
regenerates it.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scipy import stats
from tabulate import tabulate

from . import stats as sig
from .envinfo import hardware_line
from .memory import SAMPLE_S
from .record import Record
from .tasks import TASK_OBJECTS

if TYPE_CHECKING:
    from .coverage import Plan

METRIC_NAMES = {
    "top1_error": "Top-1 err %",
    "accuracy": "Acc %",
    "mae": "MAE",
    "mse": "MSE",
    "rmse": "RMSE",
    **{f"{m}@{k}": f"{m.upper()}@{k}" for m in ("hr", "ndcg") for k in (5, 10, 20, 50, 100)},
}


def _fmt(values: list[float], digits: int = 4) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "—"
    m = statistics.fmean(values)
    if len(values) == 1:
        return f"{m:.{digits}g}"
    return f"{m:.{digits}g} ± {statistics.stdev(values):.2g}"


def _int(v: float | None) -> str:
    return "—" if v is None else f"{int(round(v)):,}"


#: marks an energy figure whose spread across seeds exceeds its mean (`noisy`)
NOISE_MARK = "‡"
NOISE_LEGEND = (
    f"{NOISE_MARK}: the spread across seeds exceeds the mean: noise of the measurement "
    "(a busy machine, a short window), not a difference between models."
)


def _present(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


def noisy(values: Iterable[float | None]) -> bool:
    """Whether figures measured over several seeds spread more than their mean (std >
    mean): for energy, where identical models must read alike, a sign of noise."""
    vs = _present(values)
    return len(vs) > 1 and statistics.stdev(vs) > abs(statistics.fmean(vs))


def fmt_energy(values: list[float | None]) -> str:
    """An energy figure as `_fmt` gives it, with NOISE_MARK when it is `noisy`."""
    cell = _fmt(values, 3)
    return f"{cell} {NOISE_MARK}" if noisy(values) else cell


def _spread_range(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:,.0f}" if lo == hi else f"{lo:,.0f}–{hi:,.0f}"


def inference_window(energies: list[dict[str, Any]]) -> str:
    """'412 (1.0 s)': the inference passes of a row's cells (a range over seeds) and the
    mean length of their windows; '—' for records stored before these were kept."""
    passes = _present(e.get("inference_passes") for e in energies)
    seconds = _present(e.get("inference_window_s") for e in energies)
    if not passes:
        return "—"
    return _spread_range(passes) + (f" ({statistics.fmean(seconds):.2g} s)" if seconds else "")


def _mib(values: Iterable[float | None]) -> str:
    vs = _present(values)
    if not vs:
        return "—"
    return f"{statistics.fmean(vs):,.0f}" + (f" ± {statistics.stdev(vs):.2g}" if len(vs) > 1 else "")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")


def paired_p(a: dict[int, float], b: dict[int, float]) -> float | None:
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    x, y = [a[s] for s in seeds], [b[s] for s in seeds]
    if all(abs(i - j) < 1e-12 for i, j in zip(x, y, strict=True)):
        return 1.0
    return float(stats.ttest_rel(x, y).pvalue)


def _sparse_kib(sizes: list[dict[str, Any]]) -> str:
    """Bytes of the sparse encoding, shown only for models with zeros (unstructured
    pruning): their dense size is not claimed smaller."""
    values = [s.get("sparse_bytes") for s in sizes]
    if any(v is None for v in values):
        return "—"
    return f"{statistics.fmean(values) / 1024:.1f}"


def levels_section(ok: list[Record], primary: str) -> list[str]:
    """The error/size curve of every pruned row: its levels, averaged over seeds."""
    by: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in ok:
        if r.levels:
            by[(r.method, r.student)].append(r)
    if not by:
        return []
    name = METRIC_NAMES.get(primary, primary)
    out = ["", "## Pruning levels (validation error against deployed size)", ""]
    for (method, student), rs in sorted(by.items()):
        n = min(len(r.levels) for r in rs)
        rows = []
        for i in range(n):
            lv = [r.levels[i] for r in rs]
            rows.append(
                [
                    i,
                    lv[0].get("phase", ""),
                    f"{100 * statistics.fmean(v['removed'] for v in lv):.1f}",
                    _int(statistics.fmean(v["params"] for v in lv)),
                    _int(statistics.fmean(v["nonzero_params"] for v in lv)),
                    _fmt([v["val"][primary] for v in lv]),
                    sum(1 for v in lv if v.get("winner")),
                ]
            )
        out += [
            f"{method} / {student}:",
            "",
            tabulate(
                rows,
                headers=[
                    "level",
                    "phase",
                    "removed %",
                    "params",
                    "non-zero",
                    f"val {name}",
                    "winner (seeds)",
                ],
                tablefmt="github",
                disable_numparse=True,
            ),
            "",
        ]
    return out


#: a distillation term below this share of the task term does nothing, whatever its code
INACTIVE_RATIO = 0.01


def diagnostics_section(ok: list[Record]) -> list[str]:
    """What each distiller did, from the terms and stats it logged (`Step.log_terms`,
    `Step.log_stats`), averaged over seeds: the ratio of its distillation terms to the
    task term in the first and the last epoch, and for sampling distillers the mean
    sample size per instance and the mean teacher-rank percentile of the sampled items
    (0 = the teacher's top, 50 = a uniform draw). A ratio under 1% is flagged."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        if r.diagnostics:
            by[(r.method, r.student)].append(r.diagnostics)
    if not by:
        return []

    def mean(values: Iterable[float | None]) -> float | None:
        values = [v for v in values if v is not None]
        return statistics.fmean(values) if values else None

    def pct(v: float | None) -> str:
        return "—" if v is None else f"{100 * v:.3g}%"

    rows, flagged = [], []
    for (method, student), ds in sorted(by.items()):
        first, last = mean(d["ratio_first"] for d in ds), mean(d["ratio_last"] for d in ds)
        terms = sorted({k for d in ds for k in d["terms_last"] if k != "task"})
        size = mean(d["stats"].get("sample_size") for d in ds)
        rank = mean(d["stats"].get("sample_rank_pct") for d in ds)
        weak = last is not None and last < INACTIVE_RATIO
        if weak:
            notes = sorted({d.get("note") for d in ds if d.get("note")})
            flagged.append(f"{method} / {student}" + "".join(f" ({n})" for n in notes))
        rows.append(
            [
                method,
                student,
                ", ".join(terms),
                pct(first),
                pct(last) + (" ⚠" if weak else ""),
                "—" if size is None else f"{size:.1f}",
                "—" if rank is None else f"{rank:.1f}",
                len(ds),
            ]
        )
    out = [
        "",
        "## Distiller diagnostics",
        "",
        "Distillation / task: the distiller's terms (weights included) against the task term it "
        "keeps, first and last epoch, mean over seeds. Sample: mean items per training instance; "
        "teacher rank %: mean rank of the sampled items in the teacher's ranking of the "
        "unobserved items (0 = its top, 50 = uniform).",
        "",
        tabulate(
            rows,
            headers=[
                "Method",
                "Student",
                "Terms",
                "Distillation / task (first)",
                "(last)",
                "Sample",
                "Teacher rank %",
                "Seeds",
            ],
            tablefmt="github",
            disable_numparse=True,
        ),
    ]
    if flagged:
        out += [
            "",
            f"⚠ Distillation terms under {INACTIVE_RATIO:.0%} of the task term at the last epoch, "
            "too small to act:",
            "",
            *[f"- {f}" for f in flagged],
        ]
    return out


def _metric_names(task: str, records: list[Record]) -> list[str]:
    if task in TASK_OBJECTS:
        names = [m.name for m in TASK_OBJECTS[task].metrics]
    else:
        names = sorted({k for r in records for k in r.metrics["test"]})
    return names


def _primary(task: str, names: list[str]) -> tuple[str, bool]:
    t = TASK_OBJECTS.get(task)
    if t is not None:
        m = next(m for m in t.metrics if m.name == t.primary)
        return m.name, m.lower_is_better
    return names[0], False


def _published_for(
    published: list[dict[str, Any]], dataset: str, task: str
) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    """The published rows that apply to a table (dataset label and task), each with its
    footnote number, and the footnotes."""
    rows, notes = [], []
    for entry in published:
        if dataset.split(" ")[0] != entry["dataset"] or entry.get("task") not in (None, task):
            continue
        notes.append(entry["source"])
        rows += [(len(notes), r) for r in entry["rows"]]
    return rows, notes


def _published_cell(rows: list[tuple[int, dict[str, Any]]], method: str, model_label: str) -> str:
    """'HR@50 .3805, NDCG@50 .1175 [1]' for a row whose method and model match."""
    model = model_label.split("(")[0].split(":")[0]
    base = method.split("(")[0]  # the method without the hyper-parameters the grid shows
    out = []
    for note, r in rows:
        if r["method"] == base and r["model"] == model:
            figures = ", ".join(f"{METRIC_NAMES.get(k, k)} {v:g}" for k, v in r["metrics"].items())
            out.append(f"{figures} [{note}]")
    return "; ".join(out) or "—"


TEST_SHORT = {"wilcoxon": "Wilcoxon", "mcnemar": "McNemar"}
SIG_HEADERS = 5  # the columns `_significance` gives each row


def _by_seed(runs: Iterable[tuple[int, dict[str, Any] | None]], name: str) -> dict[int, Any]:
    """The test outcomes `name` of (seed, outcomes) runs, by seed, where stored."""
    return {seed: oc["test"][name] for seed, oc in runs if name in (oc or {}).get("test", {})}


def _outcomes_by_seed(rs: Iterable[Record], name: str) -> dict[int, Any]:
    """A row's cells' test outcomes `name`, by seed."""
    return _by_seed(((r.seed, r.outcomes) for r in rs), name)


def _teacher_outcomes_by_seed(ts: Iterable[dict[str, Any]], name: str) -> dict[int, Any]:
    """A teacher's runs' (`Store.teachers()`, plain dicts) test outcomes `name`, by seed."""
    return _by_seed(((t["seed"], t.get("outcomes")) for t in ts), name)


def _is_plain(rs: Iterable[Record]) -> bool:
    return all(r.distiller == "none" and r.pruner == "none" for r in rs)


def _p(p: float | None) -> str:
    return "—" if p is None else f"{p:.2g}"


def _significance(
    task: str,
    primary: str,
    lower: bool,
    rows_by: dict[tuple[str, str, str], list[Record]],
    teacher_runs: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """Every row (and teacher) against the plain student of its teacher/student: the
    cells of the significance columns by row key (("teacher", label) for teachers),
    the teacher check and noise-floor lines, and the test's description."""
    t = TASK_OBJECTS.get(task)
    name = METRIC_NAMES.get(primary, primary)
    empty: dict[str, Any] = {"cells": {}, "teacher_lines": [], "floor_lines": [], "test": None}
    if t is None or not t.primary_outcome[0]:
        return empty
    outcome, scale = t.primary_outcome
    plain = {(k[0], k[1]): rs for k, rs in rows_by.items() if _is_plain(rs)}
    base_oc = {pair: _outcomes_by_seed(rs, outcome) for pair, rs in plain.items()}
    comps, seeds_p, teacher_pairs = _comparisons(t, primary, lower, rows_by, teacher_runs, plain, base_oc)
    cells, verdicts = _significance_cells(comps, seeds_p, plain, lower)
    teacher_lines, verdicts_by_pair = _teacher_lines(teacher_runs, teacher_pairs, verdicts, cells, name)
    return {
        "cells": cells,
        "teacher_lines": teacher_lines,
        "teacher_verdicts": verdicts_by_pair,
        "floor_lines": _floor_lines(plain, base_oc, comps, scale, name),
        "test": t.paired_test,
        "outcome": outcome,
        "comparisons": len(comps),
        "verdicts": {k: v for k, v in verdicts.items() if k[0] != "teacher"},
    }


def _comparisons(
    t: Any,
    primary: str,
    lower: bool,
    rows_by: dict[tuple[str, str, str], list[Record]],
    teacher_runs: dict[str, list[dict[str, Any]]],
    plain: dict[tuple[str, str], list[Record]],
    base_oc: dict[tuple[str, str], Any],
) -> tuple[list[tuple[Any, tuple[str, str], sig.Comparison]], dict[Any, float | None], dict[str, list]]:
    """Each row and teacher compared with the plain student of its pair, on the test
    examples' outcomes: (row key, pair, comparison) in order, the seed-level paired p
    by row key, and the plain-student pairs of each teacher."""
    outcome, scale = t.primary_outcome
    base_metric = {pair: {r.seed: r.metrics["test"][primary] for r in rs} for pair, rs in plain.items()}
    comps: list[tuple[Any, tuple[str, str], sig.Comparison]] = []  # (row key, pair, comparison)
    seeds_p: dict[Any, float | None] = {}
    for key, rs in rows_by.items():
        pair = (key[0], key[1])
        if pair not in plain or _is_plain(rs):
            continue
        seeds_p[key] = paired_p({r.seed: r.metrics["test"][primary] for r in rs}, base_metric[pair])
        c = sig.compare(_outcomes_by_seed(rs, outcome), base_oc[pair], t.paired_test, scale, lower)
        if c is not None:
            comps.append((key, pair, c))
    teacher_pairs = {tch: [pair for pair in plain if pair[0] == tch] for tch in teacher_runs}
    for tch, ts in teacher_runs.items():
        for pair in teacher_pairs[tch]:
            c = sig.compare(
                _teacher_outcomes_by_seed(ts, outcome), base_oc[pair], t.paired_test, scale, lower
            )
            if c is not None:
                comps.append((("teacher", tch, pair[1]), pair, c))
        if len(teacher_pairs[tch]) == 1:
            mine = {tr["seed"]: tr["metrics"]["test"].get(primary) for tr in ts}
            seeds_p[("teacher", tch, teacher_pairs[tch][0][1])] = paired_p(
                mine, base_metric[teacher_pairs[tch][0]]
            )
    return comps, seeds_p, teacher_pairs


def _significance_cells(
    comps: list[tuple[Any, tuple[str, str], sig.Comparison]],
    seeds_p: dict[Any, float | None],
    plain: dict[tuple[str, str], list[Record]],
    lower: bool,
) -> tuple[dict[Any, list[str]], dict[Any, tuple[sig.Comparison, float | None, str]]]:
    """Holm-adjusted p over all comparisons; the significance columns by row key and
    each comparison's verdict (comparison, adjusted p, ▲/▼ mark)."""
    adjusted = sig.holm([c.p for _k, _pair, c in comps])
    cells: dict[Any, list[str]] = {}
    verdicts: dict[Any, tuple[sig.Comparison, float | None, str]] = {}
    for (key, _pair, c), p_adj in zip(comps, adjusted, strict=True):
        mark = {"win": "▲ ", "loss": "▼ ", "": ""}[sig.significant(c, p_adj, lower)]
        verdicts[key] = (c, p_adj, mark)
        cells[key] = [
            f"{mark}{c.delta:+.3g} [{c.ci[0]:+.3g}, {c.ci[1]:+.3g}]",
            _p(p_adj),
            _p(c.p_t) if c.test != "mcnemar" else "—",
            f"{c.wins}/{c.ties}/{c.losses}",
            _p(seeds_p.get(key)),
        ]
    for key, p in seeds_p.items():
        cells.setdefault(key, ["—", "—", "—", "—", _p(p)])
    for pair, rs in plain.items():
        cells[(pair[0], pair[1], rs[0].method)] = ["baseline", "—", "—", "—", "—"]
    return cells, verdicts


def _teacher_lines(
    teacher_runs: dict[str, list[dict[str, Any]]],
    teacher_pairs: dict[str, list],
    verdicts: dict[Any, tuple[sig.Comparison, float | None, str]],
    cells: dict[Any, list[str]],
    name: str,
) -> tuple[list[str], list[tuple[str, str, bool | None]]]:
    """The teacher check: whether each teacher is significantly better than the plain
    student of its pair (lines, and (teacher, student, better) verdicts); a teacher
    with one pair gets that pair's cells as its row's (in `cells`)."""
    teacher_lines = []
    verdicts_by_pair: list[tuple[str, str, bool | None]] = []  # (teacher, student, better)
    for tch in sorted(teacher_runs):
        for pair in teacher_pairs[tch]:
            v = verdicts.get(("teacher", tch, pair[1]))
            verdicts_by_pair.append((tch, pair[1], None if v is None else v[2].startswith("▲")))
            if v is None:
                teacher_lines.append(
                    f"- **No per-example outcomes of teacher {tch} and plain student {pair[1]}**: whether "
                    "the teacher is better is not tested (outcomes are stored by cells run with this "
                    "version; rerun the grid into a fresh folder)."
                )
                continue
            c, p_adj, mark = v
            figures = (
                f"Δ {name} {c.delta:+.3g} [95% CI {c.ci[0]:+.3g}, {c.ci[1]:+.3g}], "
                f"p {_p(p_adj)} ({TEST_SHORT[c.test]}, Holm), {c.n} test examples, seeds "
                f"{', '.join(map(str, c.seeds))}"
            )
            if mark.startswith("▲"):
                teacher_lines.append(
                    f"- Teacher {tch} is significantly better than the plain student {pair[1]}: {figures}."
                )
            else:
                teacher_lines.append(
                    f"- **Teacher {tch} is NOT significantly better than the plain student {pair[1]}** "
                    f"({figures}): it has nothing shown to transfer, so the distillation rows of this "
                    "pair are not meaningful as distillation results."
                )
        if len(teacher_pairs[tch]) == 1:
            cells[("teacher", tch)] = cells.get(
                ("teacher", tch, teacher_pairs[tch][0][1]), ["—"] * SIG_HEADERS
            )
    return teacher_lines, verdicts_by_pair


def _floor_lines(
    plain: dict[tuple[str, str], list[Record]],
    base_oc: dict[tuple[str, str], Any],
    comps: list[tuple[Any, tuple[str, str], sig.Comparison]],
    scale: Any,
    name: str,
) -> list[str]:
    """The smallest detectable difference of each plain student (its noise floor)."""
    floor_lines = []
    for pair in sorted(plain):
        f = sig.noise_floor(base_oc[pair], scale)
        if f is None:
            continue
        widths = sorted(c.half_width for _k, p2, c in comps if p2 == pair)
        own = ""
        if widths:
            own = f"; the rows here (over the seeds they average): median ±{statistics.median(widths):.3g}"
        floor_lines.append(
            f"- Smallest detectable difference, {pair[1]} (teacher {pair[0]}): ±{f.half_width:.3g} {name}, "
            f"the median 95% CI half-width of the plain student against itself, seed against "
            f"seed ({f.pairs} pairs; median |Δ| between its seeds {f.abs_delta:.3g}){own}."
        )
    return floor_lines


def as_records(records: Iterable[Record | dict[str, Any]]) -> list[Record]:
    """Cell records as typed `Record`s: the store's dicts (`Store.records()`) read once
    with `Record.from_dict`; records already typed are kept."""
    return [r if isinstance(r, Record) else Record.from_dict(r) for r in records]


def build_tables(
    records: Iterable[Record | dict[str, Any]],
    teachers: list[dict[str, Any]],
    published: list[dict[str, Any]] | None = None,
) -> dict[tuple[str, str], dict[str, Any]]:
    """Group the cell records by (dataset, task) and compute the table of each.
    `teachers`: the teacher runs (`Store.teachers()`, plain dicts). `published`: the
    grid's figures from papers (see `harness.grid.published`), shown in a column
    beside ours where method and model match."""
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in as_records(records):
        groups[(r.dataset, r.task)].append(r)
    return {
        (dataset, task): _build_table(dataset, task, recs, teachers, published or [])
        for (dataset, task), recs in groups.items()
    }


def _build_table(
    dataset: str,
    task: str,
    recs: list[Record],
    teachers: list[dict[str, Any]],
    published: list[dict[str, Any]],
) -> dict[str, Any]:
    """The table of one (dataset, task): its headers, teacher rows, then the student
    rows of each teacher/student pair, best first; with the per-pair tables."""
    ok = [r for r in recs if r.status == "ok"]
    failed = [r for r in recs if r.status == "failed"]
    skipped = [r for r in recs if r.status == "skipped"]
    names = _metric_names(task, ok) if ok else []
    primary, lower = _primary(task, names) if names else ("", True)
    rows_by: dict[tuple[str, str, str], list[Record]] = defaultdict(list)
    for r in ok:
        rows_by[(r.teacher, r.student, r.method)].append(r)
    tkeys = {(t["teacher"]) for t in teachers if t["dataset"] == dataset and t["task"] == task}
    teacher_runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in teachers:
        if t["dataset"] == dataset and t["task"] == task:
            teacher_runs[t["teacher"]].append(t)
    sg = _significance(task, primary, lower, rows_by, teacher_runs)
    cuda = any((r.memory or {}).get("cuda_max_allocated_mib") is not None for r in ok)
    pub_rows, pub_notes = _published_for(published, dataset, task)
    headers = _table_headers(names, primary, sg, cuda, bool(pub_rows))
    table = [_teacher_table_row(tch, teacher_runs[tch], names, sg, cuda, pub_rows) for tch in sorted(tkeys)]
    order = sorted(
        rows_by,
        key=lambda k: (
            k[0],
            k[1],
            statistics.fmean([r.metrics["test"][primary] for r in rows_by[k]]) * (1 if lower else -1),
        ),
    )
    for key in order:
        rs = sorted(rows_by[key], key=lambda r: r.seed)
        table.append(_student_table_row(key, rs, names, sg, cuda, pub_rows))
    from .compact import pair_tables

    pairs = pair_tables(
        dataset, task, rows_by, teacher_runs, sg, names, primary, lower, f"{slug(dataset)}__{task}"
    )
    return {
        "pairs": pairs,
        "headers": headers,
        "rows": table,
        "records": recs,
        "ok": ok,
        "failed": failed,
        "skipped": skipped,
        "primary": primary,
        "teachers": tkeys,
        "published": pub_notes,
        "published_rows": pub_rows,
        "significance": sg,
    }


def _table_headers(
    names: list[str], primary: str, sg: dict[str, Any], cuda: bool, published: bool
) -> list[str]:
    test = TEST_SHORT.get(sg["test"] or "", "test")
    pname = METRIC_NAMES.get(primary, primary)
    return [
        "Method",
        "Student",
        *[METRIC_NAMES.get(n, n) for n in names],
        f"Δ {pname} vs student [95% CI]",
        f"p ({test}, Holm)",
        "p (paired t)",
        "W/T/L",
        "p seeds (t)",
        "Params",
        "% teacher",
        "% student",
        "Non-zero",
        "Size KiB",
        "Sparse KiB",
        "FLOPs/sample",
        "Train J",
        "Infer J/1k",
        "Infer passes (window)",
        "Meter",
        "Train s",
        "Peak RSS MiB",
        *(["CUDA peak MiB"] if cuda else []),
        "Seeds",
        *(["Published"] if published else []),
    ]


def _teacher_table_row(
    tch: str,
    ts: list[dict[str, Any]],
    names: list[str],
    sg: dict[str, Any],
    cuda: bool,
    pub_rows: Any,
) -> list[str]:
    return [
        f"Teacher ({tch})",
        "—",
        *[_fmt([t["metrics"]["test"].get(n) for t in ts]) for n in names],
        *sg["cells"].get(("teacher", tch), ["see above"] + ["—"] * (SIG_HEADERS - 1)),
        _int(ts[0]["size"]["params"]),
        "100",
        "—",
        _int(ts[0]["size"]["nonzero_params"]),
        f"{ts[0]['size']['bytes'] / 1024:.1f}",
        "—",
        _int(ts[0]["size"]["flops"]),
        fmt_energy([t["energy"]["train_j"] for t in ts]),
        "—",
        "—",
        ts[0]["energy"]["meter"],
        _fmt([t["times"]["train_s"] for t in ts], 3),
        "—",  # (trained inside a cell: in that cell's peak)
        *(["—"] if cuda else []),
        ", ".join(str(t["seed"]) for t in ts),
        *([_published_cell(pub_rows, "Teacher", tch)] if pub_rows else []),
    ]


def _student_table_row(
    key: tuple[str, str, str],
    rs: list[Record],
    names: list[str],
    sg: dict[str, Any],
    cuda: bool,
    pub_rows: Any,
) -> list[str]:
    _tch, stu, method = key
    size = [r.size for r in rs]
    return [
        method,
        stu,
        *[_fmt([r.metrics["test"].get(n) for r in rs]) for n in names],
        *sg["cells"].get(key, ["—"] * SIG_HEADERS),
        _int(statistics.fmean(s["params"] for s in size)),
        f"{statistics.fmean(s['pct_of_teacher'] for s in size):.1f}",
        f"{statistics.fmean(s.get('pct_of_unpruned', 100.0) for s in size):.1f}",
        _int(statistics.fmean(s["nonzero_params"] for s in size)),
        f"{statistics.fmean(s['bytes'] for s in size) / 1024:.1f}",
        _sparse_kib(size),
        _int(statistics.fmean(s["flops"] for s in size)),
        fmt_energy([r.energy["train_j"] for r in rs]),
        fmt_energy([r.energy["inference_j_per_1k"] for r in rs]),
        inference_window([r.energy for r in rs]),
        ", ".join(sorted({r.energy["meter"] for r in rs})),
        _fmt([r.times["train_s"] for r in rs], 3),
        _mib((r.memory or {}).get("peak_rss_mib") for r in rs),
        *([_mib((r.memory or {}).get("cuda_max_allocated_mib") for r in rs)] if cuda else []),
        ", ".join(str(r.seed) for r in rs),
        *([_published_cell(pub_rows, method, stu)] if pub_rows else []),
    ]


def _published_delta(
    rows: list[tuple[int, dict[str, Any]]], method: str, plain: str, student: str, primary: str
) -> str:
    """The paper's own gain of `method` over its plain student (the row named `plain`,
    our plain student's label) on `primary`, e.g. '+0.0068 (0.1175 vs 0.1107) [1]', or
    '' when the paper has no such pair."""
    model = student.split("(")[0].split(":")[0]

    def figure(label: str) -> tuple[int, float] | None:
        for note, r in rows:
            if r["method"] == label.split("(")[0] and r["model"] == model and primary in r["metrics"]:
                return note, r["metrics"][primary]
        return None

    mine, base = figure(method), figure(plain)
    if mine is None or base is None:
        return ""
    return f"{mine[1] - base[1]:+.3g} ({mine[1]:g} vs {base[1]:g}) [{mine[0]}]"


def verdict_section(t: dict[str, Any]) -> list[str]:
    """One plain line per distilled or pruned row: does it beat the plain student of its
    teacher/student, by the table's per-example test after Holm's correction, with the
    published gain of the same method beside ours where the paper has one."""
    sg = t.get("significance") or {}
    verdicts = sg.get("verdicts") or {}
    if not verdicts:
        return []
    name = METRIC_NAMES.get(t["primary"], t["primary"])
    test = TEST_SHORT.get(sg.get("test") or "", "test")
    plain = {(r.teacher, r.student): r.method for r in t["ok"] if r.distiller == r.pruner == "none"}
    out = ["", f"## Does each method beat the plain student? ({name}, {test} with Holm, α 0.05)", ""]
    for key in sorted(verdicts):
        tch, stu, method = key
        c, p_adj, mark = verdicts[key]
        said = {"▲ ": "**beats the plain student**", "▼ ": "**is worse than the plain student**"}.get(
            mark, "does not differ significantly from the plain student"
        )
        ci = f"[95% CI {c.ci[0]:+.3g}, {c.ci[1]:+.3g}]"
        line = f"- {method} / {stu}: {said}: Δ {c.delta:+.3g} {ci}, p {_p(p_adj)}"
        pub = _published_delta(
            t.get("published_rows") or [], method, plain.get((tch, stu), ""), stu, t["primary"]
        )
        if pub:
            line += f"; published gain {pub}"
        out.append(line + ".")
    return out


def _lines_about(recs: Iterable[Record]) -> list[str]:
    recs = list(recs)
    lines = []
    hw = sorted({hardware_line(r.env) + f", device {r.env['device']}" for r in recs if r.env})
    if hw:
        lines.append("- Hardware: " + "; ".join(hw))
    vers = sorted(
        {
            f"harness {r.env['versions']['harness']} (git {r.env.get('git') or 'unknown'}), "
            f"torch {r.env['versions']['torch']}, Python {r.env['python']}"
            for r in recs
            if r.env
        }
    )
    if vers:
        lines.append("- Software: " + "; ".join(vers))
    meters = sorted(
        {
            (
                r.energy["meter"],
                r.energy["estimate"],
                re.sub(r"[\d.]+ CPU-s × ", "CPU-s × ", r.energy.get("detail", "")),
            )
            for r in recs
            if r.energy
        }
    )
    for name, est, detail in meters:
        kind = "**estimate**, not a measurement" if est else "measured"
        qualities = {
            q
            for r in recs
            if (r.energy or {}).get("meter") == name
            for q in (r.energy.get("quality"), r.energy.get("inference_quality"))
        }
        if "filled" in qualities:
            kind += "; some windows were shorter than the counter's update and filled from power × time"
        if "unmeasured" in qualities:
            kind += "; some windows could not be measured (shown as —, never as 0)"
        lines.append(
            f"- Energy meter: `{name}`: {kind} ({detail}). Train J: the whole "
            "training of the row (teacher excluded); Infer J/1k: per 1,000 test samples."
        )
    lines += _window_lines(recs)
    cmds = sorted({r.command for r in recs if r.command})
    for c in cmds:
        lines.append(f"- Regenerate: `{c}`")
    return lines


def _window_lines(recs: list[Record]) -> list[str]:
    """How the inference energy and the peak memory were measured: the windows' length,
    passes and the machine's load at their ends; the peak-RSS method."""
    lines = []
    energies = [r.energy for r in recs if (r.energy or {}).get("inference_passes")]
    if energies:
        mins = sorted(
            {(r.config or {}).get("energy", {}).get("inference_min_seconds") for r in recs} - {None}
        )
        loads = _present(e.get("inference_load_1m") for e in energies)
        cores = sorted({r.env["cores"] for r in recs if (r.env or {}).get("cores")})
        line = (
            "- Inference energy: the test split's passes repeated until the window lasted "
            + (f"at least {', '.join(f'{m:g}' for m in mins)} s " if mins else "")
            + f"({_spread_range(_present(e['inference_passes'] for e in energies))} passes)"
        )
        if loads:
            line += (
                f"; the machine's 1-minute load average at the windows' ends "
                f"{min(loads):.1f}–{max(loads):.1f}"
                + (f" on {', '.join(map(str, cores))} cores" if cores else "")
            )
            if cores and max(loads) > max(cores):
                line += (
                    " (more runnable work than cores: CPU-time figures then include threads "
                    "spinning while they wait for each other, and vary between identical models)"
                )
        lines.append(line + ".")
    methods = sorted({(r.memory or {}).get("rss_method") for r in recs} - {None})
    if methods:
        how = {
            "kernel-peak": "the kernel's peak RSS (VmHWM), reset when the cell started",
            "sampled": f"RSS sampled every {1000 * SAMPLE_S:g} ms (a shorter spike can be missed)",
        }
        lines.append("- Peak RSS: " + "; ".join(how.get(m, m) for m in methods) + ".")
    return lines


def _significance_text(primary: str, sg: dict[str, Any]) -> str:
    if not sg.get("test"):
        return "`p seeds (t)`: paired t-test over the seeds' means (no per-example test for this task). "
    test = sig.TESTS[sg["test"]]
    return (
        f"Δ vs student: each row's (and the teacher's) {primary} minus the plain student's of the "
        "same teacher and student, on the test examples' outcomes "
        f"(`{sg['outcome']}`) averaged over the seeds both have, with a 95% CI (paired bootstrap "
        f"over test examples, scipy.stats.bootstrap, percentile, {sig.BOOTSTRAP_RESAMPLES} "
        f"resamples, seeded). `p`: {test} on those per-example differences, "
        f"Holm-corrected across the {sg.get('comparisons', 0)} comparisons of this table; "
        f"▲ significantly better, ▼ significantly worse than the plain student at α = {sig.ALPHA} "
        "after correction. `p (paired t)`: scipy.stats.ttest_rel on the same differences, "
        "uncorrected. W/T/L: test examples where the row is better/equal/worse. `p seeds (t)`: "
        "the paired t-test over seed means (secondary: with a few seeds it has little power). "
    )


def render(dataset: str, task: str, t: dict[str, Any]) -> str:
    notes = sorted({r.data_note for r in t["records"] if r.data_note})
    grids = sorted({r.grid for r in t["records"]})
    out = [f"# {dataset} — {task}", ""]
    from . import coverage as cv

    covs = t.get("coverage")  # (absent: not known to the caller; [] no plan of the grid)
    if covs is not None:
        if covs:
            out += cv.head_lines(covs)
        else:
            commands = sorted({r.command for r in t["records"] if r.command})
            out += cv.unknown_lines(len(t["failed"]), len(t["ok"]) + len(t["failed"]), commands)
    sg = t.get("significance") or {}
    if sg.get("teacher_lines"):
        out += ["Teacher check (is the teacher better than the plain student? see below for the test):"]
        out += sg["teacher_lines"] + [""]
    out.append(f"Grid: {', '.join(grids)}{cv.complete_note(covs) if covs is not None else ''}.")
    for n in notes:
        out.append(f"Data: {n}")
    out.append("")
    from .compact import render_pairs

    out += render_pairs(t.get("pairs") or [])
    if not t["rows"]:
        out += ["No finished cells yet.", ""]
    primary = METRIC_NAMES.get(t["primary"], t["primary"])
    seeds = sorted({r.seed for r in t["ok"]})
    out += [
        f"Mean ± std over seeds ({len(seeds)}: {', '.join(map(str, seeds))}). "
        + _significance_text(primary, sg),
        "",
        *sg.get("floor_lines", []),
        *([""] if sg.get("floor_lines") else []),
    ]
    if t.get("published"):
        out.append(
            "Published: the paper's figure for the same method and model, as printed there "
            "(its own data processing, budget and hardware; not re-measured here):"
        )
        out += [f"[{i}] {src}" for i, src in enumerate(t["published"], 1)] + [""]
    out += _lines_about(t["ok"])
    out += verdict_section(t)
    out += levels_section(t["ok"], t["primary"])
    out += diagnostics_section(t["ok"])
    if t["rows"]:
        out += _every_column(t)
    if t["failed"]:
        out += ["", f"Failed cells ({len(t['failed'])}; see `harness list --status failed`):"]
        for r in t["failed"]:
            out.append(f"- {r.method} / {r.student} seed {r.seed}: {r.reason}")
    if t["skipped"]:
        out += ["", f"Skipped cells ({len(t['skipped'])}):"]
        reasons = sorted({(r.method or r.distiller, r.reason) for r in t["skipped"]})
        for m, why in reasons:
            out.append(f"- {m}: {why}")
    return "\n".join(out) + "\n"


def _every_column(t: dict[str, Any]) -> list[str]:
    """The whole table, folded, with what its columns mean."""
    return [
        "",
        "## Every column",
        "",
        "<details><summary>The whole table: every metric, the per-example test's columns, "
        "sizes, energy, meter, time and seeds of every row</summary>",
        "",
        tabulate(t["rows"], headers=t["headers"], tablefmt="github", disable_numparse=True),
        "",
        "Params, Size (bytes of the saved "
        "state_dict) and FLOPs/sample (torch.utils.flop_counter) are of the deployed "
        "student; % teacher and % student are its parameters against the teacher's and the "
        "unpruned student's. Sparse KiB: a CSR-like encoding, shown only for models with "
        "zeros (unstructured pruning), whose dense size is not claimed smaller. "
        "Infer passes (window): the passes over the test split each cell's inference-energy "
        "window made (the range over seeds) and the window's mean length. Peak RSS: the "
        "process's resident memory at its highest during the cell (what the process held "
        "before it, and the teacher's training where the cell trained it, included)"
        + (
            "; CUDA peak: torch.cuda.max_memory_allocated over the cell"
            if any(h.startswith("CUDA peak") for h in t["headers"])
            else ""
        )
        + ".",
        *(["", NOISE_LEGEND] if any(NOISE_MARK in c for row in t["rows"] for c in row) else []),
        "",
        "</details>",
    ]


def write_leaderboards(
    records: Iterable[Record | dict[str, Any]],
    teachers: list[dict[str, Any]],
    out_dir: str | Path,
    published: list[dict[str, Any]] | None = None,
    plans: list[Plan] | None = None,
) -> list[Path]:
    """Write every board, its plots and the overview into `out_dir`. `records`: the
    cells' records, typed or as the store gives them (`as_records` reads them once);
    `teachers`: the teacher runs (plain dicts). `plans`: the grids' runnable cells
    (harness/coverage.py), so a board of an incomplete grid says which cells are
    missing; None or [] when not known (the boards say so)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from .compact import overview
    from .coverage import coverage, head_lines, unknown_lines
    from .plots import write_plot

    records = as_records(records)
    tables = build_tables(records, teachers, published)
    statuses = {r.id: r.status for r in records}
    for (dataset, task), t in tables.items():
        t["coverage"] = [
            coverage(p, statuses, dataset, task)
            for p in plans or []
            if any(c["dataset"] == dataset and c["task"] == task for c in p.cells)
        ]
    if plans:
        head = head_lines([coverage(p, statuses) for p in plans], with_board=True)
    else:
        failed = [r for r in records if r.status == "failed"]
        finished = [r for r in records if r.status in ("ok", "failed")]
        head = unknown_lines(len(failed), len(finished), sorted({r.command for r in records if r.command}))
    paths = []
    boards = []
    for (dataset, task), t in sorted(tables.items()):
        name = f"{slug(dataset)}__{task}.md"
        hw = sorted({hardware_line(r.env) for r in t["ok"] if r.env})
        for pt in t["pairs"]:  # the plots first: the markdown embeds them
            write_plot(pt, out_dir, "; ".join(hw))
        (out_dir / name).write_text(render(dataset, task, t), encoding="utf-8")
        paths.append(out_dir / name)
        boards.append((name, dataset, task, t))
    ok = [r for t in tables.values() for r in t["ok"]]
    grids = sorted({r.grid for r in records if r.grid})
    (out_dir / "README.md").write_text(overview(boards, _lines_about(ok), grids, head), encoding="utf-8")
    return paths
