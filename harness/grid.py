"""Grids: a grid file loaded into cells. The schema is documented in docs/grid.md.

Loading has three stages, each its own module: parse (harness.gridfile: YAML to plain
data with the line of every key), layer (harness.gridlayers: the override layers, in
their stated order) and validate (harness.gridcheck: against the plugin registry).
`load_grid` runs them in turn and expands the grid into `Cell`s.

Every error is a `UsageError` whose message starts with `FILE:LINE: path:` so a user
finds the place at once; nothing is run or written before the whole grid validates.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError
from .gridcheck import (  # noqa: F401  (re-exported: the grid's schema)
    BOUNDS,
    BUDGET,
    ENERGY,
    MAX_CELLS,
    SAFE_NAME,
    TOP_KEYS,
    TRAIN,
    Regime,
    check_datasets,
    check_hparams,
    check_hparams_used,
    check_methods,
    check_models,
    check_overrides,
    check_pairs,
    check_regime,
    check_seeds,
    check_top,
    incompatibility,
    published,
)
from .gridfile import Located, load_yaml
from .gridlayers import MERGED_IN_SECTIONS, apply_section, layer_cell  # noqa: F401
from .plugins import Registry
from .spec import NOT_HASHED as NOT_HASHED  # (re-exported)
from .spec import CellSpec, config_id
from .spec import canonical as canonical  # (re-exported: the text ids hash)

#: (NOT_HASHED, the config sections left out of a cell's id, is harness.spec's)


# --------------------------------------------------------------------------- cells


@dataclass
class Cell:
    """One combination of the grid: its config as the grid built it, and the frozen,
    typed `spec` built from it once, here (harness/spec.py); `id` is the spec's id, which
    hashes `config` without NOT_HASHED sections."""

    config: dict[str, Any]
    skip: str | None = None
    spec: CellSpec = field(init=False, repr=False)
    id: str = field(init=False)

    def __post_init__(self) -> None:
        self.spec = CellSpec.from_config(self.config)
        self.id = self.spec.id

    @property
    def seed(self) -> int:
        return self.spec.seed

    def describe(self) -> dict[str, str]:
        c = self.config
        return {
            "dataset": dataset_label(c["dataset"]),
            "task": c["task"],
            "teacher": model_label(c["teacher"]),
            "student": model_label(c["student"]),
            "distiller": c["distiller"]["name"],
            "pruner": c["pruner"]["name"],
            "seed": str(c["seed"]),
        }


def cell_id(config: dict[str, Any]) -> str:
    """Hash of what the cell computes (harness.spec.config_id): NOT_HASHED sections and
    the presentational "shown" lists are left out, so spelling out a default gives the
    same id."""
    return config_id(config)


def dataset_label(ds: dict[str, Any]) -> str:
    shown = {k: ds["params"][k] for k in ds.get("shown", [])}
    if not shown:
        return ds["name"]
    return ds["name"] + "(" + ", ".join(f"{k}={_short(v)}" for k, v in shown.items()) + ")"


def model_label(m: dict[str, Any]) -> str:
    label = m["model"] + (f":{m['preset']}" if m.get("preset") else "")
    extra = m.get("shown", [])
    if extra:
        label += "(" + ", ".join(f"{k}={_short(m['params'][k])}" for k in extra) + ")"
    return label


def _short(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ",".join(map(str, v)) + "]"
    return str(v)


@dataclass
class Grid:
    name: str
    path: str
    description: str
    cells: list[Cell]
    config: dict[str, Any]
    published: list[dict[str, Any]] = field(default_factory=list)

    @property
    def runnable(self) -> list[Cell]:
        return [c for c in self.cells if c.skip is None]

    @property
    def skipped(self) -> list[Cell]:
        return [c for c in self.cells if c.skip is not None]


# --------------------------------------------------------------------------- loading


def load_grid(
    path: str | Path, registry: Registry, section: str | None = None, doc: Located | None = None
) -> Grid:
    """Load, validate and expand a grid file (raises UsageError on any problem);
    `section` picks one of its `sections` (merged over the rest); `doc`: the file as
    already read by gridfile.load_yaml."""
    doc = doc if doc is not None else load_yaml(path)
    apply_section(doc, section)  # layer 1
    data, name, description = check_top(doc, path)
    regime = check_regime(doc, data, registry)
    seeds = check_seeds(doc, data)
    datasets = check_datasets(doc, data, registry)
    teachers = check_models(doc, data, "teacher", registry)
    students = check_models(doc, data, "student", registry)
    hparams = check_hparams(doc, data)  # layer 2, applied by check_methods
    distillers = check_methods(doc, data, "distiller", "distillers", None, hparams, registry)
    pruners = check_methods(doc, data, "pruner", "pruners", ["none"], hparams, registry)
    check_hparams_used(doc, hparams, {d["name"] for d in distillers} | {p["name"] for p in pruners})
    method_ov, model_ov = check_overrides(doc, data, registry, teachers + students, distillers, pruners)
    pairs = check_pairs(doc, data, teachers, students)
    n_cells = len(datasets) * len(pairs) * len(distillers) * len(pruners) * len(seeds)
    if n_cells > MAX_CELLS:
        raise UsageError(f"{doc.path}:1: the grid expands to {n_cells:,} cells, more than {MAX_CELLS:,}")
    cells = []
    for (ds, task, absent), (teacher, student), dist, prune, seed in itertools.product(
        datasets, pairs, distillers, pruners, seeds
    ):
        parts = {"teacher": teacher, "student": student, "distiller": dist, "pruner": prune}
        layered = layer_cell(  # layers 3 to 5
            regime.budget, regime.train, regime.teacher_train, method_ov, model_ov, parts, registry
        )
        config = {
            "dataset": ds,
            "task": task,
            "teacher": teacher,
            "student": student,
            "distiller": layered["distiller"],
            "pruner": prune,
            "seed": seed,
            "budget": layered["budget"],
            "train": layered["train"],
            "teacher_train": layered["teacher_train"],
            "energy": regime.energy,
        }
        skip = absent or incompatibility(config, registry)
        cells.append(Cell(copy.deepcopy(config), skip=skip))
    seen: dict[str, Cell] = {}
    for c in cells:
        seen.setdefault(c.id, c)  # identical combinations (e.g. repeated entries) run once
    return Grid(name, doc.path, description, list(seen.values()), data, published(doc, data.get("published")))
