"""Energy meters, best first.

- nvml-energy: NVML's total-energy counter (Volta and newer), read at both ends of the
  window after synchronising the device. Whole-GPU: other tenants' work counts too. The
  counter advances every 20-100 ms, so a window shorter than `update_s` (or one over
  which it did not advance) is filled from NVML's power reading × time and marked
  "filled", as Zeus does; without a power reading it is unmeasured.
- nvml-power: NVML power samples (older GPUs) taken by a thread every `interval`
  seconds and integrated with the trapezoid rule.
- rapl: the Linux powercap RAPL package counters (Intel, and AMD on recent kernels),
  summed over packages. Whole-socket: other processes count too. A thread reads them
  every `poll_s` during the window, so a long window that wraps the counter more than
  once is still counted; an unreadable counter (permission) makes the window unmeasured.
(cpu-estimate, the fallback of lowest priority, is the core's: harness/default_plugins.py,
so a run without this plugin still has a meter.)
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import torch

from harness.api import EnergyMeter, EnergyReading


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
    #: the counter's update period, at most (NVML's is 20-100 ms)
    update_s = 0.1

    @classmethod
    def unavailable(cls, device):
        return _nvml_unavailable(device, lambda nv, h: nv.nvmlDeviceGetTotalEnergyConsumption(h))

    def __init__(self, device, **_ignored):
        super().__init__(device)
        self.nv = _pynvml()
        self.handle = _nvml_handle(device)

    def _power_w(self) -> float | None:
        try:
            return self.nv.nvmlDeviceGetPowerUsage(self.handle) / 1000.0
        except Exception:
            return None

    def begin(self):
        _sync(self.device)
        self._p0 = self._power_w()
        self._t0 = time.perf_counter()
        self._e0 = self.nv.nvmlDeviceGetTotalEnergyConsumption(self.handle)  # mJ

    def end(self):
        _sync(self.device)
        e1 = self.nv.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        seconds = time.perf_counter() - self._t0
        joules = (e1 - self._e0) / 1000.0
        if seconds >= self.update_s and joules > 0:
            return EnergyReading(joules, seconds, self.name, False, "whole GPU, all processes")
        # too short for the counter, or it did not advance: power × time instead
        why = (
            f"window {seconds:.3g} s shorter than the counter's update (~{self.update_s:g} s)"
            if seconds < self.update_s
            else f"the counter did not advance in {seconds:.3g} s"
        )
        powers = [p for p in (self._p0, self._power_w()) if p is not None and p > 0]
        if not powers:
            return EnergyReading(None, seconds, self.name, False, f"whole GPU; {why}; no power reading")
        watts = sum(powers) / len(powers)
        return EnergyReading(
            watts * seconds,
            seconds,
            self.name,
            False,
            f"whole GPU; {why}: filled from power {watts:.1f} W × time",
            quality="filled",
        )


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

    #: seconds between reads during a window (a package at 250 W wraps a 2^32 µJ
    #: counter in about 17 s and the usual 262 kJ range in about 17 minutes)
    poll_s = 5.0

    def __init__(self, device, **_ignored):
        super().__init__(device)
        self.pkgs = rapl_packages(rapl_root())
        self.ranges = []
        for p in self.pkgs:
            f = p / "max_energy_range_uj"
            self.ranges.append(int(f.read_text()) if f.exists() else 2**32)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _read(self) -> list[int]:
        return [int((p / "energy_uj").read_text()) for p in self.pkgs]

    def _accumulate(self) -> None:
        """Add the counters' advance since the last read (one wrap at most between reads)."""
        with self._lock:
            if self._error is not None:
                return
            try:
                now = self._read()
            except (OSError, ValueError) as e:
                self._error = f"{type(e).__name__}: {e}"
                return
            for a, b, rng in zip(self._last, now, self.ranges, strict=True):
                self._uj += b - a if b >= a else b + rng - a  # the counter wrapped
            self._last = now

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._accumulate()

    def begin(self):
        self._uj, self._error = 0, None
        self._t0 = time.perf_counter()
        try:
            self._last = self._read()
        except (OSError, ValueError) as e:
            self._error, self._last = f"{type(e).__name__}: {e}", []
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def end(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._accumulate()
        seconds = time.perf_counter() - self._t0
        where = f"{len(self.pkgs)} CPU package(s), all processes"
        if self._error is not None:
            why = f"{where}; counter unreadable: {self._error}"
            return EnergyReading(None, seconds, self.name, False, why)
        return EnergyReading(self._uj / 1e6, seconds, self.name, False, where)
