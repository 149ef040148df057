"""Compact leaderboard tables: one per (dataset, task, teacher → student, pruner family),
as RepDistiller's and mdistiller's README tables are one per teacher → student pair.

Rows: the plain student first, then the methods by family (distiller, then its
hyper-parameters), the teacher last as a reference. Columns: the method, the task's
primary metric and one more (at most two), Δ of the primary metric vs the plain
student with its 95% CI and ▲/▼ marker (harness.leaderboard's significance), params
(% of the teacher), FLOPs/sample, training energy and inference energy per 1,000
samples. The best value of each column among the student rows is in bold. The wide
table with every column stays below them, in the board's details section.

Each table also carries the points of its plot (harness.plots) and the line of the
overview page (`overview`).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .leaderboard import (
    METRIC_NAMES,
    NOISE_LEGEND,
    NOISE_MARK,
    TEST_SHORT,
    _fmt,
    _int,
    _is_plain,
    fmt_energy,
    noisy,
)
from .record import Record
from .tasks import TASK_OBJECTS

#: the most metric columns a compact table shows (the primary first)
MAX_METRICS = 2


@dataclass
class Point:
    """One row of a table as a point of its plot: means (and std) over its seeds."""

    label: str
    y: float
    y_std: float
    params: float
    train_j: float | None
    train_j_std: float
    teacher: bool = False
    plain: bool = False


@dataclass
class Curve:
    """A pruned row's levels: % of the student's non-zero parameters against the
    validation primary metric, mean and std over seeds; `chosen`: the level most seeds
    kept (the winner)."""

    label: str
    pct: list[float]
    y: list[float]
    y_std: list[float]
    chosen: int | None


@dataclass
class PairTable:
    dataset: str
    task: str
    teacher: str
    student: str
    pruner: str  # "none" or the pruner's name
    title: str
    anchor: str
    headers: list[str]
    rows: list[list[str]]
    primary: str
    lower: bool
    points: list[Point] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)
    best: dict[str, str] | None = None  # the overview's cells for the best method
    plot: str = ""  # file stem of the plot, beside the markdown


def metric_columns(task: str, names: list[str], primary: str) -> list[str]:
    """The primary metric, then the task's next metric: at most MAX_METRICS."""
    rest = [n for n in names if n != primary]
    return [primary, *rest][:MAX_METRICS] if primary else rest[:MAX_METRICS]


def _lower_better(task: str, name: str, primary: str, lower: bool) -> bool:
    t = TASK_OBJECTS.get(task)
    if t is not None:
        for m in t.metrics:
            if m.name == name:
                return m.lower_is_better
    return lower if name == primary else True


def _mean(values: Iterable[float | None]) -> float | None:
    vs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return statistics.fmean(vs) if vs else None


def _std(values: Iterable[float | None]) -> float:
    vs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return statistics.stdev(vs) if len(vs) > 1 else 0.0


def best_rows(values: list[float | None], lower: bool) -> set[int]:
    """Indices of the best value (ties included), or none when fewer than two distinct
    values are present (a column where every row is the same shows no winner)."""
    present = [(i, v) for i, v in enumerate(values) if v is not None]
    if len({round(v, 12) for _i, v in present}) < 2:
        return set()
    best = min(v for _i, v in present) if lower else max(v for _i, v in present)
    tol = 1e-9 * max(1.0, abs(best))
    return {i for i, v in present if abs(v - best) <= tol}


def _bold(cell: str) -> str:
    return f"**{cell}**" if cell and cell not in ("—", "baseline") else cell


def _family_key(rs: list[Record]) -> tuple[int, int, str, str]:
    r = rs[0]
    return (0 if _is_plain(rs) else 1, 0 if r.distiller == "none" else 1, r.distiller, r.method)


def short_labels(methods: list[str]) -> dict[str, str]:
    """Plot labels: a method's name without the hyper-parameters its table does not
    vary; CD-TG(lambda_=0.1,T1=1.0) and CD-TG(lambda_=0.5,T1=1.0) become CD-TG(lambda_=0.1)
    and CD-TG(lambda_=0.5). Each `-`-joined part (pruner, distiller) is shortened alone."""

    def parts(label: str) -> list[tuple[str, dict[str, str]]]:
        out = []
        depth, start = 0, 0
        pieces = []
        for i, ch in enumerate(label):  # split on '-' outside parentheses (SP(..)-KD(..))
            depth += ch == "("
            depth -= ch == ")"
            if ch == "-" and depth == 0 and label[i - 1 : i] == ")":
                pieces.append(label[start:i])
                start = i + 1
        pieces.append(label[start:])
        for p in pieces:
            if "(" in p and p.endswith(")"):
                base, args = p[:-1].split("(", 1)
                kv = dict(a.split("=", 1) if "=" in a else (a, "") for a in args.split(","))
                out.append((base, kv))
            else:
                out.append((p, {}))
        return out

    parsed = {m: parts(m) for m in methods}
    varying: dict[str, set[str]] = {}
    seen: dict[str, list[dict[str, str]]] = {}
    for ps in parsed.values():
        for base, kv in ps:
            seen.setdefault(base, []).append(kv)
    for base, kvs in seen.items():
        keys = {k for kv in kvs for k in kv}
        varying[base] = {k for k in keys if len({kv.get(k) for kv in kvs}) > 1}
    out = {}
    for m, ps in parsed.items():
        shown = []
        for base, kv in ps:
            args = [f"{k}={v}" for k, v in kv.items() if k in varying[base]]
            shown.append(base + (f"({','.join(args)})" if args else ""))
        out[m] = "-".join(shown)
    if len(set(out.values())) < len(out):  # (never merge two rows into one label)
        return {m: m for m in methods}
    return out


def pair_tables(
    dataset: str,
    task: str,
    rows_by: dict[tuple[str, str, str], list[Record]],
    teacher_runs: dict[str, list[dict[str, Any]]],
    sg: dict[str, Any],
    names: list[str],
    primary: str,
    lower: bool,
    file_stem: str,
) -> list[PairTable]:
    """The compact tables of one (dataset, task) board: one per teacher → student pair
    and pruner family (the unpruned rows, then one table per pruner with the plain
    student repeated first as its baseline)."""
    if not primary:
        return []
    cols = metric_columns(task, names, primary)
    pname = METRIC_NAMES.get(primary, primary)
    cells = sg.get("cells") or {}
    verdicts = sg.get("verdicts") or {}
    headers = [
        "Method",
        *[METRIC_NAMES.get(n, n) for n in cols],
        f"Δ {pname} vs student [95% CI]",
        "Params (% teacher)",
        "FLOPs/sample",
        "Train J",
        "Infer J/1k",
    ]
    pairs: dict[tuple[str, str], dict[str, list[tuple[str, str, str]]]] = {}
    for key, rs in rows_by.items():
        fams = {r.pruner for r in rs}
        fam = "none" if _is_plain(rs) else sorted(fams)[0]
        pairs.setdefault((key[0], key[1]), {}).setdefault(fam, []).append(key)
    out = []
    for (tch, stu), fams in sorted(pairs.items()):
        plain = [k for k in fams.get("none", []) if _is_plain(rows_by[k])]
        for fam in sorted(fams, key=lambda f: (f != "none", f)):
            keys = list(fams[fam]) if fam == "none" else plain + fams[fam]
            keys.sort(key=lambda k: _family_key(rows_by[k]))
            if not keys:
                continue
            title = f"{tch} → {stu}" + (
                "" if fam == "none" else f", pruned by {_pruner_label(rows_by, keys)}"
            )
            anchor = re.sub(
                r"[^a-z0-9]+", "-", f"{tch} to {stu} {'' if fam == 'none' else fam}".lower()
            ).strip("-")
            pt = PairTable(
                dataset=dataset,
                task=task,
                teacher=tch,
                student=stu,
                pruner=fam,
                title=title,
                anchor=anchor,
                headers=headers,
                rows=[],
                primary=primary,
                lower=lower,
                plot=f"{file_stem}__{anchor}",
            )
            _fill(pt, keys, rows_by, teacher_runs.get(tch, []), cells, verdicts, cols, sg)
            out.append(pt)
    return out


def _pruner_label(rows_by: dict[tuple[str, str, str], list[Record]], keys: list) -> str:
    """The pruner's label as the methods show it: the pruned-only row's method."""
    for k in keys:
        rs = rows_by[k]
        if rs[0].pruner != "none" and rs[0].distiller == "none":
            return rs[0].method
    for k in keys:  # (no pruned-only row: the pruner's registered name)
        if rows_by[k][0].pruner != "none":
            return rows_by[k][0].pruner
    return keys[0][2]


def _fill(
    pt: PairTable,
    keys: list[tuple[str, str, str]],
    rows_by: dict[tuple[str, str, str], list[Record]],
    ts: list[dict[str, Any]],
    cells: dict[Any, list[str]],
    verdicts: dict[Any, Any],
    cols: list[str],
    sg: dict[str, Any],
) -> None:
    """Rows, bold, points, curves and the overview cells of one table."""
    raw: list[dict[str, Any]] = []  # per student row: the numbers bold is decided on
    table: list[list[str]] = []
    plain_means: dict[str, float | None] = {}
    for key in keys:
        rs = sorted(rows_by[key], key=lambda r: r.seed)
        if _is_plain(rs):
            plain_means = {n: _mean(r.metrics["test"].get(n) for r in rs) for n in cols}
    for key in keys:
        rs = sorted(rows_by[key], key=lambda r: r.seed)
        row, cells_of_row = _student_row(pt, key, rs, plain_means, cells, verdicts, cols)
        raw.append(row)
        table.append(cells_of_row)
    _bold_best(pt, cols, raw, table)
    if ts:
        _teacher_row(pt, ts, cells, cols, table)
    pt.rows = table
    pt.best = _best(pt, keys, rows_by, raw, table, verdicts, sg)


def _student_row(
    pt: PairTable,
    key: tuple[str, str, str],
    rs: list[Record],
    plain_means: dict[str, float | None],
    cells: dict[Any, list[str]],
    verdicts: dict[Any, Any],
    cols: list[str],
) -> tuple[dict[str, Any], list[str]]:
    """One student row (its seeds `rs`): the numbers bold is decided on and the row's
    text; its point and curve are added to `pt`."""
    plain = _is_plain(rs)
    size = [r.size for r in rs]
    v = verdicts.get(key)
    if plain:
        delta_cell, delta = "baseline", None
    elif v is not None:
        delta_cell, delta = cells[key][0], v[0].delta
    else:  # no per-example outcomes stored: the difference of the seeds' means
        mine = _mean(r.metrics["test"].get(pt.primary) for r in rs)
        base = plain_means.get(pt.primary)
        delta = None if mine is None or base is None else mine - base
        delta_cell = "—" if delta is None else f"{delta:+.3g}†"
    params = _mean(s["params"] for s in size) or 0.0
    pct = _mean(s.get("pct_of_teacher") for s in size)
    row = {
        "metrics": [_mean(r.metrics["test"].get(n) for r in rs) for n in cols],
        "delta": delta,
        "params": params,
        "flops": _mean(s.get("flops") for s in size),
        "train_j": _mean(r.energy.get("train_j") for r in rs),
        "infer_j": _mean(r.energy.get("inference_j_per_1k") for r in rs),
    }
    # a figure marked as noise is never the best of its column
    row["train_noisy"] = noisy(r.energy.get("train_j") for r in rs)
    row["infer_noisy"] = noisy(r.energy.get("inference_j_per_1k") for r in rs)
    text = [
        key[2],
        *[_fmt([r.metrics["test"].get(n) for r in rs]) for n in cols],
        delta_cell,
        f"{_int(params)} ({pct:.3g}%)" if pct is not None else _int(params),
        _int(row["flops"]),
        fmt_energy([r.energy.get("train_j") for r in rs]),
        fmt_energy([r.energy.get("inference_j_per_1k") for r in rs]),
    ]
    pt.points.append(
        Point(
            label=key[2],
            y=row["metrics"][0] if row["metrics"][0] is not None else math.nan,
            y_std=_std(r.metrics["test"].get(pt.primary) for r in rs),
            params=params,
            train_j=row["train_j"],
            train_j_std=_std(r.energy.get("train_j") for r in rs),
            plain=plain,
        )
    )
    curve = _curve(key[2], rs, pt.primary)
    if curve is not None:
        pt.curves.append(curve)
    return row, text


def _bold_best(pt: PairTable, cols: list[str], raw: list[dict[str, Any]], table: list[list[str]]) -> None:
    """Bold the best of each column among the student rows (the teacher is not ranked)."""
    directions: list[tuple[int, Callable[[dict[str, Any]], float | None], bool]] = []
    for j, n in enumerate(cols):
        directions.append(
            (1 + j, lambda r, j=j: r["metrics"][j], _lower_better(pt.task, n, pt.primary, pt.lower))
        )
    k = 1 + len(cols)
    directions += [
        (k, lambda r: r["delta"], pt.lower),
        (k + 1, lambda r: r["params"], True),
        (k + 2, lambda r: r["flops"], True),
        (k + 3, lambda r: None if r["train_noisy"] else r["train_j"], True),
        (k + 4, lambda r: None if r["infer_noisy"] else r["infer_j"], True),
    ]
    for col, get, low in directions:
        values = [get(r) for r in raw]
        if col == k:  # Δ: only a gain over the plain student (Δ 0) can be the best
            values = [None if v is None or (v >= 0 if low else v <= 0) else v for v in values]
            values += [0.0]  # (the plain student's own, so one gain alone is still bold)
        for i in best_rows(values, low):
            if i < len(table):
                table[i][col] = _bold(table[i][col])


def _teacher_row(
    pt: PairTable,
    ts: list[dict[str, Any]],
    cells: dict[Any, list[str]],
    cols: list[str],
    table: list[list[str]],
) -> None:
    """The teacher's row (its seeds `ts`) under the students', and its point."""
    tc = cells.get(("teacher", pt.teacher, pt.student))
    table.append(
        [
            f"Teacher ({pt.teacher})",
            *[_fmt([t["metrics"]["test"].get(n) for t in ts]) for n in cols],
            tc[0] if tc else "—",
            f"{_int(ts[0]['size']['params'])} (100%)",
            _int(ts[0]["size"].get("flops")),
            fmt_energy([t["energy"].get("train_j") for t in ts]),
            fmt_energy([(t["energy"] or {}).get("inference_j_per_1k") for t in ts]),
        ]
    )
    y = _mean(t["metrics"]["test"].get(pt.primary) for t in ts)
    if y is not None:
        pt.points.append(
            Point(
                label=f"Teacher ({pt.teacher})",
                y=y,
                y_std=_std(t["metrics"]["test"].get(pt.primary) for t in ts),
                params=float(ts[0]["size"]["params"]),
                train_j=_mean(t["energy"].get("train_j") for t in ts),
                train_j_std=_std(t["energy"].get("train_j") for t in ts),
                teacher=True,
            )
        )


def _curve(label: str, rs: list[Record], primary: str) -> Curve | None:
    with_levels = [r for r in rs if r.levels]
    if not with_levels:
        return None
    n = min(len(r.levels) for r in with_levels)
    pct, y, y_std = [], [], []
    for i in range(n):
        lv = [r.levels[i] for r in with_levels]
        base = [r.levels[0].get("nonzero_params") or r.levels[0]["params"] for r in with_levels]
        pct.append(
            100
            * statistics.fmean(
                (v.get("nonzero_params") or v["params"]) / b for v, b in zip(lv, base, strict=True)
            )
        )
        y.append(_mean(v["val"].get(primary) for v in lv) or math.nan)
        y_std.append(_std(v["val"].get(primary) for v in lv))
    winners = [next((i for i, v in enumerate(r.levels[:n]) if v.get("winner")), None) for r in with_levels]
    winners = [w for w in winners if w is not None]
    chosen = statistics.mode(winners) if winners else None
    return Curve(label=label, pct=pct, y=y, y_std=y_std, chosen=chosen)


def _best(
    pt: PairTable,
    keys: list[tuple[str, str, str]],
    rows_by: dict[tuple[str, str, str], list[Record]],
    raw: list[dict[str, Any]],
    table: list[list[str]],
    verdicts: dict[Any, Any],
    sg: dict[str, Any],
) -> dict[str, str] | None:
    """The overview's cells: the method with the best mean primary metric among the
    distilled/pruned rows, its figure, and its Δ vs the plain student."""
    cands = [
        (i, k) for i, k in enumerate(keys) if not _is_plain(rows_by[k]) and raw[i]["metrics"][0] is not None
    ]
    plain = [i for i, k in enumerate(keys) if _is_plain(rows_by[k])]
    name = METRIC_NAMES.get(pt.primary, pt.primary)
    base = f"{_strip(table[plain[0]][1])}" if plain else "—"
    if not cands:
        return {
            "method": "—",
            "figure": "—",
            "delta": "—",
            "verdict": "no method besides the plain student",
            "plain": base,
        }
    sign = 1 if pt.lower else -1
    i, key = min(cands, key=lambda c: sign * raw[c[0]]["metrics"][0])
    v = verdicts.get(key)
    test = TEST_SHORT.get(sg.get("test") or "", "test")
    if v is not None:
        c, p_adj, mark = v
        verdict = {
            "▲ ": f"significant win (p {p_adj:.2g}, {test}, Holm)",
            "▼ ": f"significant loss (p {p_adj:.2g}, {test}, Holm)",
        }.get(mark, f"not significant (p {p_adj:.2g}, {test}, Holm)" if p_adj is not None else "not tested")
    else:
        verdict = "not tested (no per-example outcomes)" if plain else "no plain student to compare with"
    return {
        "method": key[2],
        "figure": f"{name} {_strip(table[i][1])}",
        "delta": _strip(table[i][_delta_col(pt)]),
        "verdict": verdict,
        "plain": base,
    }


def _delta_col(pt: PairTable) -> int:
    return next(j for j, h in enumerate(pt.headers) if h.startswith("Δ"))


def _strip(cell: str) -> str:
    return cell.replace("**", "")


def render_pairs(pairs: list[PairTable]) -> list[str]:
    """The markdown of a board's compact tables, each with its plot embedded."""
    from tabulate import tabulate

    if not pairs:
        return []
    out: list[str] = []
    for pt in pairs:
        name = METRIC_NAMES.get(pt.primary, pt.primary)
        out += [
            f'<a id="{pt.anchor}"></a>',
            "",
            f"## {pt.title}",
            "",
            tabulate(pt.rows, headers=pt.headers, tablefmt="github", disable_numparse=True),
            "",
            f"![{pt.title}: test {name} against parameters and training energy]({pt.plot}.png)",
            "",
            f"Plot: [PNG]({pt.plot}.png), [SVG]({pt.plot}.svg).",
            "",
        ]
    dagger = any("†" in row[_delta_col(pt)] for pt in pairs for row in pt.rows)
    out += [
        "Rows: the plain student first (the baseline of Δ), then each method by family; the "
        "teacher last, for reference. **Bold**: the best mean of each column among the student "
        "rows (the teacher is not ranked; a column where every row is equal has none). "
        "Params (% teacher): the deployed student's parameters and their share of the "
        "teacher's. Plots: test metric against parameters and training energy, mean ± std "
        "over seeds; ringed in green, the Pareto front of the student rows (no other row is "
        "smaller, or cheaper to train, and better)"
        + ("; a pruned family's levels against its size" if any(p.curves for p in pairs) else "")
        + ". The whole table with every column is under *Every column* below."
        + (
            " †: difference of the seeds' means (no per-example outcomes stored, so no test)."
            if dagger
            else ""
        )
        + (
            " " + NOISE_LEGEND
            if any(NOISE_MARK in cell for pt in pairs for row in pt.rows for cell in row)
            else ""
        ),
        "",
    ]
    return out


def overview(
    boards: list[tuple[str, str, str, dict[str, Any]]],
    about: list[str],
    grids: list[str],
    head: list[str] | None = None,
) -> str:
    """The overview page of a grid's boards (their README.md): one line per compact
    table with its best method and that method's gain over the plain student, links to
    the table and its plot, then the boards' files, hardware, meter and commands.
    `boards`: (file name, dataset, task, the board's table dict) each; `head`: lines to
    open with (an incomplete grid's, harness/coverage.py)."""
    from tabulate import tabulate

    rows, files = [], []
    for name, dataset, task, t in boards:
        for pt in t.get("pairs") or []:
            b = pt.best or {}
            rows.append(
                [
                    f"[{dataset} — {task}: {pt.title}]({name}#{pt.anchor})",
                    b.get("plain", "—"),
                    b.get("method", "—"),
                    b.get("figure", "—"),
                    b.get("delta", "—"),
                    b.get("verdict", "—"),
                    f"[PNG]({pt.plot}.png), [SVG]({pt.plot}.svg)",
                ]
            )
        verdict = "".join(
            f"; teacher {tch} {'better' if better else '**NOT** better' if better is False else 'untested'}"
            f" than student {stu}"
            for tch, stu, better in (t.get("significance") or {}).get("teacher_verdicts", [])
        )
        files.append(
            f"- [{dataset} — {task}]({name}): {len(t['ok'])} ok, "
            f"{len(t['failed'])} failed, {len(t['skipped'])} skipped{verdict}"
        )
    out = [f"# Leaderboards{': ' + ', '.join(grids) if grids else ''}", "", *(head or [])]
    if rows:
        out += [
            "One line per table: the plain student's primary metric, the distilled or pruned "
            "method with the best mean of it, and that method's Δ against the plain student "
            "(95% CI; ▲/▼ a significant win/loss after Holm's correction across the board's "
            "comparisons; the test is named in each board).",
            "",
            tabulate(
                rows,
                headers=[
                    "Table",
                    "Plain student",
                    "Best method",
                    "Its figure",
                    "Δ vs plain [95% CI]",
                    "Verdict",
                    "Plot",
                ],
                tablefmt="github",
                disable_numparse=True,
            ),
            "",
        ]
    out += ["Boards:", "", *files]
    if about:
        out += ["", *about]
    return "\n".join(out) + "\n"
