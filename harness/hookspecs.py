"""The plugin API: every hook a plugin may implement.

A plugin is a module or object with functions decorated by `harness.hookimpl`, made
known through an entry point in the group `harness`::

    [project.entry-points.harness]
    mymethod = "harness_mymethod"

Registration hooks receive a `register` callable (the style of `llm` and `datasette`):
call it once per class you provide. The harness validates what is registered, stamps
the plugin it came from, and refuses a name that another plugin already registered.
Built-in plugins are loaded through the same entry points, so a third-party plugin
cannot silently replace one: the clash is an error naming both plugins.

Lifecycle hooks are called for every implementation (pluggy's order: last registered
first); their return values are ignored.

The docstrings below are the plugin API's documentation; tests/test_docs.py checks
that docs/plugins.md documents every hook with its exact signature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("harness")
hookimpl = pluggy.HookimplMarker("harness")


# ----------------------------------------------------------------- registration


@hookspec
def harness_register_datasets(register: Callable[[type], None]) -> None:
    """Register datasets.

    register: call with a subclass of `harness.api.Dataset` per dataset. The class
    sets `name`, `tasks` (e.g. {"rating"}), `params` (its options, which a grid gives in
    the dataset's mapping) and implements `load(task) -> DataBundle`.
    """


@hookspec
def harness_register_models(register: Callable[[type], None]) -> None:
    """Register model families usable as teacher or student.

    register: call with a subclass of `harness.api.ModelFactory`. It declares `tasks`,
    `presets` (e.g. "teacher" and "student" sizes), `exposes_features` (whether its
    modules have `feature_layers()` for feature distillers) and `prunable` (which
    pruning structures it supports), and implements `build(data) -> nn.Module`.
    """


@hookspec
def harness_register_distillers(register: Callable[[type], None]) -> None:
    """Register distillers (training losses for the student).

    register: call with a subclass of `harness.api.Distiller`. It declares `tasks`
    and `needs` (any of "teacher", "logits", "features", "scores") so the grid can skip
    cells that cannot provide them, and implements `loss(step) -> Tensor`; `setup(...)`
    may return extra trainable parameters.
    """


@hookspec
def harness_register_pruners(register: Callable[[type], None]) -> None:
    """Register pruners (pruning schedules wrapped around training).

    register: call with a subclass of `harness.api.Pruner`. It declares `structure`
    ("structured", "unstructured" or None) and implements `fit(fit) -> nn.Module`,
    driving training through the `harness.api.Fit` it is given.
    """


@hookspec
def harness_register_energy_meters(register: Callable[[type], None]) -> None:
    """Register energy meters.

    register: call with a subclass of `harness.api.EnergyMeter`. The runner uses the
    available meter of highest `priority` for the cell's device; every record names
    the meter that measured it and whether it is an estimate.
    """


# ----------------------------------------------------------------- lifecycle


@hookspec
def harness_cell_finished(record: dict[str, Any], grid_name: str) -> None:
    """Called in the process that writes the store, after a cell's record is saved.

    record: the stored record (keys as in `harness.store`: id, status, reason,
    method, metrics, size, energy, times, ...). grid_name: the grid's name.
    Use it to log elsewhere (a tracker, a chat); exceptions are reported and ignored.
    """


@hookspec
def harness_grid_finished(summary: dict[str, Any], out_dir: str) -> None:
    """Called once at the end of `harness run`, after the leaderboards are written.

    summary: counts of cells by outcome ("ran", "ok", "failed", "skipped",
    "already_done") and "grid" (its name). out_dir: the run's output directory.
    """
