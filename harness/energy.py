"""Energy windows: pick the best available meter for a device and measure a block.

The meters themselves are plugins (`harness_register_energy_meters`); the built-in ones
live in plugins/harness_energy (NVML energy counter, NVML power sampling, RAPL, and a
CPU-time estimate). Every reading names its meter and says whether it is an estimate.
"""

from __future__ import annotations

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


class Window:
    """`with Window(meter) as w: ...` then `w.reading` (EnergyReading)."""

    def __init__(self, meter: EnergyMeter) -> None:
        self.meter = meter
        self.reading: EnergyReading | None = None

    def __enter__(self) -> Window:
        self.meter.begin()
        return self

    def __exit__(self, *exc: object) -> None:
        self.reading = self.meter.end()
