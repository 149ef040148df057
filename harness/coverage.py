"""Is a board's grid complete? The grid's cells against the store's, for the lines a
board opens with when cells are missing (N of M, which ones, the command that runs them).

"The grid's cells" are the cells `harness run` would run: every cell of the grid after
expansion, less those skipped as incompatible or with data missing (those are listed
at the end of a board, with their reasons, and never count as missing). A cell counts
as done when the store holds it with status ok; a failed cell is missing (and needs
`--retry-failed`); a cell with no record was not run (an interrupted grid, a grid
still running, a grid grown since it ran).

Where the cells come from, first found:
1. `harness leaderboard --grid FILE [--section S]`: that grid file, expanded now;
2. the plan `harness run` records in the store when it starts (`Store.put_plan`): the
   grid's cells as that run expanded them, and its command;
3. neither (a store written before plans were recorded, and no --grid): the board
   cannot tell how many cells the grid has, says so, and counts only the failed cells
   it holds as missing.
"""

from __future__ import annotations

import shlex
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .record import CELL_DIMS

if TYPE_CHECKING:
    from .grid import Grid

#: the most lines a board gives to listing missing cells (then "and N more")
MAX_MISSING_LINES = 12


@dataclass
class Plan:
    """The runnable cells of one grid, and the command that runs them."""

    grid: str
    command: str
    cells: list[dict[str, Any]]  # {id, dataset, task, teacher, student, method, seed}
    skipped: int = 0  # cells dropped as incompatible or with data missing
    source: str = "the plan `harness run` recorded in the results database"

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "source"}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Plan:
        return cls(grid=d["grid"], command=d["command"], cells=list(d["cells"]), skipped=d.get("skipped", 0))


def run_command(grid_path: str, section: str | None, out: str | None) -> str:
    """The `harness run` command line of a grid (as `harness run` records it)."""
    return (
        "harness run --grid "
        + shlex.quote(str(grid_path))
        + (f" --section {shlex.quote(section)}" if section else "")
        + (f" --out {shlex.quote(str(out))}" if out else "")
    )


def plan_of(grid: Grid, command: str, source: str | None = None) -> Plan:
    """The plan of a loaded grid: its runnable cells, labelled as boards label them."""
    from .runner import method_label

    cells = []
    for c in grid.runnable:
        d = {**c.describe(), "method": method_label(c.spec), "seed": c.seed}
        cells.append({"id": c.id, **{k: d[k] for k in CELL_DIMS}})
    plan = Plan(grid=grid.name, command=command, cells=cells, skipped=len(grid.skipped))
    if source:
        plan.source = source
    return plan


@dataclass
class Coverage:
    """A plan's cells against the store's records, for one board or the whole grid."""

    plan: Plan
    total: int
    done: int
    failed: list[dict[str, Any]] = field(default_factory=list)
    not_run: list[dict[str, Any]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.done == self.total


def coverage(
    plan: Plan, statuses: dict[str, str], dataset: str | None = None, task: str | None = None
) -> Coverage:
    """How many of the plan's cells (of one board: `dataset` and `task`) the store holds
    ok, and which are missing: failed, or with no record."""
    cells = [
        c
        for c in plan.cells
        if (dataset is None or c["dataset"] == dataset) and (task is None or c["task"] == task)
    ]
    cov = Coverage(plan=plan, total=len(cells), done=0)
    for c in cells:
        st = statuses.get(c["id"])
        if st == "ok":
            cov.done += 1
        elif st == "failed":
            cov.failed.append(c)
        else:
            cov.not_run.append(c)
    return cov


def _seeds(seeds: list[int]) -> str:
    """'seed 2', 'seeds 0–4', 'seeds 0, 2, 5–7'."""
    seeds = sorted(set(seeds))
    runs: list[list[int]] = []
    for s in seeds:
        if runs and s == runs[-1][-1] + 1:
            runs[-1].append(s)
        else:
            runs.append([s])
    text = ", ".join(f"{r[0]}–{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs)
    return ("seed " if len(seeds) == 1 else "seeds ") + text


def missing_lines(cov: Coverage, with_board: bool = False) -> list[str]:
    """The missing cells, grouped: one line per (board, teacher → student, state, seeds)
    with the methods that miss those seeds, at most MAX_MISSING_LINES."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    by_method: dict[tuple, list[int]] = defaultdict(list)
    for state, cells in (("failed", cov.failed), ("not run", cov.not_run)):
        for c in cells:
            by_method[(c["dataset"], c["task"], c["teacher"], c["student"], state, c["method"])].append(
                c["seed"]
            )
    for (dataset, task, teacher, student, state, method), seeds in by_method.items():
        groups[(dataset, task, teacher, student, state, tuple(sorted(seeds)))].append(method)
    pairs = {(c["teacher"], c["student"]) for c in cov.plan.cells}
    show_teacher = len(pairs) > len({s for _t, s in pairs})  # (a student with several teachers)
    lines = []
    for (dataset, task, teacher, student, state, seeds), methods in sorted(groups.items()):
        where = f"{dataset} — {task}: " if with_board else ""
        pair = f"{teacher} → {student}" if show_teacher else student
        lines.append(f"- {where}{pair}, {_seeds(list(seeds))}: {', '.join(methods)} ({state})")
    if len(lines) > MAX_MISSING_LINES:
        rest = len(lines) - MAX_MISSING_LINES + 1
        lines = lines[: MAX_MISSING_LINES - 1] + [
            f"- … and {rest} more groups (`harness list` shows every cell)"
        ]
    return lines


def head_lines(covs: list[Coverage], with_board: bool = False) -> list[str]:
    """The lines a board (or the overview, `with_board`) opens with when its grid is
    incomplete: N of M cells, the missing ones grouped, the command that runs them.
    Nothing when every plan is complete."""
    lines: list[str] = []
    for cov in covs:
        if cov.complete:
            continue
        parts = [f"{len(cov.failed)} failed"] if cov.failed else []
        parts += [f"{len(cov.not_run)} not run"] if cov.not_run else []
        lines += [
            f"**Incomplete: {cov.done} of {cov.total} cells** of grid {cov.plan.grid} "
            f"{'are in these boards' if with_board else 'are in this board'} "
            f"({', '.join(parts)}; cells of the grid from {cov.plan.source}). Missing:",
            "",
            *missing_lines(cov, with_board),
            "",
            "Complete them (finished cells are kept): `"
            + cov.plan.command
            + (" --retry-failed" if cov.failed else "")
            + "`",
            "",
        ]
    return lines


def unknown_lines(failed: int, stored: int, commands: list[str]) -> list[str]:
    """Where no plan is known: the failed cells the store holds are missing; how many
    the grid has, the board cannot tell."""
    if not failed:
        return []
    retry = [c + " --retry-failed" for c in commands]
    return [
        f"**Incomplete: {failed} of the {stored} cells stored for this board failed** (how many "
        "cells the grid has is not recorded in this database, written before runs recorded "
        "their plan: pass `--grid FILE [--section S]` to `harness leaderboard` to check)."
        + (" Rerun them: `" + "`; `".join(retry) + "`" if retry else ""),
        "",
    ]


def complete_note(covs: list[Coverage]) -> str:
    """' (complete: 45 of 45 cells)' for the board's Grid line, '' otherwise; or a note
    that completeness is unknown when there is no plan."""
    if not covs:
        return (
            " (whether the grid is complete is not known: no record of its cells; see docs/leaderboards.md)"
        )
    if all(c.complete for c in covs):
        return f" (complete: {sum(c.done for c in covs)} of {sum(c.total for c in covs)} cells)"
    return ""
