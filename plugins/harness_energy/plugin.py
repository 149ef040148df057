from __future__ import annotations

from harness.hookspecs import hookimpl

from .meters import NvmlEnergyCounter, NvmlPowerSampling, Rapl


@hookimpl
def harness_register_energy_meters(register):
    for cls in (NvmlEnergyCounter, NvmlPowerSampling, Rapl):
        register(cls)
