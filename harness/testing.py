"""Testing a plugin: run one cell of a tiny grid around it and get the record back.

    from harness.testing import run_one_cell
    import harness_mymethod

    record = run_one_cell("distiller", "mymethod", plugin=harness_mymethod)
    assert record["status"] == "ok", record["reason"]

The grid is the built-in movie-rating task in small form (imdb-movies, which ships with
the harness; DCNN teacher and student of a few channels; two epochs), so a cell takes
seconds on a CPU. The thing under test takes the place of its kind: the distiller, the
pruner (with no distiller), the teacher and student model, the dataset (with DCNN, which
sizes itself on `info["n_features"]`), or the energy meter (`energy.meter`).
"""

from __future__ import annotations

import tempfile
import types
from pathlib import Path
from typing import Any

import yaml

#: The kinds `run_one_cell` can put in a grid (as `harness new-plugin --kind` names them).
KINDS = ("distiller", "pruner", "model", "dataset", "meter")

TEACHER = {"model": "dcnn", "channels": [4, 8], "hidden": 8}
STUDENT = {"model": "dcnn", "channels": [2, 4], "hidden": 4}


def tiny_grid(kind: str, name: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one-cell grid (as a mapping) that puts `name`, of `kind`, in its place."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {', '.join(KINDS)}")
    opts = dict(options or {})
    grid: dict[str, Any] = {
        "name": f"test-{name}",
        "datasets": [{"name": "imdb-movies", "features": "numerical"}],
        "teacher": dict(TEACHER),
        "student": dict(STUDENT),
        "distillers": ["none"],
        "pruners": ["none"],
        "seeds": [0],
        "budget": {"epochs": 2, "batch_size": 256},
        "energy": {"inference_min_seconds": 0.0},
    }
    if kind == "distiller":
        grid["distillers"] = [{"name": name, **opts}]
    elif kind == "pruner":
        grid["pruners"] = [{"name": name, **opts}]
    elif kind == "model":
        grid["teacher"] = {"model": name, **opts}
        grid["student"] = {"model": name, **opts}
    elif kind == "dataset":
        grid["datasets"] = [{"name": name, **opts}]
    else:
        grid["energy"]["meter"] = name
    return grid


def run_one_cell(
    kind: str,
    name: str,
    plugin: types.ModuleType | object | None = None,
    options: dict[str, Any] | None = None,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Run the one-cell grid of `tiny_grid` through `harness run` in this process and
    return the cell's stored record (status, reason, metrics, size, energy, ...).

    plugin: your plugin module, registered in code for the run when it is not already
    loaded through its entry point (an installed package is); None: use the installed
    plugins. out: the run's folder (default: a temporary folder, removed afterwards)."""
    from .cli import main
    from .plugins import get_registry, register_plugin, unregister_plugin
    from .store import Store

    added = None
    if plugin is not None and not get_registry().pm.is_registered(plugin):
        added = f"test-{name}"
        register_plugin(plugin, added)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(out) if out is not None else Path(tmp) / "run"
            grid_file = Path(tmp) / "grid.yaml"
            grid_file.write_text(yaml.safe_dump(tiny_grid(kind, name, options), sort_keys=False))
            code = main(["run", "--grid", str(grid_file), "--out", str(folder), "--no-progress"])
            if code not in (0, 1):  # (1: the cell failed; its record says why)
                raise AssertionError(
                    f"harness run exited {code} for the one-cell grid of {kind} {name!r} (see above)"
                )
            store = Store.open_existing(folder / "results.db")
            try:
                records = store.records()
            finally:
                store.close()
    finally:
        if added is not None:
            unregister_plugin(added)
    if len(records) != 1:
        raise AssertionError(f"expected one cell, the grid gave {len(records)}")
    return records[0]


__all__ = ["KINDS", "run_one_cell", "tiny_grid"]
