"""The cell spec: what one cell computes, frozen and typed, built once when the grid loads.

A grid expands into cells; each cell's settings are a `CellSpec`: the dataset, the
teacher and student models, the distiller and the pruner (each a named part with its
options), the task, the seed, the training regime (budget, the student's and the
teacher's optimiser settings) and the energy settings. Every stage after the grid reads
its attributes (`spec.budget.epochs`, `spec.distiller.name`), never string keys.

Its id is a stable hash of its canonical form, which is exactly the cell's config as the
grid wrote it before the spec existed (`to_config()`), minus the sections that change how
a cell is measured but not what it computes (NOT_HASHED) and the presentational `shown`
lists: so stores written before the spec keep their ids. In the spirit of OpenLTH's
frozen, hashed run descriptions (Frankle et al., "OpenLTH: A Framework for Lottery
Ticket Hypothesis Research", 2020).

Options (a part's `params`) are frozen too: mappings become `FrozenDict`s and lists
`FrozenList`s; `kwargs()` thaws them back into the plain dicts and lists a plugin's
constructor received before, so plugins see exactly what they saw.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from .errors import UsageError

#: Config sections that change how a cell is measured, not what it computes: kept in
#: the record but left out of the cell's id, so changing them does not rerun cells.
NOT_HASHED = ("energy",)

#: Options added to a section after stores existed, left out of the id while they hold
#: this value (their default), so that existing cells keep their ids; a cell that sets
#: one otherwise gets a new id. (section, option) -> default.
HASHED_UNLESS_DEFAULT = {
    ("train", "compile"): False,
    ("teacher_train", "compile"): False,
    ("train", "autocast"): "none",
    ("teacher_train", "autocast"): "none",
}


def canonical(obj: Any) -> str:
    """The JSON text hashed for ids: sorted keys, no spaces."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_id(config: dict[str, Any]) -> str:
    """Hash of what a cell's config computes: NOT_HASHED sections, the presentational
    "shown" lists (which options a grid spelled out) and HASHED_UNLESS_DEFAULT options at
    their default are left out, so spelling out a default gives the same id."""
    hashed = {
        k: ({kk: vv for kk, vv in v.items() if not unhashed(k, kk, vv)} if isinstance(v, dict) else v)
        for k, v in config.items()
        if k not in NOT_HASHED
    }
    return hashlib.sha256(canonical(hashed).encode()).hexdigest()[:16]


def unhashed(section: str, key: str, value: Any) -> bool:
    """Whether `section.key = value` is left out of the ids (see `config_id`)."""
    if key == "shown":
        return True
    if (section, key) not in HASHED_UNLESS_DEFAULT:
        return False
    default = HASHED_UNLESS_DEFAULT[(section, key)]
    return value == default and type(value) is type(default)


# --------------------------------------------------------------------------- frozen values


class FrozenDict(dict):
    """A dict that refuses changes (and so can be hashed); pickles as itself."""

    def _refuse(self, *_a: Any, **_k: Any) -> None:
        raise TypeError("a cell spec's options are frozen")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]
    __ior__ = _refuse  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(canonical(self))

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))


class FrozenList(tuple):
    """A list frozen into a tuple; `thaw` turns it back into a list (a tuple a plugin
    gave as a default stays a tuple). Serialises to JSON as the list it was."""


def freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return FrozenList(freeze(v) for v in value)
    if isinstance(value, tuple) and not isinstance(value, FrozenList):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The plain dicts and lists a frozen value was made from (fresh copies)."""
    if isinstance(value, dict):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, FrozenList):
        return [thaw(v) for v in value]
    if isinstance(value, tuple):
        return tuple(thaw(v) for v in value)
    return value


# --------------------------------------------------------------------------- parts


def _take(where: str, names: list[str], value: Any, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """`value` (a mapping with exactly the keys `names`) frozen, or a one-line error
    naming the section and the field. A field in `defaults` may be missing (a config
    written before the field existed): it takes that default."""
    if not isinstance(value, dict):
        raise UsageError(f"cell spec: {where}: expected a mapping of {', '.join(names)}, got {value!r}")
    unknown = [k for k in value if k not in names]
    value = {**(defaults or {}), **value}
    missing = [k for k in names if k not in value]
    if unknown:
        raise UsageError(f"cell spec: {where}: unknown field {unknown[0]!r} (fields: {', '.join(names)})")
    if missing:
        raise UsageError(f"cell spec: {where}: missing field {missing[0]!r}")
    return {k: freeze(value[k]) for k in names}


@dataclass(frozen=True)
class Part:
    """A plugin chosen by name (dataset, distiller, pruner) with its options; `shown`:
    which options the grid spelled out (presentational, not hashed)."""

    name: str
    params: FrozenDict
    shown: FrozenList = FrozenList()

    def kwargs(self) -> dict[str, Any]:
        """The options as the plugin's constructor takes them."""
        return thaw(self.params)


@dataclass(frozen=True)
class ModelPart:
    """A registered model (teacher or student), the preset it came from, its options."""

    model: str
    preset: str | None
    params: FrozenDict
    shown: FrozenList = FrozenList()

    def kwargs(self) -> dict[str, Any]:
        return thaw(self.params)


@dataclass(frozen=True)
class Budget:
    epochs: int
    teacher_epochs: int
    batch_size: int
    eval_batch_size: int
    select: str


@dataclass(frozen=True)
class Regime:
    """Optimiser settings of one model's training (grid sections `train`, `teacher_train`)."""

    optimizer: str
    lr: float
    weight_decay: float
    momentum: float
    nesterov: bool
    milestones: FrozenList
    gamma: float
    grad_clip: float | None
    compile: bool = False
    autocast: str = "none"


@dataclass(frozen=True)
class EnergySettings:
    meter: str
    inference_min_seconds: float
    cpu_watts_per_core: float | None


#: Each section of a cell's config and the type that holds it (None: a plain value).
SECTIONS: dict[str, type | None] = {
    "dataset": Part,
    "task": None,
    "teacher": ModelPart,
    "student": ModelPart,
    "distiller": Part,
    "pruner": Part,
    "seed": None,
    "budget": Budget,
    "train": Regime,
    "teacher_train": Regime,
    "energy": EnergySettings,
}


@dataclass(frozen=True)
class CellSpec:
    """What one cell computes (see the module's docstring). Build it with
    `CellSpec.from_config`; `to_config()` is the plain dict a store persists."""

    dataset: Part
    task: str
    teacher: ModelPart
    student: ModelPart
    distiller: Part
    pruner: Part
    seed: int
    budget: Budget
    train: Regime
    teacher_train: Regime
    energy: EnergySettings
    id: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", config_id(self.to_config()))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CellSpec:
        """The spec of a cell's config (the dict the grid builds); raises UsageError
        naming the first unknown, missing or mistyped field."""
        kwargs = _take("config", list(SECTIONS), config)
        for name, typ in SECTIONS.items():
            if typ is not None:
                defaults = {f.name: f.default for f in fields(typ) if f.default is not MISSING}
                kwargs[name] = typ(**_take(name, [f.name for f in fields(typ)], config[name], defaults))
        if not isinstance(config["task"], str):
            raise UsageError(f"cell spec: task: expected a name, got {config['task']!r}")
        if not isinstance(config["seed"], int) or isinstance(config["seed"], bool):
            raise UsageError(f"cell spec: seed: expected an int, got {config['seed']!r}")
        return cls(**kwargs)

    def to_config(self) -> dict[str, Any]:
        """The cell's config as plain JSON data, in the grid's order (what the store
        keeps in a record, and what the id hashes)."""
        out: dict[str, Any] = {}
        for name, typ in SECTIONS.items():
            value = getattr(self, name)
            out[name] = thaw({f.name: getattr(value, f.name) for f in fields(typ)}) if typ else value
        return out
