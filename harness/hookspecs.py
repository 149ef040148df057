"""The plugin API: every hook a plugin may implement.

A plugin is a module or object with functions decorated by `harness.hookimpl`, made
known through an entry point in the group `harness`::

    [project.entry-points.harness]
    mymethod = "harness_mymethod"

Registration hooks receive a `register` object (the style of `llm` and `datasette`),
typed by the kind it takes (`Register[Distiller]` takes Distiller subclasses): call it
once per class you provide. The harness validates what is registered, stamps
the plugin it came from, and refuses a name that another plugin already registered.
Built-in plugins are loaded through the same entry points, so a third-party plugin
cannot silently replace one: the clash is an error naming both plugins.

Every hook is called through pluggy (`pm.hook.<name>(...)`), so hook wrappers and
pluggy's tracing apply: `HARNESS_TRACE_HOOKS=1` logs each call and its result to
stderr. Implementations are called last-registered-first (pluggy's order); the core's
default plugin (harness.default_plugins: the `none` distiller and pruner) is
registered before every entry point, so it is called last. Lifecycle hooks are called
for every implementation; their return values are ignored, and an implementation that
raises is reported and the others are still called.

Hooks are grouped by lifecycle: registration (when the registry is built, once per
process), then the run (after each cell, after the grid).

The docstrings below are the plugin API's documentation; tests/test_docs.py checks
that docs/plugins.md documents every hook with its exact signature.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypedDict, TypeVar

import pluggy

if TYPE_CHECKING:
    from .api import Dataset, Distiller, EnergyMeter, ModelFactory, Pruner

hookspec = pluggy.HookspecMarker("harness")
hookimpl = pluggy.HookimplMarker("harness")

T_contra = TypeVar("T_contra", contravariant=True)


class Register(Protocol[T_contra]):
    """What a registration hook receives: call it with each class you provide (a
    subclass of the kind's base class, e.g. `harness.api.Distiller`). The harness checks
    the class, stamps the plugin it came from and refuses a name already registered."""

    def __call__(self, cls: type[T_contra], /) -> None: ...


class GridSummary(TypedDict):
    """What `harness run` reports to `harness_grid_finished` (a plain dict)."""

    grid: str
    ran: int
    ok: int
    failed: int
    skipped: int
    already_done: int
    elsewhere: int


# ------------------------------------------- registration (once, when the registry is built)


@hookspec
def harness_register_datasets(register: Register[Dataset]) -> None:
    """Register datasets.

    register: call with a subclass of `harness.api.Dataset` per dataset. The class
    sets `name`, `tasks` (e.g. {"rating"}), `params` (its options, which a grid gives in
    the dataset's mapping) and implements `load(task) -> DataBundle`.
    """


@hookspec
def harness_register_models(register: Register[ModelFactory]) -> None:
    """Register model families usable as teacher or student.

    register: call with a subclass of `harness.api.ModelFactory`. It declares `tasks`,
    `presets` (e.g. "teacher" and "student" sizes), `exposes_features` (whether its
    modules have `feature_layers()` for feature distillers) and `prunable` (which
    pruning structures it supports), and implements `build(data) -> nn.Module`.
    """


@hookspec
def harness_register_distillers(register: Register[Distiller]) -> None:
    """Register distillers (training losses for the student).

    register: call with a subclass of `harness.api.Distiller`. It declares `tasks`
    and `needs` (any of "teacher", "logits", "features", "scores") so the grid can skip
    cells that cannot provide them, and implements `loss(step) -> Tensor`; `setup(...)`
    may return extra trainable parameters.
    """


@hookspec
def harness_register_pruners(register: Register[Pruner]) -> None:
    """Register pruners (pruning schedules wrapped around training).

    register: call with a subclass of `harness.api.Pruner`. It declares `structure`
    ("structured", "unstructured" or None) and implements `fit(fit) -> nn.Module`,
    driving training through the `harness.api.Fit` it is given.
    """


@hookspec
def harness_register_energy_meters(register: Register[EnergyMeter]) -> None:
    """Register energy meters.

    register: call with a subclass of `harness.api.EnergyMeter`. The runner uses the
    available meter of highest `priority` for the cell's device; every record names
    the meter that measured it and whether it is an estimate.
    """


# ------------------------------------------- run (after each cell, after the grid)


@hookspec
def harness_cell_finished(record: dict[str, Any], grid_name: str) -> None:
    """Called in the process that writes the store, after a cell's record is saved.

    record: the stored record (keys as in `harness.store`: id, status, reason,
    method, metrics, size, energy, times, ...). grid_name: the grid's name.
    Use it to log elsewhere (a tracker, a chat); exceptions are reported and ignored.
    """


@hookspec
def harness_grid_finished(summary: GridSummary, out_dir: str) -> None:
    """Called once at the end of `harness run`, after the leaderboards are written.

    summary: counts of cells by outcome ("ran", "ok", "failed", "skipped",
    "already_done", "elsewhere": run by another process) and "grid" (its name).
    out_dir: the run's output directory.
    """
