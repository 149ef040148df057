"""Energy meters. NVML and RAPL are exercised through stand-ins of the hardware
interfaces (a fake pynvml module, a fake powercap tree), so the meters' own logic —
counter deltas, wrap-around, power integration, device sync, MIG refusal, selection
order — runs here on a CPU."""

from __future__ import annotations

import os
import sys
import time
import types

import pytest
import torch

from harness import energy
from harness.default_plugins import CpuTimeEstimate
from harness.plugins import get_registry
from harness_energy import meters


class FakeNVML(types.ModuleType):
    """Enough of pynvml: a GPU whose energy counter and power we control."""

    class NVMLError(Exception):
        pass

    def __init__(self, energy_mj=1_000_000, power_mw=150_000, mig=0, energy_supported=True):
        super().__init__("pynvml")
        self.energy_mj, self.power_mw, self.mig = energy_mj, power_mw, mig
        self.energy_supported = energy_supported
        self.inits = 0

    def nvmlInit(self):
        self.inits += 1

    def nvmlDeviceGetHandleByPciBusId(self, bus):
        return ("gpu", bus)

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("gpu", i)

    def nvmlDeviceGetMigMode(self, h):
        return (self.mig, self.mig)

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        if not self.energy_supported:
            raise self.NVMLError("Not Supported")
        return self.energy_mj

    def nvmlDeviceGetPowerUsage(self, h):
        return self.power_mw


@pytest.fixture
def fake_gpu(monkeypatch):
    nv = FakeNVML()
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    syncs = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: syncs.append(device))
    monkeypatch.setattr(
        torch.cuda,
        "get_device_properties",
        lambda i: types.SimpleNamespace(pci_domain_id=0, pci_bus_id=0x3B, pci_device_id=0),
    )
    nv.syncs = syncs
    return nv


CUDA = torch.device("cuda", 0)


def test_nvml_energy_counter_reads_the_delta_after_syncing(fake_gpu):
    assert meters.NvmlEnergyCounter.unavailable(CUDA) is None
    m = meters.NvmlEnergyCounter(CUDA)
    m.update_s = 0.0  # (this window is instantaneous; filling short windows is tested below)
    assert m.handle == ("gpu", "00000000:3B:00.0")
    m.begin()
    fake_gpu.energy_mj += 12_345  # the GPU spent 12.345 J
    r = m.end()
    assert r.joules == pytest.approx(12.345)
    assert r.meter == "nvml-energy" and not r.estimate and r.quality == "measured"
    assert len(fake_gpu.syncs) == 2  # synchronised at both ends of the window


def test_nvml_power_sampling_integrates_power(fake_gpu):
    m = meters.NvmlPowerSampling(CUDA)
    m.interval = 0.01
    m.begin()
    time.sleep(0.2)
    r = m.end()
    # constant 150 W: energy = 150 W × the window's sampled span
    assert r.joules == pytest.approx(150.0 * r.seconds, rel=1e-6)
    assert r.seconds >= 0.19 and len(m._samples) >= 5


def test_trapezoid_integration_by_hand():
    assert meters.integrate([(0.0, 100.0), (1.0, 200.0), (3.0, 200.0)]) == pytest.approx(550.0)
    assert meters.integrate([(0.0, 5.0)]) == 0.0


def test_nvml_refuses_mig_and_cpu_and_unsupported(fake_gpu):
    assert meters.NvmlEnergyCounter.unavailable(torch.device("cpu")) == "not a CUDA device"
    fake_gpu.mig = 1
    assert "MIG is enabled" in meters.NvmlEnergyCounter.unavailable(CUDA)
    fake_gpu.mig = 0
    fake_gpu.energy_supported = False
    assert "Not Supported" in meters.NvmlEnergyCounter.unavailable(CUDA)
    # a pre-Volta GPU: the counter is missing, power sampling is chosen instead
    m = energy.select_meter(get_registry(), CUDA)
    assert m.name == "nvml-power"


def test_selection_prefers_the_energy_counter_on_cuda(fake_gpu):
    m = energy.select_meter(get_registry(), CUDA)
    assert m.name == "nvml-energy"


def make_rapl(root, packages):
    for i, (uj, rng) in enumerate(packages):
        d = root / f"intel-rapl:{i}"
        d.mkdir(parents=True)
        (d / "energy_uj").write_text(str(uj))
        (d / "max_energy_range_uj").write_text(str(rng))
        sub = root / f"intel-rapl:{i}:0"  # a sub-domain (core): must not be double counted
        sub.mkdir()
        (sub / "energy_uj").write_text("0")
    return root


def test_rapl_sums_packages_and_handles_wraparound(tmp_path, monkeypatch):
    root = make_rapl(tmp_path / "powercap", [(1_000_000, 10_000_000), (9_990_000, 10_000_000)])
    monkeypatch.setenv("HARNESS_RAPL_ROOT", str(root))
    cpu = torch.device("cpu")
    assert meters.Rapl.unavailable(cpu) is None
    m = meters.Rapl(cpu)
    assert len(m.pkgs) == 2
    m.begin()
    (root / "intel-rapl:0" / "energy_uj").write_text("3000000")  # +2 J
    (root / "intel-rapl:1" / "energy_uj").write_text("20000")  # wrapped: +30,000 µJ
    r = m.end()
    assert r.joules == pytest.approx(2.03)
    assert energy.select_meter(get_registry(), cpu).name == "rapl"


def test_rapl_unavailable_without_powercap(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_RAPL_ROOT", str(tmp_path / "absent"))
    assert "no RAPL package domains" in meters.Rapl.unavailable(torch.device("cpu"))
    assert energy.select_meter(get_registry(), torch.device("cpu")).name == "cpu-estimate"


def test_cpu_estimate_is_labelled_and_uses_cpu_time(monkeypatch):
    m = CpuTimeEstimate(torch.device("cpu"), cpu_watts_per_core=7.0)
    m.begin()
    t = time.process_time()
    x = 0
    while time.process_time() - t < 0.2:  # burn 0.2 s of CPU
        x += 1
    r = m.end()
    assert r.estimate and r.meter == "cpu-estimate"
    cpu_s = r.joules / 7.0
    assert cpu_s >= 0.18  # the CPU time burnt above (os.times ticks are 10 ms)
    assert cpu_s <= (os.cpu_count() or 1) * r.seconds + 0.05  # no more than the cores allow
    assert "× 7 W/core" in r.detail
    monkeypatch.setenv("HARNESS_CPU_WATTS_PER_CORE", "3.5")
    assert CpuTimeEstimate(torch.device("cpu")).watts == 3.5


def test_explicit_meter_choice_must_be_available():
    from harness.errors import UsageError

    with pytest.raises(UsageError, match="'nvml-energy' is not available on cpu"):
        energy.select_meter(get_registry(), torch.device("cpu"), "nvml-energy")


# ----- readings that cannot lie: short windows, stale counters, wraps, permissions


def test_nvml_short_window_is_filled_from_power_and_marked(fake_gpu):
    m = meters.NvmlEnergyCounter(CUDA)  # update_s 0.1: an inference pass can be shorter
    m.begin()
    fake_gpu.energy_mj += 0  # the counter has not updated yet
    r = energy.trusted(m.end())
    assert r.seconds < m.update_s
    assert r.quality == "filled" and r.joules == pytest.approx(150.0 * r.seconds, rel=1e-6)
    assert "filled from power 150.0 W" in r.detail


def test_nvml_stale_counter_on_a_long_window_is_filled_not_zero(fake_gpu):
    m = meters.NvmlEnergyCounter(CUDA)
    m.update_s = 0.02
    m.begin()
    time.sleep(0.05)  # work, but the counter never advanced (CodeCarbon's silent 0 kWh)
    r = energy.trusted(m.end())
    assert r.quality == "filled" and r.joules > 0 and "did not advance" in r.detail


def test_nvml_stale_counter_without_power_is_unmeasured(fake_gpu):
    fake_gpu.nvmlDeviceGetPowerUsage = lambda h: (_ for _ in ()).throw(fake_gpu.NVMLError("Not Supported"))
    m = meters.NvmlEnergyCounter(CUDA)
    m.begin()
    r = energy.trusted(m.end())
    assert r.joules is None and r.quality == "unmeasured" and "no power reading" in r.detail


def test_a_zero_joule_reading_over_work_is_refused():
    from harness.api import EnergyReading

    r = energy.trusted(EnergyReading(0.0, 2.5, "some-meter", False, "x"))
    assert r.joules is None and r.quality == "unmeasured" and "refused" in r.detail
    assert energy.trusted(EnergyReading(float("nan"), 1.0, "m", False)).joules is None
    assert energy.trusted(EnergyReading(-3.0, 1.0, "m", False)).quality == "unmeasured"
    ok = energy.trusted(EnergyReading(4.0, 1.0, "m", False))
    assert ok.joules == 4.0 and ok.quality == "measured"
    assert EnergyReading(4.0, 1.0, "m", True).quality == "estimated"


def test_rapl_stale_counter_is_unmeasured(tmp_path, monkeypatch):
    root = make_rapl(tmp_path / "powercap", [(1_000_000, 10_000_000)])
    monkeypatch.setenv("HARNESS_RAPL_ROOT", str(root))

    m = meters.Rapl(torch.device("cpu"))
    with energy.Window(m) as w:
        time.sleep(0.01)
    assert w.reading.joules is None and w.reading.quality == "unmeasured"
    assert "refused" in w.reading.detail


def test_rapl_permission_denied_mid_window_is_unmeasured(tmp_path, monkeypatch):
    root = make_rapl(tmp_path / "powercap", [(1_000_000, 10_000_000)])
    monkeypatch.setenv("HARNESS_RAPL_ROOT", str(root))
    m = meters.Rapl(torch.device("cpu"))
    m.begin()

    def denied():
        raise PermissionError(13, "Permission denied", str(root / "intel-rapl:0/energy_uj"))

    monkeypatch.setattr(m, "_read", denied)
    r = energy.trusted(m.end())
    assert r.joules is None and r.quality == "unmeasured" and "Permission denied" in r.detail


def test_rapl_polls_so_several_wraps_in_one_window_are_counted(tmp_path, monkeypatch):
    rng = 10_000_000  # 10 J range
    root = make_rapl(tmp_path / "powercap", [(0, rng)])
    monkeypatch.setenv("HARNESS_RAPL_ROOT", str(root))
    m = meters.Rapl(torch.device("cpu"))
    m.poll_s = 0.01
    f = root / "intel-rapl:0" / "energy_uj"
    m.begin()
    total = 0
    for _ in range(5):  # 5 × 6 J = 30 J: the counter wraps three times
        total += 6_000_000
        tmp = f.with_name("tmp")
        tmp.write_text(str(total % rng))
        os.replace(tmp, f)  # (sysfs reads are atomic; a plain write could be read half done)
        time.sleep(0.1)  # several polls see each value
    r = energy.trusted(m.end())
    assert r.quality == "measured" and r.joules == pytest.approx(30.0)


def test_cpu_estimate_window_under_the_tick_is_not_zero():
    m = CpuTimeEstimate(torch.device("cpu"), cpu_watts_per_core=7.0)
    m._cpu_seconds = lambda: 100.0  # no tick elapsed
    m.begin()
    r = energy.trusted(m.end())
    assert r.joules is not None and r.joules > 0 and r.quality == "estimated"
    assert "under the CPU-time tick" in r.detail


def test_a_cell_that_raises_mid_training_still_closes_its_meters(write_grid, tmp_path, monkeypatch):
    """Every meter a cell opens (the teacher's and its own) is closed, on success and
    when training raises."""
    from harness.api import EnergyMeter, EnergyReading
    from harness.grid import load_grid
    from harness.plugins import get_registry
    from harness.runner import RunOptions, run_cell
    from harness.runner import cell as cell_stage
    from harness.runner import teacher as teacher_stage

    opened: list[EnergyMeter] = []

    class Counting(EnergyMeter):
        name = "counting"

        def __init__(self, device=None, **options):
            self.closed = False
            opened.append(self)

        def begin(self):
            pass

        def end(self):
            return EnergyReading(
                joules=None, seconds=0.0, meter="counting", estimate=True, quality="unmeasured"
            )

        def close(self):
            self.closed = True

    monkeypatch.setattr(cell_stage, "meter_maker", lambda spec, device: Counting)
    monkeypatch.setattr(teacher_stage, "meter_maker", lambda spec, device: Counting)
    cell = next(c for c in load_grid(write_grid(distillers="[kd]"), get_registry()).cells)
    ok = run_cell(cell.spec, "g", RunOptions(teacher_dir=str(tmp_path / "t")))
    assert ok["status"] == "ok", ok.get("error")
    assert len(opened) == 2 and all(m.closed for m in opened)  # (the teacher's and the cell's)

    def boom(*a, **k):
        raise RuntimeError("mid-training")

    opened.clear()
    monkeypatch.setattr(cell_stage, "train_model", boom)
    failed = run_cell(cell.spec, "g", RunOptions(teacher_dir=str(tmp_path / "t")))
    assert failed["status"] == "failed" and "mid-training" in failed["reason"]
    assert len(opened) == 1 and opened[0].closed  # (teacher cached: the cell's meter alone)
