"""Leaderboards: markdown (tabulate) per dataset and task, from the results store.

Each row is a method (pruner and distiller joined as the papers do) for one teacher and
student; figures are mean ± std over seeds; `p` is a paired t-test (scipy.stats.ttest_rel,
as RecBole's significance test) of the task's primary metric against the plain student
of the same teacher/student over the seeds both have. Every file names the hardware,
the versions, the energy meter and the command that regenerates it.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from scipy import stats
from tabulate import tabulate

from .envinfo import hardware_line
from .tasks import TASK_OBJECTS

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


def levels_section(ok: list[dict[str, Any]], primary: str) -> list[str]:
    """The error/size curve of every pruned row: its levels, averaged over seeds."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        if r.get("levels"):
            by[(r["method"], r["student"])].append(r)
    if not by:
        return []
    name = METRIC_NAMES.get(primary, primary)
    out = ["", "## Pruning levels (validation error against deployed size)", ""]
    for (method, student), rs in sorted(by.items()):
        n = min(len(r["levels"]) for r in rs)
        rows = []
        for i in range(n):
            lv = [r["levels"][i] for r in rs]
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


def diagnostics_section(ok: list[dict[str, Any]]) -> list[str]:
    """What each distiller did, from the terms and stats it logged (`Step.log_terms`,
    `Step.log_stats`), averaged over seeds: the ratio of its distillation terms to the
    task term in the first and the last epoch, and for sampling distillers the mean
    sample size per instance and the mean teacher-rank percentile of the sampled items
    (0 = the teacher's top, 50 = a uniform draw). A ratio under 1% is flagged."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        if r.get("diagnostics"):
            by[(r["method"], r["student"])].append(r["diagnostics"])
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


def _metric_names(task: str, records: list[dict[str, Any]]) -> list[str]:
    if task in TASK_OBJECTS:
        names = [m.name for m in TASK_OBJECTS[task].metrics]
    else:
        names = sorted({k for r in records for k in r["metrics"]["test"]})
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


def build_tables(
    records: list[dict[str, Any]],
    teachers: list[dict[str, Any]],
    published: list[dict[str, Any]] | None = None,
) -> dict[tuple[str, str], dict[str, Any]]:
    """Group records by (dataset, task) and compute the table of each. `published`:
    the grid's figures from papers (see `harness.grid.published`), shown in a column
    beside ours where method and model match."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["dataset"], r["task"])].append(r)
    out = {}
    for (dataset, task), recs in groups.items():
        ok = [r for r in recs if r["status"] == "ok"]
        failed = [r for r in recs if r["status"] == "failed"]
        skipped = [r for r in recs if r["status"] == "skipped"]
        names = _metric_names(task, ok) if ok else []
        primary, lower = _primary(task, names) if names else ("", True)
        rows_by: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
        for r in ok:
            rows_by[(r["teacher"], r["student"], r["method"])].append(r)
        baselines = {}
        for (tch, stu, _m), rs in rows_by.items():
            if all(r["distiller"] == "none" and r["pruner"] == "none" for r in rs):
                baselines[(tch, stu)] = {r["seed"]: r["metrics"]["test"][primary] for r in rs}
        headers = [
            "Method",
            "Student",
            *[METRIC_NAMES.get(n, n) for n in names],
            f"p ({METRIC_NAMES.get(primary, primary)})",
            "Params",
            "% teacher",
            "% student",
            "Non-zero",
            "Size KiB",
            "Sparse KiB",
            "FLOPs/sample",
            "Train J",
            "Infer J/1k",
            "Meter",
            "Train s",
            "Seeds",
        ]
        pub_rows, pub_notes = _published_for(published or [], dataset, task)
        if pub_rows:
            headers.append("Published")
        table = []
        tkeys = {(t["teacher"]) for t in teachers if t["dataset"] == dataset and t["task"] == task}
        for tch in sorted(tkeys):
            ts = [
                t for t in teachers if t["dataset"] == dataset and t["task"] == task and t["teacher"] == tch
            ]
            table.append(
                [
                    f"Teacher ({tch})",
                    "—",
                    *[_fmt([t["metrics"]["test"].get(n) for t in ts]) for n in names],
                    "—",
                    _int(ts[0]["size"]["params"]),
                    "100",
                    "—",
                    _int(ts[0]["size"]["nonzero_params"]),
                    f"{ts[0]['size']['bytes'] / 1024:.1f}",
                    "—",
                    _int(ts[0]["size"]["flops"]),
                    _fmt([t["energy"]["train_j"] for t in ts], 3),
                    "—",
                    ts[0]["energy"]["meter"],
                    _fmt([t["times"]["train_s"] for t in ts], 3),
                    ", ".join(str(t["seed"]) for t in ts),
                    *([_published_cell(pub_rows, "Teacher", tch)] if pub_rows else []),
                ]
            )
        order = sorted(
            rows_by,
            key=lambda k: (
                k[0],
                k[1],
                statistics.fmean([r["metrics"]["test"][primary] for r in rows_by[k]]) * (1 if lower else -1),
            ),
        )
        for key in order:
            rs = sorted(rows_by[key], key=lambda r: r["seed"])
            tch, stu, method = key
            base = baselines.get((tch, stu))
            mine = {r["seed"]: r["metrics"]["test"][primary] for r in rs}
            is_base = all(r["distiller"] == "none" and r["pruner"] == "none" for r in rs)
            p = None if (base is None or is_base) else paired_p(mine, base)
            size = [r["size"] for r in rs]
            table.append(
                [
                    method,
                    stu,
                    *[_fmt([r["metrics"]["test"].get(n) for r in rs]) for n in names],
                    "baseline" if is_base else ("—" if p is None else f"{p:.3g}"),
                    _int(statistics.fmean(s["params"] for s in size)),
                    f"{statistics.fmean(s['pct_of_teacher'] for s in size):.1f}",
                    f"{statistics.fmean(s.get('pct_of_unpruned', 100.0) for s in size):.1f}",
                    _int(statistics.fmean(s["nonzero_params"] for s in size)),
                    f"{statistics.fmean(s['bytes'] for s in size) / 1024:.1f}",
                    _sparse_kib(size),
                    _int(statistics.fmean(s["flops"] for s in size)),
                    _fmt([r["energy"]["train_j"] for r in rs], 3),
                    _fmt([r["energy"]["inference_j_per_1k"] for r in rs], 3),
                    ", ".join(sorted({r["energy"]["meter"] for r in rs})),
                    _fmt([r["times"]["train_s"] for r in rs], 3),
                    ", ".join(str(r["seed"]) for r in rs),
                    *([_published_cell(pub_rows, method, stu)] if pub_rows else []),
                ]
            )
        out[(dataset, task)] = {
            "headers": headers,
            "rows": table,
            "records": recs,
            "ok": ok,
            "failed": failed,
            "skipped": skipped,
            "primary": primary,
            "teachers": tkeys,
            "published": pub_notes,
        }
    return out


def _lines_about(recs: Iterable[dict[str, Any]]) -> list[str]:
    recs = list(recs)
    lines = []
    hw = sorted({hardware_line(r["env"]) + f", device {r['env']['device']}" for r in recs if r.get("env")})
    if hw:
        lines.append("- Hardware: " + "; ".join(hw))
    vers = sorted(
        {
            f"harness {r['env']['versions']['harness']} (git {r['env'].get('git') or 'unknown'}), "
            f"torch {r['env']['versions']['torch']}, Python {r['env']['python']}"
            for r in recs
            if r.get("env")
        }
    )
    if vers:
        lines.append("- Software: " + "; ".join(vers))
    meters = sorted(
        {
            (
                r["energy"]["meter"],
                r["energy"]["estimate"],
                re.sub(r"[\d.]+ CPU-s × ", "CPU-s × ", r["energy"].get("detail", "")),
            )
            for r in recs
            if r.get("energy")
        }
    )
    for name, est, detail in meters:
        kind = "**estimate**, not a measurement" if est else "measured"
        lines.append(
            f"- Energy meter: `{name}`: {kind} ({detail}). Train J: the whole "
            "training of the row (teacher excluded); Infer J/1k: per 1,000 test samples."
        )
    cmds = sorted({r["command"] for r in recs if r.get("command")})
    for c in cmds:
        lines.append(f"- Regenerate: `{c}`")
    return lines


def render(dataset: str, task: str, t: dict[str, Any]) -> str:
    notes = sorted({r.get("data_note") for r in t["records"] if r.get("data_note")})
    grids = sorted({r["grid"] for r in t["records"]})
    out = [f"# {dataset} — {task}", ""]
    out.append(f"Grid: {', '.join(grids)}.")
    for n in notes:
        out.append(f"Data: {n}")
    out.append("")
    if t["rows"]:
        out.append(tabulate(t["rows"], headers=t["headers"], tablefmt="github", disable_numparse=True))
    else:
        out.append("No finished cells yet.")
    out.append("")
    primary = METRIC_NAMES.get(t["primary"], t["primary"])
    out += [
        "Mean ± std over seeds. `p`: paired t-test (scipy.stats.ttest_rel) of "
        f"{primary} against the plain student of the same teacher and student over the "
        "seeds both have (— with fewer than 2). Params, Size (bytes of the saved "
        "state_dict) and FLOPs/sample (torch.utils.flop_counter) are of the deployed "
        "student; % teacher and % student are its parameters against the teacher's and the "
        "unpruned student's. Sparse KiB: a CSR-like encoding, shown only for models with "
        "zeros (unstructured pruning), whose dense size is not claimed smaller.",
        "",
    ]
    if t.get("published"):
        out.append(
            "Published: the paper's figure for the same method and model, as printed there "
            "(its own data processing, budget and hardware; not re-measured here):"
        )
        out += [f"[{i}] {src}" for i, src in enumerate(t["published"], 1)] + [""]
    out += _lines_about(t["ok"])
    out += levels_section(t["ok"], t["primary"])
    out += diagnostics_section(t["ok"])
    if t["failed"]:
        out += ["", f"Failed cells ({len(t['failed'])}; see `harness list --status failed`):"]
        for r in t["failed"]:
            out.append(f"- {r['method']} / {r['student']} seed {r['seed']}: {r['reason']}")
    if t["skipped"]:
        out += ["", f"Skipped cells ({len(t['skipped'])}):"]
        reasons = sorted({(r.get("method") or r["distiller"], r["reason"]) for r in t["skipped"]})
        for m, why in reasons:
            out.append(f"- {m}: {why}")
    return "\n".join(out) + "\n"


def write_leaderboards(
    records: list[dict[str, Any]],
    teachers: list[dict[str, Any]],
    out_dir: str | Path,
    published: list[dict[str, Any]] | None = None,
) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = build_tables(records, teachers, published)
    paths = []
    index = ["# Leaderboards", ""]
    for (dataset, task), t in sorted(tables.items()):
        name = f"{slug(dataset)}__{task}.md"
        (out_dir / name).write_text(render(dataset, task, t), encoding="utf-8")
        paths.append(out_dir / name)
        index.append(
            f"- [{dataset} — {task}]({name}): {len(t['ok'])} ok, "
            f"{len(t['failed'])} failed, {len(t['skipped'])} skipped"
        )
    (out_dir / "README.md").write_text("\n".join(index) + "\n", encoding="utf-8")
    return paths
