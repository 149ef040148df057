"""Grid files: loading with line numbers, validation, expansion into cells, and
compatibility filtering. The schema is documented in docs/grid.md.

Every error is a `UsageError` whose message starts with `FILE:LINE: path:` so a user
finds the place at once; nothing is run or written before the whole grid validates.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .api import Param
from .errors import UsageError, closest
from .gridfile import Located, load_yaml
from .plugins import Registry
from .spec import NOT_HASHED as NOT_HASHED  # (re-exported)
from .spec import CellSpec, config_id

TOP_KEYS = {
    "name": "the grid's name (default: the file's stem); names the output folder",
    "description": "free text shown in the leaderboard",
    "datasets": "list of datasets: a name, or {name:, task:, <options>}",
    "teacher": "model spec {model:, preset:, <options>} or a list of them",
    "student": "model spec {model:, preset:, <options>} or a list of them",
    "distillers": "list: a name, or {name:, <hyper-parameters>}",
    "pruners": "list: a name, or {name:, <hyper-parameters>} (default: [none])",
    "seeds": "list of ints, or an int n for seeds 0..n-1 (default: [0])",
    "budget": "epochs, teacher_epochs, batch_size, eval_batch_size",
    "train": "optimiser settings for the student (and teacher unless teacher_train)",
    "teacher_train": "optimiser settings for the teacher, over `train`",
    "hparams": "default hyper-parameters per method name, e.g. {kd: {T: 4}}",
    "overrides": "per-method budget/train overrides, e.g. {kd: {train: {lr: 0.01}}}; a pruner's "
    "may also set its cells' distiller hyper-parameters: {sp: {distiller: {beta: 100}}}; a model's "
    "(by name) sets budget/train/teacher_train/hparams of the cells whose student is that model",
    "energy": "meter: auto or a meter's name; inference_min_seconds; cpu_watts_per_core",
    "published": "figures from papers shown beside ours: a list of {source:, dataset:, rows: "
    "[{method:, model:, <metric>: value}]}",
    "pairs": "product (default: every teacher with every student) or zip (the i-th teacher with "
    "the i-th student)",
    "sections": "named variants of this grid, run with --section NAME: each a mapping of top-level "
    "keys merged over the grid's (e.g. a CPU-sized budget)",
}

#: top-level keys whose mappings a section merges into (others it replaces)
MERGED_IN_SECTIONS = ("budget", "train", "teacher_train", "energy", "hparams", "overrides")


def apply_section(doc: Located, section: str | None) -> None:
    """Merge the section `section` of the grid over its top level (in place), and point
    the section's line numbers at the merged keys, so errors name the section's lines."""
    data = doc.data
    sections = data.pop("sections", None) if isinstance(data, dict) else None
    if section is None:
        return
    if not isinstance(sections, dict) or section not in sections:
        known = ", ".join(sorted(sections)) if isinstance(sections, dict) else "none"
        raise UsageError(
            f"{doc.path}:1: no section {section!r} in this grid (sections: {known})"
            + (closest(section, sections) if isinstance(sections, dict) else "")
        )
    sec = sections[section]
    if not isinstance(sec, dict):
        raise UsageError(f"{doc.where('sections', section)}: expected a mapping of grid keys")
    for key, value in sec.items():
        if key == "sections":
            raise UsageError(f"{doc.where('sections', section, key)}: sections do not nest")
        base = data.get(key)
        if key in MERGED_IN_SECTIONS and isinstance(base, dict) and isinstance(value, dict):
            data[key] = {**base, **value}
        else:
            data[key] = value
    data.setdefault("name", None)
    if "name" not in sec:
        data["name"] = f"{data['name'] or Path(doc.path).stem}-{section}"
    prefix = ("sections", section)
    for path, line in list(doc.lines.items()):
        if path[:2] == prefix and len(path) > 2:
            doc.lines[path[2:]] = line


BUDGET = {
    "epochs": Param(10, "student training epochs"),
    "teacher_epochs": Param(None, "teacher training epochs (default: epochs)", type=int),
    "batch_size": Param(64, "training batch size"),
    "eval_batch_size": Param(1024, "evaluation batch size"),
    "select": Param(
        "last",
        "which epoch's model to keep: last, or best_val (the best "
        "validation score; the whole budget is still trained)",
        choices=("last", "best_val"),
    ),
}

TRAIN = {
    "optimizer": Param("adam", "optimiser", choices=("adam", "adamw", "sgd", "adagrad")),
    "lr": Param(1e-3, "learning rate"),
    "weight_decay": Param(0.0, "weight decay"),
    "momentum": Param(0.9, "SGD momentum"),
    "nesterov": Param(False, "SGD Nesterov momentum"),
    "milestones": Param([], "epochs at which the learning rate is multiplied by gamma", type=list),
    "gamma": Param(0.1, "learning-rate decay factor at each milestone"),
    "grad_clip": Param(None, "clip the gradient norm to this value", type=float),
}

ENERGY = {
    "meter": Param("auto", "'auto' (best available) or a registered meter's name"),
    "inference_min_seconds": Param(1.0, "repeat inference passes until the energy window lasts this long"),
    "cpu_watts_per_core": Param(
        None, "watts per busy core for the CPU-time estimate (default: the meter's)", type=float
    ),
}

#: What each budget/train/energy value may be, beyond its type: (test, what is allowed).
#: Checked when the grid loads, so that e.g. `epochs: 0` (an untrained model recorded as
#: ok) or a negative learning rate is a validation error, not a wrong or failed run.
BOUNDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "epochs": (lambda v: v >= 1, "an int >= 1"),
    "teacher_epochs": (lambda v: v is None or v >= 1, "an int >= 1"),
    "batch_size": (lambda v: v >= 1, "an int >= 1"),
    "eval_batch_size": (lambda v: v >= 1, "an int >= 1"),
    "lr": (lambda v: v > 0, "a number > 0"),
    "weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "momentum": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "gamma": (lambda v: v > 0, "a number > 0"),
    "grad_clip": (lambda v: v is None or v > 0, "a number > 0 (or null for none)"),
    "milestones": (
        lambda v: all(isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in v),
        "a list of ints >= 0 (epochs)",
    ),
    "inference_min_seconds": (lambda v: 0 <= v <= 3600, "seconds, 0 to 3600"),
    "cpu_watts_per_core": (lambda v: v is None or v > 0, "watts > 0 (or null for the meter's)"),
}

#: At most this many cells per grid (after every list is expanded): a typo such as
#: `seeds: 1000000` is an error, not a plan that never ends.
MAX_CELLS = 100_000

#: A grid's name names its output folder: letters, digits and . _ - + =, starting with a
#: letter or digit (so never "", ".", ".." or a path).
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,119}")

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


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


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


# --------------------------------------------------------------------------- validation


def _section(doc: Located, key: str | tuple, schema: dict[str, Param], value: Any) -> dict[str, Any]:
    path = key if isinstance(key, tuple) else (key,)
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise UsageError(f"{doc.where(*path)}: expected a mapping, got {type(value).__name__}")
    out = {}
    for k, v in value.items():
        if k not in schema:
            raise UsageError(
                f"{doc.where(*path, k)}: unknown key {k!r}"
                + (closest(str(k), schema) or f" (known: {', '.join(schema)})")
            )
        out[k] = schema[k].coerce(v, doc.where(*path, k))
        if k in BOUNDS and not BOUNDS[k][0](out[k]):
            raise UsageError(f"{doc.where(*path, k)}: {out[k]!r} is not allowed; expected {BOUNDS[k][1]}")
    return out


def _resolve(schema: dict[str, Param], given: dict[str, Any]) -> dict[str, Any]:
    return {k: given.get(k, p.default) for k, p in schema.items()}


def _as_list(doc: Located, key: str, value: Any, default: list | None = None) -> list:
    if value is None:
        if default is None:
            raise UsageError(f"{doc.where()}: missing required key {key!r}")
        return default
    if isinstance(value, (str, dict)):
        return [value]
    if not isinstance(value, list) or not value:
        raise UsageError(f"{doc.where(key)}: expected a non-empty list")
    return value


def _named(doc: Located, path: tuple, entry: Any, name_key: str) -> tuple[str, dict[str, Any]]:
    """An entry that is a bare name or a mapping {name_key: ..., options...}."""
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict):
        if name_key not in entry:
            raise UsageError(f"{doc.where(*path)}: missing {name_key!r}")
        name = entry[name_key]
        if not isinstance(name, str):
            raise UsageError(f"{doc.where(*path, name_key)}: expected a name, got {name!r}")
        return name, {k: v for k, v in entry.items() if k != name_key}
    raise UsageError(
        f"{doc.where(*path)}: expected a name or a mapping with {name_key!r}, got {type(entry).__name__}"
    )


def _expand_options(cls: Any, options: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """Options whose value is a list, for a param that does not take a list, expand into
    one variant per value (every combination)."""
    sweep = {}
    for k, v in options.items():
        p = cls.params.get(k)
        takes_list = p is not None and (types := p.accepted()) is not None and list in types
        if isinstance(v, list) and p is not None and not takes_list:
            if not v:
                raise UsageError(f"{where}: {k}: an empty list (sweeps nothing); give one value or more")
            sweep[k] = v
    if math.prod(len(v) for v in sweep.values()) > MAX_CELLS:
        raise UsageError(f"{where}: these option lists expand to more than {MAX_CELLS:,} variants")
    keys = list(sweep)
    return [
        {**options, **dict(zip(keys, combo, strict=True))}
        for combo in itertools.product(*(sweep[k] for k in keys))
    ]


def load_grid(
    path: str | Path, registry: Registry, section: str | None = None, doc: Located | None = None
) -> Grid:
    """Load, validate and expand a grid file (raises UsageError on any problem);
    `section` picks one of its `sections` (merged over the rest); `doc`: the file as
    already read by gridfile.load_yaml."""
    doc = doc if doc is not None else load_yaml(path)
    apply_section(doc, section)
    data = doc.data
    if data is None:
        raise UsageError(f"{doc.path}:1: the grid file is empty")
    if not isinstance(data, dict):
        raise UsageError(f"{doc.path}:1: a grid is a mapping of keys ({', '.join(TOP_KEYS)})")
    for k in data:
        if k not in TOP_KEYS:
            raise UsageError(f"{doc.where(k)}: unknown key {k!r}" + (closest(str(k), TOP_KEYS) or ""))
    name = data.get("name", Path(path).stem)
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
        raise UsageError(
            f"{doc.where('name')}: {name!r} cannot name the output folder; use letters, digits and "
            ". _ - + = (starting with a letter or digit, at most 120)"
        )
    description = data.get("description", "")
    if not isinstance(description, str):
        raise UsageError(f"{doc.where('description')}: expected text")

    budget = _resolve(BUDGET, _section(doc, "budget", BUDGET, data.get("budget")))
    train = _resolve(TRAIN, _section(doc, "train", TRAIN, data.get("train")))
    teacher_train_given = _section(doc, "teacher_train", TRAIN, data.get("teacher_train"))
    energy = _resolve(ENERGY, _section(doc, "energy", ENERGY, data.get("energy")))
    if energy["meter"] != "auto":
        registry.get("energy_meter", energy["meter"], doc.where("energy", "meter"))

    seeds_raw = data.get("seeds", [0])
    if isinstance(seeds_raw, int) and not isinstance(seeds_raw, bool):
        if not 1 <= seeds_raw <= MAX_CELLS:
            raise UsageError(f"{doc.where('seeds')}: the number of seeds must be 1 to {MAX_CELLS:,}")
        seeds = list(range(seeds_raw))
    else:
        seeds = _as_list(doc, "seeds", seeds_raw)
        for i, s in enumerate(seeds):
            if not isinstance(s, int) or isinstance(s, bool):
                raise UsageError(f"{doc.where('seeds', i)}: expected an int seed, got {s!r}")
        if len(set(seeds)) != len(seeds):
            raise UsageError(f"{doc.where('seeds')}: repeated seed")

    # ----- datasets
    datasets = []
    for i, entry in enumerate(_as_list(doc, "datasets", data.get("datasets"))):
        dname, opts = _named(doc, ("datasets", i), entry, "name")
        where = doc.where("datasets", i)
        cls = registry.get("dataset", dname, where)
        task = opts.pop("task", None)
        if task is None:
            if len(cls.tasks) != 1:
                raise UsageError(
                    f"{where}: dataset {dname!r} has several tasks "
                    f"({', '.join(sorted(cls.tasks))}): say which with task:"
                )
            task = next(iter(cls.tasks))
        elif task not in cls.tasks:
            raise UsageError(
                f"{doc.where('datasets', i, 'task')}: dataset {dname!r} has no task {task!r} "
                f"(it has: {', '.join(sorted(cls.tasks))})"
            )
        shown = [k for k in cls.params if k in opts]
        for variant in _expand_options(cls, opts, where):
            params = cls.resolve_params(variant, where)
            absent = cls(**params).missing()  # data not on disk: its cells are skipped
            datasets.append(({"name": dname, "params": params, "shown": shown}, task, absent))

    # ----- models
    def models(role: str) -> list[dict[str, Any]]:
        out = []
        raw = data.get(role)
        if raw is None:
            raise UsageError(f"{doc.where()}: missing required key {role!r}")
        entries = raw if isinstance(raw, list) else [raw]
        if not entries:
            raise UsageError(f"{doc.where(role)}: an empty list; give at least one {role} model")
        for i, entry in enumerate(entries):
            path = (role, i) if isinstance(raw, list) else (role,)
            mname, opts = _named(doc, path, entry, "model")
            where = doc.where(*path)
            cls = registry.get("model", mname, where)
            preset = opts.pop("preset", None)
            base: dict[str, Any] = {}
            if preset is not None:
                if preset not in cls.presets:
                    raise UsageError(
                        f"{doc.where(*path, 'preset')}: model {mname!r} has no preset {preset!r}"
                        + (
                            closest(str(preset), cls.presets)
                            or f" (presets: {', '.join(cls.presets) or 'none'})"
                        )
                    )
                base = copy.deepcopy(cls.presets[preset])
            for variant in _expand_options(cls, opts, where):
                params = cls.resolve_params({**base, **variant}, where)
                out.append(
                    {
                        "model": mname,
                        "preset": preset,
                        "params": params,
                        "shown": [k for k in cls.params if k in opts],
                    }
                )
        return out

    teachers = models("teacher")
    students = models("student")

    # ----- methods
    def methods(kind: str, key: str, default: list | None) -> list[dict[str, Any]]:
        out = []
        entries = _as_list(doc, key, data.get(key), default)
        for i, entry in enumerate(entries):
            path = (key, i) if isinstance(data.get(key), list) else (key,)
            mname, opts = _named(doc, path, entry, "name")
            cls = registry.get(kind, mname, doc.where(*path))
            merged = {**hparams.get(mname, {}), **opts}
            for variant in _expand_options(cls, merged, doc.where(*path)):
                out.append(
                    {
                        "name": mname,
                        "params": cls.resolve_params(variant, doc.where(*path)),
                        "shown": [k for k in cls.params if k in merged],
                    }
                )
        return out

    hparams = data.get("hparams") or {}
    if not isinstance(hparams, dict) or not all(isinstance(v, dict) for v in hparams.values()):
        raise UsageError(f"{doc.where('hparams')}: expected {{method: {{param: value}}}}")
    distillers = methods("distiller", "distillers", None)
    pruners = methods("pruner", "pruners", ["none"])
    used = {d["name"] for d in distillers} | {p["name"] for p in pruners}
    for mname in hparams:
        if mname not in used:
            raise UsageError(
                f"{doc.where('hparams', mname)}: {mname!r} is not a distiller or pruner of "
                "this grid" + closest(str(mname), used)
            )

    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise UsageError(f"{doc.where('overrides')}: expected {{method: {{budget:, train:, distiller:}}}}")
    checked_overrides: dict[str, dict[str, dict[str, Any]]] = {}
    model_names = {m["model"] for m in teachers + students}
    model_overrides: dict[str, dict[str, Any]] = {}
    for mname, ov in overrides.items():
        # (a registered model the grid does not use is accepted: a section may drop one
        # of the grid's models and keep the grid's overrides)
        if (mname in model_names or mname in registry.names("model")) and mname not in used:
            model_overrides[mname] = _model_override(doc, mname, ov, distillers, registry)
            continue
        if mname not in used:
            raise UsageError(
                f"{doc.where('overrides', mname)}: {mname!r} is not a distiller, pruner or model of "
                "this grid" + closest(str(mname), used | model_names)
            )
        if not isinstance(ov, dict):
            raise UsageError(f"{doc.where('overrides', mname)}: expected {{budget:, train:, distiller:}}")
        pruner_names = {p["name"] for p in pruners}
        for k in ov:
            if k not in ("budget", "train", "distiller"):
                raise UsageError(
                    f"{doc.where('overrides', mname, k)}: unknown key {k!r} (known: budget, train, distiller)"
                )
        dist_over = ov.get("distiller") or {}
        if dist_over and (mname not in pruner_names or not isinstance(dist_over, dict)):
            raise UsageError(
                f"{doc.where('overrides', mname, 'distiller')}: only a pruner's overrides may "
                "set distiller hyper-parameters, as a mapping"
            )
        where_d = doc.where("overrides", mname, "distiller")
        for key in dist_over:  # each key must belong to a distiller of the grid
            owners = [d for d in distillers if key in registry.get("distiller", d["name"]).params]
            if not owners:
                raise UsageError(f"{where_d}: no distiller of this grid takes {key!r}")
            for d in owners:
                cls = registry.get("distiller", d["name"])
                cls.resolve_params({**d["params"], key: dist_over[key]}, where_d)
        checked_overrides[mname] = {
            "budget": _section(doc, ("overrides", mname, "budget"), BUDGET, ov.get("budget")),
            "train": _section(doc, ("overrides", mname, "train"), TRAIN, ov.get("train")),
            "distiller": dict(dist_over),
        }

    # ----- expansion
    pairing = data.get("pairs", "product")
    if pairing not in ("product", "zip"):
        raise UsageError(f"{doc.where('pairs')}: expected product or zip, got {pairing!r}")
    if pairing == "zip":
        if len(teachers) != len(students):
            raise UsageError(
                f"{doc.where('pairs')}: zip pairs the i-th teacher with the i-th student, but there are "
                f"{len(teachers)} teachers and {len(students)} students (after list expansion)"
            )
        pairs = list(zip(teachers, students, strict=True))
    else:
        pairs = list(itertools.product(teachers, students))
    n_cells = len(datasets) * len(pairs) * len(distillers) * len(pruners) * len(seeds)
    if n_cells > MAX_CELLS:
        raise UsageError(f"{doc.path}:1: the grid expands to {n_cells:,} cells, more than {MAX_CELLS:,}")
    cells = []
    for (ds, task, absent), (teacher, student), dist, prune, seed in itertools.product(
        datasets, pairs, distillers, pruners, seeds
    ):
        b, t = dict(budget), dict(train)
        for m in (prune["name"], dist["name"]):
            if m in checked_overrides:
                b.update(checked_overrides[m]["budget"])
                t.update(checked_overrides[m]["train"])
        m_over = model_overrides.get(student["model"], {})
        b.update(m_over.get("budget", {}))
        t.update(m_over.get("train", {}))
        if b["teacher_epochs"] is None:
            b["teacher_epochs"] = budget["epochs"]
        t_over = model_overrides.get(teacher["model"], {})
        teacher_t = {
            **train,
            **teacher_train_given,
            **t_over.get("train", {}),
            **t_over.get("teacher_train", {}),
        }
        cls = registry.get("distiller", dist["name"])
        d_over = {
            k: v
            for k, v in checked_overrides.get(prune["name"], {}).get("distiller", {}).items()
            if k in cls.params
        }
        d_over.update(m_over.get("hparams", {}).get(dist["name"], {}))
        if d_over:  # the pruner's cells use their own distiller hyper-parameters
            dist = {
                "name": dist["name"],
                "params": cls.resolve_params({**dist["params"], **d_over}, "overrides"),
                "shown": list(dict.fromkeys([*dist["shown"], *d_over])),
            }
        config = {
            "dataset": ds,
            "task": task,
            "teacher": teacher,
            "student": student,
            "distiller": dist,
            "pruner": prune,
            "seed": seed,
            "budget": b,
            "train": t,
            "teacher_train": teacher_t,
            "energy": energy,
        }
        skip = absent or incompatibility(config, registry)
        cells.append(Cell(copy.deepcopy(config), skip=skip))
    seen: dict[str, Cell] = {}
    for c in cells:
        seen.setdefault(c.id, c)  # identical combinations (e.g. repeated entries) run once
    return Grid(name, doc.path, description, list(seen.values()), data, published(doc, data.get("published")))


def _model_override(
    doc: Located, model: str, ov: Any, distillers: list[dict[str, Any]], registry: Registry
) -> dict[str, Any]:
    """overrides.<model>: budget/train/teacher_train and distiller hparams for the cells
    whose student is that model (train/teacher_train also for its teachers), e.g. the
    CD paper's Adagrad for CDAE and Adam for Caser, each with its own KD settings."""
    keys = ("budget", "train", "teacher_train", "hparams")
    if not isinstance(ov, dict):
        raise UsageError(f"{doc.where('overrides', model)}: expected {{{', '.join(k + ':' for k in keys)}}}")
    for k in ov:
        if k not in keys:
            raise UsageError(
                f"{doc.where('overrides', model, k)}: unknown key {k!r} (known: {', '.join(keys)})"
            )
    hp = ov.get("hparams") or {}
    names = {d["name"] for d in distillers}
    if not isinstance(hp, dict):
        raise UsageError(
            f"{doc.where('overrides', model, 'hparams')}: expected {{distiller: {{param: value}}}}"
        )
    for dname, params in hp.items():
        where = doc.where("overrides", model, "hparams", dname)
        if dname not in names:
            raise UsageError(
                f"{where}: {dname!r} is not a distiller of this grid" + closest(str(dname), names)
            )
        if not isinstance(params, dict):
            raise UsageError(f"{where}: expected {{param: value}}")
        for d in distillers:
            if d["name"] == dname:
                registry.get("distiller", dname).resolve_params({**d["params"], **params}, where)
    return {
        "budget": _section(doc, ("overrides", model, "budget"), BUDGET, ov.get("budget")),
        "train": _section(doc, ("overrides", model, "train"), TRAIN, ov.get("train")),
        "teacher_train": _section(doc, ("overrides", model, "teacher_train"), TRAIN, ov.get("teacher_train")),
        "hparams": {k: dict(v) for k, v in hp.items()},
    }


def published(doc: Any, value: Any) -> list[dict[str, Any]]:
    """The grid's `published` figures, checked: each entry names its source, the
    dataset (as the grid names it) and rows of {method, model, metric: value}, where
    method is the leaderboard's (e.g. CD-TG, Teacher, or the plain student's model
    label) and model the student's (for Teacher rows the teacher's) model name."""
    if value is None:
        return []
    entries = _as_list(doc, "published", value)
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise UsageError(f"{doc.where('published', i)}: expected {{source:, dataset:, rows:}}")
        for key in ("source", "dataset"):
            if not isinstance(e.get(key), str) or not e[key]:
                raise UsageError(f"{doc.where('published', i, key)}: expected the {key} as text")
        unknown = set(e) - {"source", "dataset", "task", "rows"}
        if unknown:
            k = sorted(unknown)[0]
            raise UsageError(
                f"{doc.where('published', i, k)}: unknown key {k!r} (source, dataset, task, rows)"
            )
        rows = e.get("rows")
        if not isinstance(rows, list) or not rows:
            raise UsageError(f"{doc.where('published', i, 'rows')}: expected a non-empty list of rows")
        checked = []
        for j, r in enumerate(rows):
            where = doc.where("published", i, "rows", j)
            if (
                not isinstance(r, dict)
                or not isinstance(r.get("method"), str)
                or not isinstance(r.get("model"), str)
            ):
                raise UsageError(f"{where}: expected {{method:, model:, <metric>: value}}")
            metrics = {k: v for k, v in r.items() if k not in ("method", "model")}
            for k, v in metrics.items():
                if not isinstance(v, (int, float)) or isinstance(v, bool):
                    raise UsageError(
                        f"{doc.where('published', i, 'rows', j, k)}: expected a number, got {v!r}"
                    )
            checked.append({"method": r["method"], "model": r["model"], "metrics": metrics})
        out.append({"source": e["source"], "dataset": e["dataset"], "task": e.get("task"), "rows": checked})
    return out


def incompatibility(config: dict[str, Any], registry: Registry) -> str | None:
    """Why this combination cannot run, or None."""
    task = config["task"]
    teacher = registry.get("model", config["teacher"]["model"])
    student = registry.get("model", config["student"]["model"])
    dist = registry.get("distiller", config["distiller"]["name"])
    prune = registry.get("pruner", config["pruner"]["name"])
    for role, m in (("teacher", teacher), ("student", student)):
        if task not in m.tasks:
            return f"{role} model {m.name!r} does not support the {task} task"
    if task not in dist.tasks:
        return f"distiller {dist.name!r} does not support the {task} task"
    if task not in prune.tasks:
        return f"pruner {prune.name!r} does not support the {task} task"
    needs = set(dist.needs)
    if "features" in needs:
        for role, m in (("teacher", teacher), ("student", student)):
            if not m.exposes_features:
                return f"distiller {dist.name!r} needs features; {role} model {m.name!r} exposes none"
    if "logits" in needs and task == "ranking":
        return f"distiller {dist.name!r} compares outputs (logits), which the ranking task lacks"
    if "scores" in needs and task != "ranking":
        return f"distiller {dist.name!r} needs ranking scores; the {task} task has none"
    if prune.structure is not None and prune.structure not in student.prunable:
        return (
            f"pruner {prune.name!r} is {prune.structure}; student model {student.name!r} "
            f"supports {', '.join(sorted(student.prunable)) or 'no'} pruning"
        )
    return None
