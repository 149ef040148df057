"""Grid validation against the plugin registry: the schema of a grid's top level, of
its budget/train/energy sections and of its method and model entries, and the
compatibility of a cell's parts. Every error is a `UsageError` whose message starts
with `FILE:LINE: path:`; nothing is run or written before the whole grid validates.

One of the three stages of loading a grid (see harness.grid.load_grid): parse
(harness.gridfile), layer (harness.gridlayers), validate (here).
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .api import Param
from .errors import UsageError, closest
from .gridfile import Located
from .gridlayers import method_options
from .plugins import Registry

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
    "compile": Param(
        False,
        "torch.compile (inductor) the distiller's loss in training (same results within "
        "float rounding; costs compile time once per process)",
    ),
    "autocast": Param(
        "none",
        "mixed precision of the training step's forward passes and loss (torch.autocast): "
        "none (float32), bf16, or fp16 with a gradient scaler; changes numerics, so off by default",
        choices=("none", "bf16", "fp16"),
    ),
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


def check_top(doc: Located, path: str | Path) -> tuple[dict[str, Any], str, str]:
    """The grid's top level: a mapping of known keys, its name and description."""
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
    return data, name, description


@dataclass
class Regime:
    """The grid-level training regime (after its section): budget and train with every
    default filled in, teacher_train as given (layered over train per cell), energy."""

    budget: dict[str, Any]
    train: dict[str, Any]
    teacher_train: dict[str, Any]
    energy: dict[str, Any]


def check_regime(doc: Located, data: dict[str, Any], registry: Registry) -> Regime:
    budget = _resolve(BUDGET, _section(doc, "budget", BUDGET, data.get("budget")))
    train = _resolve(TRAIN, _section(doc, "train", TRAIN, data.get("train")))
    teacher_train_given = _section(doc, "teacher_train", TRAIN, data.get("teacher_train"))
    energy = _resolve(ENERGY, _section(doc, "energy", ENERGY, data.get("energy")))
    if energy["meter"] != "auto":
        registry.get("energy_meter", energy["meter"], doc.where("energy", "meter"))
    return Regime(budget, train, teacher_train_given, energy)


def check_seeds(doc: Located, data: dict[str, Any]) -> list[int]:
    seeds_raw = data.get("seeds", [0])
    if isinstance(seeds_raw, int) and not isinstance(seeds_raw, bool):
        if not 1 <= seeds_raw <= MAX_CELLS:
            raise UsageError(f"{doc.where('seeds')}: the number of seeds must be 1 to {MAX_CELLS:,}")
        return list(range(seeds_raw))
    seeds = _as_list(doc, "seeds", seeds_raw)
    for i, s in enumerate(seeds):
        if not isinstance(s, int) or isinstance(s, bool):
            raise UsageError(f"{doc.where('seeds', i)}: expected an int seed, got {s!r}")
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"{doc.where('seeds')}: repeated seed")
    return seeds


def check_datasets(
    doc: Located, data: dict[str, Any], registry: Registry
) -> list[tuple[dict[str, Any], str, str | None]]:
    """(dataset config, task, why its data is absent or None) per dataset variant."""
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
    return datasets


def check_models(doc: Located, data: dict[str, Any], role: str, registry: Registry) -> list[dict[str, Any]]:
    """The teacher or student model variants (presets resolved, option lists swept)."""
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
                    + (closest(str(preset), cls.presets) or f" (presets: {', '.join(cls.presets) or 'none'})")
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


def check_hparams(doc: Located, data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    hparams = data.get("hparams") or {}
    if not isinstance(hparams, dict) or not all(isinstance(v, dict) for v in hparams.values()):
        raise UsageError(f"{doc.where('hparams')}: expected {{method: {{param: value}}}}")
    return hparams


def check_methods(
    doc: Located,
    data: dict[str, Any],
    kind: str,
    key: str,
    default: list | None,
    hparams: dict[str, dict[str, Any]],
    registry: Registry,
) -> list[dict[str, Any]]:
    """The distiller or pruner variants: each entry's options over the grid's `hparams`
    for that method (layer 2, see harness.gridlayers), option lists swept."""
    out = []
    entries = _as_list(doc, key, data.get(key), default)
    for i, entry in enumerate(entries):
        path = (key, i) if isinstance(data.get(key), list) else (key,)
        mname, opts = _named(doc, path, entry, "name")
        cls = registry.get(kind, mname, doc.where(*path))
        merged = method_options(hparams, mname, opts)
        for variant in _expand_options(cls, merged, doc.where(*path)):
            out.append(
                {
                    "name": mname,
                    "params": cls.resolve_params(variant, doc.where(*path)),
                    "shown": [k for k in cls.params if k in merged],
                }
            )
    return out


def check_hparams_used(doc: Located, hparams: dict[str, Any], used: set[str]) -> None:
    for mname in hparams:
        if mname not in used:
            raise UsageError(
                f"{doc.where('hparams', mname)}: {mname!r} is not a distiller or pruner of "
                "this grid" + closest(str(mname), used)
            )


def check_overrides(
    doc: Located,
    data: dict[str, Any],
    registry: Registry,
    models: list[dict[str, Any]],
    distillers: list[dict[str, Any]],
    pruners: list[dict[str, Any]],
) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, dict[str, Any]]]:
    """The grid's `overrides`, split into (method overrides, model overrides)."""
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise UsageError(f"{doc.where('overrides')}: expected {{method: {{budget:, train:, distiller:}}}}")
    used = {d["name"] for d in distillers} | {p["name"] for p in pruners}
    model_names = {m["model"] for m in models}
    method_overrides: dict[str, dict[str, dict[str, Any]]] = {}
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
        method_overrides[mname] = _method_override(doc, mname, ov, distillers, pruners, registry)
    return method_overrides, model_overrides


def _method_override(
    doc: Located,
    mname: str,
    ov: Any,
    distillers: list[dict[str, Any]],
    pruners: list[dict[str, Any]],
    registry: Registry,
) -> dict[str, dict[str, Any]]:
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
    return {
        "budget": _section(doc, ("overrides", mname, "budget"), BUDGET, ov.get("budget")),
        "train": _section(doc, ("overrides", mname, "train"), TRAIN, ov.get("train")),
        "distiller": dict(dist_over),
    }


def check_pairs(
    doc: Located, data: dict[str, Any], teachers: list[dict[str, Any]], students: list[dict[str, Any]]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    pairing = data.get("pairs", "product")
    if pairing not in ("product", "zip"):
        raise UsageError(f"{doc.where('pairs')}: expected product or zip, got {pairing!r}")
    if pairing == "zip":
        if len(teachers) != len(students):
            raise UsageError(
                f"{doc.where('pairs')}: zip pairs the i-th teacher with the i-th student, but there are "
                f"{len(teachers)} teachers and {len(students)} students (after list expansion)"
            )
        return list(zip(teachers, students, strict=True))
    return list(itertools.product(teachers, students))


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
