"""The `harness` command line.

  harness run --grid FILE [--out DIR] [--device cpu|cuda|auto] [--dry-run] [--retry-failed] [-j N]
  harness list (--results DB | --grid FILE [--out DIR]) [--status S]
  harness leaderboard --results DB --out DIR [--grid FILE [--section S]]
  harness export --results DB --format csv|json [--out FILE]
  harness plugins [--details]
  harness datasets [download NAME [--root DIR]]
  harness new-plugin NAME --kind distiller|pruner|model|dataset|meter [--out DIR]

Exit codes: 0 success; 1 some cells failed; 2 bad input or environment (one line on
stderr, nothing written); 70 a crash of the harness itself (one line naming the log
with the traceback; --debug prints it); 130 interrupted (finished cells are kept; rerun
to continue).

Heavy modules (torch, the plugins) are imported only when a command needs them, so a
bad grid file or flag is refused at once.
"""

from __future__ import annotations

import argparse
import errno
import os
import shlex
import sqlite3
import sys
import tempfile
import textwrap
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tabulate import tabulate

from . import DISTRIBUTION, __version__
from .errors import HarnessError, PluginError, UsageError
from .gridfile import load_yaml
from .record import CELL_DIMS, LIST_COLUMNS
from .store import FINISHED, Store

if TYPE_CHECKING:
    from .grid import Grid

#: Exit code of a crash (an exception the harness did not expect): sysexits' EX_SOFTWARE,
#: distinct from 1 ("some cells failed") so a script never mistakes one for the other.
EXIT_CRASH = 70

#: OSError codes that are the environment's problem (a full disk, no permission, a
#: read-only file system), reported as bad input: one line, exit 2.
ENV_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST}


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        raise UsageError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="harness",
        description="Benchmark compression of recommender and vision models by distillation and pruning.",
    )
    p.add_argument(
        "--version", action="version", version=f"harness {__version__} (distribution {DISTRIBUTION})"
    )
    p.add_argument("--debug", action="store_true", help="on a crash, print the traceback on screen")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    r = sub.add_parser("run", parents=[common], help="run every cell of a grid not yet finished")
    r.add_argument("--grid", required=True, help="grid YAML file (see docs/grid.md)")
    r.add_argument("--section", help="one of the grid's sections (e.g. cpu), merged over the rest")
    r.add_argument("--out", help="output folder (default: runs/<grid name>)")
    r.add_argument(
        "--device",
        default="auto",
        help="cpu, cuda, cuda:N or auto (default: auto = CUDA when present, else CPU)",
    )
    r.add_argument("--dry-run", action="store_true", help="print the plan; run and write nothing")
    r.add_argument("--retry-failed", action="store_true", help="also rerun cells that failed")
    r.add_argument("-j", "--jobs", type=int, default=1, help="worker processes (default 1)")
    r.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the cells on a Dask cluster: its scheduler's address (tcp://host:8786) or "
        "scheduler file; its workers must share --out (docs/scale-out.md)",
    )
    r.add_argument("--no-progress", action="store_true", help="no progress bars")

    ls = sub.add_parser("list", parents=[common], help="show cells and their status")
    ls.add_argument("--results", help="results.db of a run")
    ls.add_argument("--grid", help="a grid file; its default results.db is used")
    ls.add_argument("--section", help="with --grid: the section that was run")
    ls.add_argument("--out", help="with --grid: the run's output folder")
    ls.add_argument("--status", choices=["ok", "failed", "skipped"])

    lb = sub.add_parser("leaderboard", parents=[common], help="write leaderboard markdown from a results.db")
    lb.add_argument("--results", required=True, help="results.db of a run")
    lb.add_argument("--out", required=True, help="folder for the markdown")
    lb.add_argument(
        "--grid",
        help="the grid file: its `published` figures are shown beside ours, and its cells are "
        "checked against the results (default: the cells `harness run` recorded in the database)",
    )
    lb.add_argument("--section", help="with --grid: the section that was run")

    ex = sub.add_parser(
        "export", parents=[common], help="one row per cell as CSV or JSON, for analysis elsewhere"
    )
    ex.add_argument("--results", required=True, help="results.db of a run (opened read-only)")
    ex.add_argument("--format", required=True, choices=["csv", "json"])
    ex.add_argument("--out", help="file to write (default: print on stdout)")

    ds = sub.add_parser(
        "datasets", parents=[common], help="list datasets, whether their data is present and where"
    )
    ds_sub = ds.add_subparsers(dest="ds_cmd", parser_class=Parser)
    dl = ds_sub.add_parser("download", help="fetch a dataset's data (needs internet)")
    dl.add_argument("name", help="a registered dataset, e.g. cifar100")
    dl.add_argument("--root", help="folder to put it in (the dataset's root option)")

    pl = sub.add_parser("plugins", parents=[common], help="list plugins and what they register")
    pl.add_argument(
        "--details",
        action="store_true",
        help="also every registered thing, with its tasks, needs and options",
    )

    npl = sub.add_parser(
        "new-plugin", parents=[common], help="write a plugin package to start from (see docs/plugins.md)"
    )
    npl.add_argument("name", help="the plugin's name as a grid uses it, e.g. my-hint")
    npl.add_argument("--kind", required=True, choices=["distiller", "pruner", "model", "dataset", "meter"])
    npl.add_argument("--out", help="folder to write (default: ./harness-NAME); must be empty or absent")
    return p


# --------------------------------------------------------------------------- run


def _out_dir(grid_name: str, out: str | None) -> Path:
    return Path(out) if out else Path("runs") / grid_name


#: The plan's columns: what each cell computes, as `run` names it (the method label with
#: its hyper-parameters and overrides), then the budget and training settings.
_PLAN_DIMS = CELL_DIMS


def _plan(grid: Grid, statuses: dict[str, str], retry: bool) -> tuple[list[str], list[list[str]], list[str]]:
    """The dry-run table: headers, rows and the settings every cell shares.

    A column per dimension that varies across the grid's cells (dataset, models, the
    method label exactly as `run` prints it, seed, and any budget or training value an
    override changes); the dimensions that do not vary are given once, under the table."""
    from .runner import method_label

    values: list[dict[str, str]] = []
    actions = []
    for c in grid.cells:
        d = c.describe()
        d["method"] = method_label(c.config)
        v = {k: d[k] for k in _PLAN_DIMS}
        for section in ("budget", "train"):
            for key, value in c.config[section].items():
                v[key] = str(value)
        values.append(v)
        st = statuses.get(c.id)
        if c.skip:
            actions.append(f"skip: {c.skip}")
        elif st == "ok":
            actions.append("done")
        elif st == "failed":
            actions.append("rerun (failed)" if retry else "failed earlier (--retry-failed)")
        else:
            actions.append("run")
    keys = list(dict.fromkeys(k for v in values for k in v))
    varying = [k for k in keys if len({v.get(k) for v in values}) > 1]
    same = [f"{k} {values[0][k]}" for k in keys if k not in varying and values]
    rows = [
        [c.id[:8], *(v.get(k, "") for k in varying), a]
        for c, v, a in zip(grid.cells, values, actions, strict=True)
    ]
    return ["cell", *varying, "action"], rows, same


def _summary_line(record: dict[str, Any]) -> str:
    if record["status"] != "ok":
        return record.get("reason") or ""
    test = record["metrics"]["test"]
    metric = "  ".join(f"{k} {v:.4g}" for k, v in list(test.items())[:2])
    e = record["energy"]
    est = " est." if e["estimate"] else (" filled" if e.get("quality") == "filled" else "")
    joules = "unmeasured" if e["train_j"] is None else f"{e['train_j']:.3g} J{est}"
    return (
        f"{metric}  params {record['size']['params']:,}  "
        f"train {record['times']['train_s']:.1f}s {joules} ({e['meter']})"
    )


#: Where a crash's traceback goes: the run's output folder once it exists, else a temp file.
_CRASH_DIR: Path | None = None


def _check_writable(out: Path, flag: str = "--out") -> None:
    """UsageError unless `out` is (or can be created as) a folder this process may write."""
    if out.exists():
        if not out.is_dir():
            raise UsageError(f"{flag} {out}: exists and is not a folder")
        probe = out
    else:
        probe = out.absolute().parent
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            raise UsageError(f"{flag} {out}: {probe} is a file, not a folder")
    try:
        read_only = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        read_only = False
    if read_only:
        raise UsageError(f"{flag} {out}: {probe} is on a read-only file system")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {out}: no permission to write in {probe}")


def _mkdir(out: Path, flag: str = "--out") -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{flag} {out}: cannot create the folder: {e.strerror or e}") from None


def cmd_run(args: argparse.Namespace) -> int:
    global _CRASH_DIR
    if args.jobs < 1:
        raise UsageError(f"-j {args.jobs}: need at least 1 worker")
    if args.scheduler and args.jobs != 1:
        raise UsageError("-j with --scheduler: the cluster's workers set how many cells run at once")
    doc = load_yaml(args.grid)  # (refuses a bad file before torch and the plugins load)
    from .grid import load_grid
    from .plugins import get_registry
    from .runner import resolve_device

    registry = get_registry()
    grid = load_grid(args.grid, registry, args.section, doc=doc)
    device = resolve_device(args.device, here=not args.scheduler)
    out = _out_dir(grid.name, args.out)
    _check_writable(out)
    db = out / "results.db"
    statuses: dict[str, str] = {}
    if db.exists() and not (db.is_file() and db.stat().st_size == 0):  # (0 bytes: a run creating it now)
        store = Store.open_existing(db)
        statuses = store.status_of(c.id for c in grid.cells)
        store.close()
    if args.dry_run:
        return _print_dry_run(grid, statuses, args.retry_failed, device, out)

    client = _connect(args.scheduler) if args.scheduler else None  # (before anything is written)
    _mkdir(out)
    _CRASH_DIR = out
    store = Store(db)
    from .coverage import plan_of, run_command

    command = run_command(args.grid, args.section, args.out)
    plan = plan_of(grid, command)
    store.put_plan(plan.to_json())  # (a board can then tell which cells are missing)
    done = [c for c in grid.runnable if statuses.get(c.id) == "ok"]
    failed_before = [c for c in grid.runnable if statuses.get(c.id) == "failed"]
    todo = [
        c
        for c in grid.runnable
        if statuses.get(c.id) not in FINISHED or (args.retry_failed and statuses.get(c.id) == "failed")
    ]
    _store_skipped(store, grid, command)
    msg = (
        f"grid {grid.name}: {len(grid.cells)} cells; {len(todo)} to run; "
        f"{len(done)} already finished, skipped"
    )
    if failed_before and not args.retry_failed:
        msg += f"; {len(failed_before)} failed earlier (rerun them with --retry-failed)"
    if grid.skipped:
        msg += f"; {len(grid.skipped)} skipped (incompatible or data missing)"
    print(msg + f"; device {device}; output {out}", flush=True)
    reasons: dict[str, int] = {}
    for c in grid.skipped:
        reasons[c.skip or ""] = reasons.get(c.skip or "", 0) + 1
    for why, n in reasons.items():
        print(f"  skipped {n} cell{'s' * (n != 1)}: {why}", flush=True)
    run = _run_cells(args, store, grid, todo, command, device, out, client)
    return _finish_run(store, grid, plan, run, len(done), out)


def _print_dry_run(grid: Grid, statuses: dict[str, str], retry_failed: bool, device: str, out: Path) -> int:
    """`harness run --dry-run`: the plan, and nothing written."""
    headers, rows, same = _plan(grid, statuses, retry_failed)
    print(tabulate(rows, headers=headers))
    if same:
        print("\n" + textwrap.fill("in every cell: " + "; ".join(same), 100, break_on_hyphens=False))
    n_run = sum(1 for r in rows if r[-1].startswith(("run", "rerun")))
    print(
        f"\n{len(rows)} cells: {n_run} to run, "
        f"{len(grid.skipped)} skipped (incompatible or data missing); "
        f"device {device}; output {out} (dry run: nothing written)"
    )
    return 0


def _store_skipped(store: Store, grid: Grid, command: str) -> None:
    """A record for each cell the grid skips (incompatible parts or data missing)."""
    from .runner import base_record, method_label

    for c in grid.skipped:
        rec = base_record(c.config, c.id, grid.name)
        rec.update(
            status="skipped",
            reason=c.skip,
            method=method_label(c.config),
            command=command,
            started=time.time(),
            finished=time.time(),
        )
        store.put_skipped(rec)


@dataclass
class _Run:
    """What running a grid's cells left: counts by status, hook errors, cells claimed
    by another process, and whether the user interrupted."""

    counts: dict[str, int]
    hook_errors: list[str]
    elsewhere: list[str]
    interrupted: bool


def _run_cells(
    args: argparse.Namespace,
    store: Store,
    grid: Grid,
    todo: list[Any],
    command: str,
    device: str,
    out: Path,
    client: Any,
) -> _Run:
    """Run `todo` here (args.jobs workers) or on the cluster `client`, storing each
    record as it comes and printing a line per cell."""
    from .executor import execute
    from .plugins import call_lifecycle
    from .runner import RunOptions

    run = _Run({"ok": 0, "failed": 0}, [], [], False)
    counts = run.counts
    width = len(str(len(todo)))
    started = time.time()

    def claim(cell: Any) -> bool:
        why = store.claim(cell.id, started)
        if why is not None:
            d = cell.describe()
            run.elsewhere.append(why)
            print(f"  passed over {d['student']} {d['distiller']} seed {d['seed']}: {why}", flush=True)
        return why is None

    def on_record(record: dict[str, Any], _i: int) -> None:
        record["command"] = command
        store.put(record)  # (and the claim on it goes, in the same transaction)
        counts[record["status"]] = counts.get(record["status"], 0) + 1
        n = counts["ok"] + counts["failed"]
        d = f"{record['dataset']} {record['student']} {record['method']} seed {record['seed']}"
        print(f"[{n:>{width}}/{len(todo)}] {record['status']:<6} {d}: {_summary_line(record)}", flush=True)
        run.hook_errors.extend(call_lifecycle("harness_cell_finished", record=record, grid_name=grid.name))

    opts = RunOptions(
        device=device,
        # (absolute for a cluster's workers, which may start in other folders)
        teacher_dir=str((out / "teachers").absolute() if client else out / "teachers"),
        progress=not args.no_progress and sys.stderr.isatty() and client is None,
    )
    try:
        if client is None:
            execute(todo, grid.name, opts, args.jobs, on_record, claim)
        else:
            _execute_on(client, todo, grid.name, opts, on_record, claim)
    except KeyboardInterrupt:
        run.interrupted = True
    finally:
        store.release()  # (cells not run are free for the next run at once)
        if client is not None:
            client.close()
    return run


def _finish_run(store: Store, grid: Grid, plan: Any, run: _Run, n_done: int, out: Path) -> int:
    """Write the leaderboards, call the grid-finished hook, print the summary; the
    exit status (130 interrupted, 1 if a cell failed)."""
    from .leaderboard import write_leaderboards
    from .plugins import call_lifecycle

    counts = run.counts
    paths = write_leaderboards(
        store.records(), store.teachers(), out / "leaderboards", grid.published, [plan]
    )
    store.close()
    summary = {
        "grid": grid.name,
        "ran": counts["ok"] + counts["failed"],
        "ok": counts["ok"],
        "failed": counts["failed"],
        "skipped": len(grid.skipped),
        "already_done": n_done,
        "elsewhere": len(run.elsewhere),
    }
    run.hook_errors.extend(call_lifecycle("harness_grid_finished", summary=summary, out_dir=str(out)))
    for e in run.hook_errors:
        print(f"harness: warning: {e}", file=sys.stderr)
    print(
        f"ran {summary['ran']} cells: {counts['ok']} ok, {counts['failed']} failed; "
        f"{n_done} already finished; {len(grid.skipped)} skipped"
        + (f"; {len(run.elsewhere)} run by another process on this folder" if run.elsewhere else "")
        + f". Leaderboards: {out / 'leaderboards'} ({len(paths)} files)"
    )
    if run.interrupted:
        print("interrupted: finished cells are stored; run the same command to continue", file=sys.stderr)
        return 130
    return 1 if counts["failed"] else 0


def _connect(address: str) -> Any:
    """The Dask client of --scheduler; prints the cluster's workers and dashboard."""
    from .scaleout import connect, dashboard_link

    client = connect(address)
    workers = client.scheduler_info().get("workers", {})
    threads = sum(w.get("nthreads", 0) for w in workers.values())
    line = f"dask scheduler {client.scheduler.address}: {len(workers)} workers, {threads} threads"
    link = dashboard_link(client)
    print(line + (f"; dashboard {link}" if link else ""), flush=True)
    return client


def _execute_on(client: Any, todo: list, grid: str, opts: Any, on_record: Any, claim: Any) -> None:
    from .scaleout import execute_on, wait_note

    note = wait_note(opts, client)
    if note:
        print(f"harness: warning: {note}", file=sys.stderr, flush=True)
    lost = execute_on(client, todo, grid, opts, on_record, claim)
    if lost:
        print(
            f"harness: warning: {lost} cells were lost with the scheduler; run the same command to run them",
            file=sys.stderr,
        )


# --------------------------------------------------------------------------- others


def _open_results(args: argparse.Namespace) -> Store:
    if args.results:
        return Store.open_existing(args.results)
    if args.grid:
        from .grid import load_grid
        from .plugins import get_registry

        doc = load_yaml(args.grid)
        grid = load_grid(args.grid, get_registry(), args.section, doc=doc)
        return Store.open_existing(_out_dir(grid.name, args.out) / "results.db")
    raise UsageError("harness list: give --results DB or --grid FILE")


def cmd_list(args: argparse.Namespace) -> int:
    store = _open_results(args)
    if store.count() == 0:
        store.close()
        print(f"no results in {store.path}")
        return 0
    shown = {"id": lambda v: v[:8], "worker": lambda v: v or "", "reason": lambda v: (v or "")[:80]}
    rows = [
        [shown.get(c, lambda v: v)(r[c]) for c in LIST_COLUMNS]
        for r in store.rows()
        if args.status is None or r["status"] == args.status
    ]
    store.close()
    print(
        tabulate(
            rows,
            headers=["cell" if c == "id" else c for c in LIST_COLUMNS],
        )
    )
    by = {}
    for r in rows:
        by[r[1]] = by.get(r[1], 0) + 1
    print("\n" + ", ".join(f"{v} {k}" for k, v in sorted(by.items())) if by else "no cells")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from .coverage import Plan, plan_of, run_command

    if args.section and not args.grid:
        raise UsageError("harness leaderboard: --section needs --grid")
    published = None
    grid = None
    if args.grid:
        from .grid import load_grid
        from .plugins import get_registry

        doc = load_yaml(args.grid)
        grid = load_grid(args.grid, get_registry(), args.section, doc=doc)
        published = grid.published
    store = Store.open_existing(args.results)
    if store.count() == 0:
        store.close()
        print(f"no results in {store.path}: nothing written")
        return 0
    out = Path(args.out)
    _check_writable(out)
    from .leaderboard import write_leaderboards

    records, teachers = store.records(), store.teachers()
    if grid is not None:  # the grid file as it is now; `run` writes DIR/results.db
        folder = Path(args.results).parent
        given = None if folder == _out_dir(grid.name, None) else str(folder)
        plans = [plan_of(grid, run_command(args.grid, args.section, given), f"the grid file {args.grid}")]
    else:
        plans = [Plan.from_json(p) for p in store.plans()]
    store.close()
    _mkdir(out)
    for p in write_leaderboards(records, teachers, out, published, plans):
        print(p)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Every cell of a store (read-only) as one table: see harness/export.py."""
    store = Store.open_existing(args.results)
    records = store.records()
    store.close()
    out = Path(args.out) if args.out else None
    if out is not None:
        if out.is_dir():
            raise UsageError(f"--out {out}: is a folder, not a file")
        _check_writable(out.parent if str(out.parent) else Path("."))
    from .export import cells_frame, to_text

    text = to_text(cells_frame(records), args.format)
    if out is None:
        sys.stdout.write(text)
        return 0
    _mkdir(out.parent)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")  # (a reader never sees half a file)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"{out}: {len(records)} cells", file=sys.stderr)
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from .plugins import get_registry

    reg = get_registry()
    rows = []
    for info in reg.infos.values():
        what = "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in sorted(info.registers.items()))
        rows.append([info.name, info.source, info.module, what or "(nothing)"])
    print(tabulate(rows, headers=["plugin", "source", "module", "registers"]))
    if args.details:
        for kind in ("dataset", "model", "distiller", "pruner", "energy_meter"):
            print(f"\n{kind}s:")
            for name in reg.names(kind):
                e = reg.entries[kind][name]
                cls = e.cls
                facts = [f"plugin {e.plugin}"]
                if kind != "energy_meter":
                    facts.append("tasks " + ",".join(sorted(cls.tasks)))
                if kind == "distiller":
                    facts.append("needs " + (",".join(sorted(cls.needs)) or "nothing"))
                if kind == "pruner":
                    facts.append(f"structure {cls.structure}")
                if kind == "model":
                    facts.append(f"features {'yes' if cls.exposes_features else 'no'}")
                    facts.append("prunable " + (",".join(sorted(cls.prunable)) or "no"))
                    if cls.presets:
                        facts.append("presets " + ",".join(cls.presets))
                if kind == "energy_meter":
                    facts.append(f"priority {cls.priority}")
                print(f"  {name}: {cls.description} [{'; '.join(facts)}]")
                for pname, p in getattr(cls, "params", {}).items():
                    print(f"      {pname} = {p.default!r}  {p.help}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from .plugins import get_registry

    reg = get_registry()
    if args.ds_cmd == "download":
        cls = reg.get("dataset", args.name, "harness datasets download")
        given = {}
        if args.root:
            if "root" not in cls.params:
                raise UsageError(f"harness datasets download: dataset {args.name!r} takes no --root")
            given["root"] = args.root
        dataset = cls(**cls.resolve_params(given, f"dataset {args.name}"))
        print(f"{args.name}: {dataset.download()}")
        return 0
    rows = []
    for name in reg.names("dataset"):
        entry = reg.entries["dataset"][name]
        tasks = ",".join(sorted(entry.cls.tasks))
        try:
            dataset = entry.cls(**entry.cls.resolve_params({}, f"dataset {name}"))
        except UsageError as e:  # a dataset that needs an option to be anywhere (a path)
            rows.append([name, entry.plugin, tasks, "—", str(e).split(": ", 1)[-1]])
            continue
        why = dataset.missing()
        rows.append([name, entry.plugin, tasks, "yes" if why is None else "no", dataset.location()])
    print(tabulate(rows, headers=["dataset", "plugin", "tasks", "present", "where"]))
    absent = [r[0] for r in rows if r[3] == "no"]
    if absent:
        print("\nfetch with: " + "; ".join(f"harness datasets download {n}" for n in absent))
    return 0


def cmd_new_plugin(args: argparse.Namespace) -> int:
    from .scaffold import plugin_files, write_plugin

    plugin_files(args.name, args.kind)  # (refuses a bad name before anything is written)
    folder = Path(args.out) if args.out else Path(f"harness-{args.name}")
    _check_writable(folder)
    folder = write_plugin(args.name, args.kind, folder)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        print(path)
    print(
        f"\nnext: pip install -e {shlex.quote(str(folder))}   # then `harness plugins` lists {args.name}\n"
        f"      python -m pytest {shlex.quote(str(folder / 'tests'))}"
    )
    return 0


COMMANDS = {
    "new-plugin": cmd_new_plugin,
    "run": cmd_run,
    "list": cmd_list,
    "leaderboard": cmd_leaderboard,
    "export": cmd_export,
    "plugins": cmd_plugins,
    "datasets": cmd_datasets,
}


def _crash(e: BaseException, debug: bool) -> int:
    """One line for an unexpected exception, the traceback in a log file (or on screen
    with --debug); exit EXIT_CRASH."""
    tb = "".join(traceback.format_exception(e))
    where = f"{type(e).__name__}: {e}".splitlines()[0][:300] if str(e) else type(e).__name__
    if debug:
        sys.stderr.write(tb)
        print(f"harness: crashed ({where}); the traceback is above", file=sys.stderr)
        return EXIT_CRASH
    log = None
    for folder in (_CRASH_DIR, Path(tempfile.gettempdir())):
        if folder is None:
            continue
        try:
            log = folder / f"harness-crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
            log.write_text(f"harness {__version__}: {' '.join(map(shlex.quote, sys.argv))}\n\n{tb}")
            break
        except OSError:
            log = None
    see = f"traceback in {log}" if log else "rerun with --debug for the traceback"
    print(f"harness: crashed ({where}); {see}; please report it", file=sys.stderr)
    return EXIT_CRASH


def _environment_error(e: OSError | sqlite3.OperationalError) -> str | None:
    """The one line for an environment problem (full disk, no permission), else None."""
    if isinstance(e, OSError):
        if e.errno in ENV_ERRNOS:
            return f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}"
        return None
    text = str(e)
    if any(w in text for w in ("readonly", "disk", "locked", "unable to open", "full")):
        return f"the results database: {text}"
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("HARNESS_DEBUG") == "1"
    try:
        args = _parser().parse_args(argv)
        return COMMANDS[args.cmd](args)
    except (UsageError, PluginError) as e:
        print(f"harness: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    except HarnessError as e:
        print(f"harness: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (OSError, sqlite3.OperationalError) as e:
        line = _environment_error(e)
        if line is None:
            return _crash(e, debug)
        print(f"harness: error: {line}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: one line, never a traceback on screen unless asked
        return _crash(e, debug)
    finally:
        global _CRASH_DIR
        _CRASH_DIR = None


if __name__ == "__main__":
    sys.exit(main())
