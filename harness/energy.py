"""Energy windows: pick the best available meter for a device and measure a block.

The meters themselves are plugins (`harness_register_energy_meters`); the built-in ones
live in plugins/harness_energy (NVML energy counter, NVML power sampling, RAPL, and a
CPU-time estimate). Every reading names its meter and says whether it is measured,
filled (power × time over a window shorter than the counter's update period), estimated
or unmeasured. A window is never published as 0 J: a reading of exactly 0 J (or less,
or not a number) over a window that did work is recorded as unmeasured (joules None),
the failure mode of meters that report 0 silently when a counter does not advance.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import torch

from .api import EnergyMeter, EnergyReading
from .errors import UsageError
from .plugins import Registry


def available_meters(registry: Registry, device: torch.device) -> list[tuple[type, str | None]]:
    """Every registered meter, best first, with the reason it is unavailable (or None)."""
    classes = sorted(
        (e.cls for e in registry.entries["energy_meter"].values()),
        key=lambda c: (-c.priority, c.name),
    )
    return [(c, c.unavailable(device)) for c in classes]


def select_meter(
    registry: Registry, device: torch.device, choice: str = "auto", options: dict[str, Any] | None = None
) -> EnergyMeter:
    """Instantiate the chosen meter, or the best available one for `device`."""
    options = {k: v for k, v in (options or {}).items() if v is not None}
    if choice != "auto":
        cls = registry.get("energy_meter", choice)
        why = cls.unavailable(device)
        if why:
            raise UsageError(f"energy meter {choice!r} is not available on {device}: {why}")
        return cls(device, **options)
    for cls, why in available_meters(registry, device):
        if why is None:
            return cls(device, **options)
    raise UsageError(f"no energy meter is available on {device}")


@contextlib.contextmanager
def open_meter(make: Callable[[], EnergyMeter]) -> Iterator[EnergyMeter]:
    """`with open_meter(factory) as meter:` a new meter, closed when the block ends on
    every path (a cell that raises mid-training included): meters may hold threads,
    handles or counters (NVML sampling) that must not outlive their cell."""
    meter = make()
    try:
        yield meter
    finally:
        meter.close()


class Window:
    """`with Window(meter) as w: ...` then `w.reading` (EnergyReading)."""

    def __init__(self, meter: EnergyMeter) -> None:
        self.meter = meter
        self.reading: EnergyReading | None = None

    def __enter__(self) -> Window:
        self.meter.begin()
        return self

    def __exit__(self, *exc: object) -> None:
        self.reading = trusted(self.meter.end())


def trusted(r: EnergyReading) -> EnergyReading:
    """The reading, or an unmeasured one when its joules cannot be true: 0 J (or
    negative, or NaN) over a window that lasted any time at all."""
    if r.joules is None:
        return replace(r, quality="unmeasured")
    if r.seconds > 0 and (not math.isfinite(r.joules) or r.joules <= 0):
        return replace(
            r,
            joules=None,
            quality="unmeasured",
            detail=f"{r.detail}; read {r.joules:g} J over {r.seconds:.3g} s of work: refused (unmeasured)",
        )
    return r
