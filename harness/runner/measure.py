"""Stage 5, measure: the trained model's metrics (test and validation), its per-example
test outcomes, its size, and the energy and latency of inference; the cell's energy
meter (its grid's `energy` settings)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..api import DataBundle, EnergyMeter, EnergyReading
from ..energy import Window, select_meter
from ..plugins import get_registry
from ..size import measure_size
from ..spec import CellSpec
from ..tasks import Task

#: Makes a new energy meter on each call (see `meter_maker`).
MeterFactory = Callable[[], EnergyMeter]

#: the most inference passes one window makes (it ends at `min_seconds` long before,
#: unless a pass takes microseconds)
MAX_INFERENCE_PASSES = 100_000

#: what of `_inference_energy`'s figures goes into the record's `energy`
INFERENCE_ENERGY_KEYS = (
    "inference_j",
    "inference_j_per_1k",
    "inference_quality",
    "inference_passes",
    "inference_window_s",
    "inference_load_1m",
)


def meter_maker(spec: CellSpec, device: str) -> MeterFactory:
    """A maker of the cell's energy meter (its grid's `energy` settings): each call a new
    meter, for the teacher's and the student's own windows."""
    energy = spec.energy
    meter_opts = {"cpu_watts_per_core": energy.cpu_watts_per_core}
    return lambda: select_meter(get_registry(), torch.device(device), energy.meter, meter_opts)


def energy_of(r: EnergyReading) -> dict[str, Any]:
    """A training window's reading as a record's `energy` holds it."""
    return {
        "train_j": r.joules,
        "meter": r.meter,
        "estimate": r.estimate,
        "quality": r.quality,
        "detail": r.detail,
    }


def measure(
    spec: CellSpec, model: nn.Module, data: DataBundle, task: Task, meter: EnergyMeter
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The trained model's metrics, test outcomes, size and inference figures (energy
    measured with `meter`), in this order of measurement."""
    eb = spec.budget.eval_batch_size
    metrics = {
        "test": task.evaluate(model, data.test, data, eb),
        "val": task.evaluate(model, data.val, data, eb),
    }
    # per test example, for paired tests between cells (harness.stats); the store
    # keeps them apart from the record's JSON
    outcomes = {"test": task.outcomes(model, data.test, data, eb)}
    inference = _inference_energy(model, data, task, meter, eb, spec.energy.inference_min_seconds)
    one = data.prepare(data.test.head(1))
    size = measure_size(model, lambda: task.forward(model, one))
    return metrics, outcomes, size, inference


def _load_1m() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):  # (not on every platform)
        return None


def _inference_energy(
    model: nn.Module, data: DataBundle, task: Task, meter: Any, batch_size: int, min_seconds: float
) -> dict[str, Any]:
    """Energy and latency of inference over the test split, repeated until the window
    lasts at least `min_seconds` (short windows read 0 on coarse counters, and a CPU-time
    estimate is off by up to a 10 ms clock tick at each end). Returns the figures per
    pass and per sample, the passes, the window's length and the machine's 1-minute
    load average at its end (a busy machine makes the estimate noisy: docs/leaderboards.md)."""
    model.eval()
    passes = 0
    n = len(data.test)
    with torch.no_grad(), Window(meter) as w:
        t0 = time.perf_counter()
        while True:
            for batch in data.batches("test", batch_size):
                task.forward(model, batch)
            passes += 1
            if passes >= MAX_INFERENCE_PASSES or time.perf_counter() - t0 >= min_seconds:
                break
    r = w.reading
    samples = passes * n
    unmeasured = r.joules is None  # (never published as 0)
    return {
        "inference_j": None if unmeasured else r.joules / passes,  # one pass over the test split
        "inference_j_per_1k": None if unmeasured else 1000.0 * r.joules / max(samples, 1),
        "inference_quality": r.quality,
        "inference_passes": passes,
        "inference_window_s": r.seconds,
        "inference_load_1m": _load_1m(),
        "inference_s": r.seconds / passes,
        "latency_ms_per_sample": 1000.0 * r.seconds / max(samples, 1),
    }
