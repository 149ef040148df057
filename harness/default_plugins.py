"""The core's default plugin: the baselines every grid relies on, the `none` distiller
(the student's own task loss), the `none` pruner (train the student for the whole
budget) and the `cpu-estimate` energy meter (this process's CPU time × watts per busy
core; not a measurement: every record says "estimate" and the watts it assumed). A
grid's `pruners` default to [none], every leaderboard compares against the plain
student (distiller none, pruner none), and every cell needs a meter, so these live in
the core rather than in an optional plugin: the harness works with any subset of
plugins.

Written exactly as a third-party plugin is (the style of llm's and datasette's
default plugins), and registered by `harness.plugins` before every entry point, under
the name DEFAULT_PLUGIN, whatever HARNESS_PLUGINS says.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import torch

from .api import Distiller, EnergyMeter, EnergyReading, Fit, Pruner, Step
from .hookspecs import Register, hookimpl

if TYPE_CHECKING:
    import torch.nn as nn

#: the name under which `harness plugins` lists this module
DEFAULT_PLUGIN = "default"


class NoDistillation(Distiller):
    name = "none"
    label = "none"
    description = "no distillation: the student's own task loss"
    tasks = frozenset({"classification", "rating", "ranking"})
    needs = frozenset()

    def loss(self, step: Step) -> torch.Tensor:
        return step.task_loss


class NoPruning(Pruner):
    name = "none"
    label = "none"
    description = "no pruning: train the student for the whole budget"
    tasks = frozenset({"classification", "rating", "ranking"})
    structure = None

    def fit(self, fit: Fit) -> nn.Module:
        return fit.train(fit.student)


#: Default watts per busy core for the estimate. A server core draws roughly 4-7 W at
#: load (e.g. a 280 W, 64-core EPYC 7763: 4.4 W/core; a 270 W, 40-core Xeon 8380:
#: 6.75 W/core, from their TDPs); desktop cores more. 10 W errs high on purpose: an
#: estimate should not flatter. Override with HARNESS_CPU_WATTS_PER_CORE or the grid's
#: energy.cpu_watts_per_core.
DEFAULT_WATTS_PER_CORE = 10.0


class CpuTimeEstimate(EnergyMeter):
    name = "cpu-estimate"
    description = "estimate: this process's CPU time × watts per busy core"
    priority = 0
    estimate = True

    def __init__(self, device, cpu_watts_per_core: float | None = None, **_ignored):
        super().__init__(device)
        env = os.environ.get("HARNESS_CPU_WATTS_PER_CORE")
        if cpu_watts_per_core is None and env:
            cpu_watts_per_core = float(env)
        self.watts = float(cpu_watts_per_core or DEFAULT_WATTS_PER_CORE)

    @staticmethod
    def _cpu_seconds() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def begin(self):
        _sync(self.device)
        self._t0 = time.perf_counter()
        self._c0 = self._cpu_seconds()

    def end(self):
        _sync(self.device)
        cpu = self._cpu_seconds() - self._c0
        seconds = time.perf_counter() - self._t0
        if cpu <= 0 < seconds:  # shorter than the CPU clock's tick (10 ms): one busy core
            return EnergyReading(
                seconds * self.watts,
                seconds,
                self.name,
                True,
                f"estimate: window {seconds:.3g} s under the CPU-time tick: wall time × {self.watts:g} W "
                "(one core)",
            )
        return EnergyReading(
            cpu * self.watts, seconds, self.name, True, f"estimate: {cpu:.2f} CPU-s × {self.watts:g} W/core"
        )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@hookimpl
def harness_register_distillers(register: Register[Distiller]) -> None:
    register(NoDistillation)


@hookimpl
def harness_register_pruners(register: Register[Pruner]) -> None:
    register(NoPruning)


@hookimpl
def harness_register_energy_meters(register: Register[EnergyMeter]) -> None:
    register(CpuTimeEstimate)
