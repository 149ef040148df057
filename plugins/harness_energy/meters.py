"""Energy meters, best first.

- nvml-energy: NVML's total-energy counter (Volta and newer), read at both ends of the
  window after synchronising the device. Whole-GPU: other tenants' work counts too.
- nvml-power: NVML power samples (older GPUs) taken by a thread every `interval`
  seconds and integrated with the trapezoid rule.
- rapl: the Linux powercap RAPL package counters (Intel, and AMD on recent kernels),
  summed over packages, wrap-around handled. Whole-socket: other processes count too.
- cpu-estimate: this process's CPU time × watts per busy core. Not a measurement: every
  record says "estimate" and the watts it assumed.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import torch

from harness.api import EnergyMeter, EnergyReading

#: Default watts per busy core for the estimate. A server core draws roughly 4-7 W at
#: load (e.g. a 280 W, 64-core EPYC 7763: 4.4 W/core; a 270 W, 40-core Xeon 8380:
#: 6.75 W/core, from their TDPs); desktop cores more. 10 W errs high on purpose: an
#: estimate should not flatter. Override with HARNESS_CPU_WATTS_PER_CORE or the grid's
#: energy.cpu_watts_per_core.
DEFAULT_WATTS_PER_CORE = 10.0


def _pynvml():
    import pynvml  # from the nvidia-ml-py package

    return pynvml


def _nvml_handle(device: torch.device):
    """NVML handle of the torch CUDA device, matched by PCI bus id (respects
    CUDA_VISIBLE_DEVICES), falling back to the index."""
    nv = _pynvml()
    nv.nvmlInit()
    index = device.index if device.index is not None else torch.cuda.current_device()
    try:
        props = torch.cuda.get_device_properties(index)
        bus = f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"
        return nv.nvmlDeviceGetHandleByPciBusId(bus)
    except Exception:
        return nv.nvmlDeviceGetHandleByIndex(index)


def _nvml_unavailable(device: torch.device, probe) -> str | None:
    if device.type != "cuda":
        return "not a CUDA device"
    try:
        nv = _pynvml()
    except ImportError:
        return "pynvml (nvidia-ml-py) is not installed"
    try:
        handle = _nvml_handle(device)
        try:
            current, _pending = nv.nvmlDeviceGetMigMode(handle)
            if current:
                return "MIG is enabled: NVML cannot measure a MIG slice's energy"
        except nv.NVMLError:
            pass  # GPUs without MIG support raise NOT_SUPPORTED
        probe(nv, handle)
    except Exception as e:
        return f"NVML: {e}"
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class NvmlEnergyCounter(EnergyMeter):
    name = "nvml-energy"
    description = "NVML total-energy counter of the GPU (Volta and newer)"
    priority = 40

    @classmethod
    def unavailable(cls, device):
        return _nvml_unavailable(device, lambda nv, h: nv.nvmlDeviceGetTotalEnergyConsumption(h))

    def __init__(self, device, **_ignored):
        super().__init__(device)
        self.nv = _pynvml()
        self.handle = _nvml_handle(device)

    def begin(self):
        _sync(self.device)
        self._t0 = time.perf_counter()
        self._e0 = self.nv.nvmlDeviceGetTotalEnergyConsumption(self.handle)  # mJ

    def end(self):
        _sync(self.device)
        e1 = self.nv.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        seconds = time.perf_counter() - self._t0
        return EnergyReading((e1 - self._e0) / 1000.0, seconds, self.name, False, "whole GPU, all processes")


class NvmlPowerSampling(EnergyMeter):
    name = "nvml-power"
    description = "NVML power samples of the GPU, integrated over time (older GPUs)"
    priority = 30
    interval = 0.05

    @classmethod
    def unavailable(cls, device):
        return _nvml_unavailable(device, lambda nv, h: nv.nvmlDeviceGetPowerUsage(h))

    def __init__(self, device, **_ignored):
        super().__init__(device)
        self.nv = _pynvml()
        self.handle = _nvml_handle(device)
        self._samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        self._samples.append((time.perf_counter(), self.nv.nvmlDeviceGetPowerUsage(self.handle) / 1000.0))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def begin(self):
        _sync(self.device)
        self._samples = []
        self._stop.clear()
        self._sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def end(self):
        _sync(self.device)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        return EnergyReading(
            integrate(self._samples),
            self._samples[-1][0] - self._samples[0][0],
            self.name,
            False,
            f"whole GPU, sampled every {self.interval}s",
        )


def integrate(samples: list[tuple[float, float]]) -> float:
    """Trapezoid integral of (time s, power W) samples, in joules."""
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(samples, samples[1:], strict=False))


def rapl_root() -> Path:
    return Path(os.environ.get("HARNESS_RAPL_ROOT", "/sys/class/powercap"))


def rapl_packages(root: Path) -> list[Path]:
    """Top-level RAPL package domains (intel-rapl:N, not their sub-domains)."""
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.glob("intel-rapl:*")):
        if d.name.count(":") == 1 and (d / "energy_uj").exists():
            out.append(d)
    return out


class Rapl(EnergyMeter):
    name = "rapl"
    description = "Linux powercap RAPL counters of the CPU packages"
    priority = 20

    @classmethod
    def unavailable(cls, device):
        if device.type != "cpu":
            return "RAPL measures CPUs; the cell runs on a GPU"
        pkgs = rapl_packages(rapl_root())
        if not pkgs:
            return f"no RAPL package domains under {rapl_root()}"
        try:
            for p in pkgs:
                int((p / "energy_uj").read_text())
        except (OSError, ValueError) as e:
            return f"RAPL counters unreadable: {e}"
        return None

    def __init__(self, device, **_ignored):
        super().__init__(device)
        self.pkgs = rapl_packages(rapl_root())
        self.ranges = []
        for p in self.pkgs:
            f = p / "max_energy_range_uj"
            self.ranges.append(int(f.read_text()) if f.exists() else 2**32)

    def _read(self) -> list[int]:
        return [int((p / "energy_uj").read_text()) for p in self.pkgs]

    def begin(self):
        self._t0 = time.perf_counter()
        self._e0 = self._read()

    def end(self):
        e1 = self._read()
        seconds = time.perf_counter() - self._t0
        uj = 0
        for a, b, rng in zip(self._e0, e1, self.ranges, strict=True):
            uj += b - a if b >= a else b + rng - a  # the counter wrapped
        return EnergyReading(
            uj / 1e6, seconds, self.name, False, f"{len(self.pkgs)} CPU package(s), all processes"
        )


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
        return EnergyReading(
            cpu * self.watts, seconds, self.name, True, f"estimate: {cpu:.2f} CPU-s × {self.watts:g} W/core"
        )
