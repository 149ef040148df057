"""Peak memory of a cell (harness/memory.py): the peak over the cell's own window, not
the process's high-water mark since it started; CUDA's through torch's allocator."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from harness import memory
from harness.memory import MIB, PeakMemory


def _touch(mib: int) -> np.ndarray:
    """An array of `mib` MiB whose pages are all resident."""
    a = np.empty(mib * MIB, dtype=np.uint8)
    a.fill(1)
    return a


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel-peak", "sampled"])
def test_the_peak_is_the_windows_own_not_the_processes_high_water_mark(kernel):
    if kernel and not memory.reset_kernel_peak():
        pytest.skip("this kernel does not let a process reset its peak RSS (/proc/self/clear_refs)")
    before = _touch(300)  # a peak before the window, higher than the window's own
    del before
    m = PeakMemory("cpu", kernel=kernel)
    m.start()
    inside = _touch(120)
    time.sleep(4 * memory.SAMPLE_S)  # (the sampler sees it)
    del inside
    got = m.stop()
    assert got["rss_method"] == ("kernel-peak" if kernel else "sampled")
    grew = got["peak_rss_mib"] - got["start_rss_mib"]
    assert 110 <= grew < 250, got  # the 120 MiB inside counted; the 300 MiB before not
    assert got["cuda_max_allocated_mib"] is None
    assert m.stop() is None  # (stopped once)


class FakeAllocator:
    """torch.cuda's peak statistics as the caching allocator keeps them."""

    def __init__(self) -> None:
        self.current = self.peak = 0
        self.resets: list[torch.device] = []

    def alloc(self, n: int) -> None:
        self.current += n
        self.peak = max(self.peak, self.current)

    def free(self, n: int) -> None:
        self.current -= n

    def reset_peak_memory_stats(self, device=None) -> None:
        self.resets.append(device)
        self.peak = self.current

    def max_memory_allocated(self, device=None) -> int:
        return self.peak


def test_cuda_peak_is_torchs_max_allocated_since_the_cell_started(monkeypatch):
    fake = FakeAllocator()
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", fake.reset_peak_memory_stats)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", fake.max_memory_allocated)
    fake.alloc(100 * MIB)  # an earlier cell's peak
    fake.free(100 * MIB)
    fake.alloc(8 * MIB)  # held across cells (e.g. cached data)
    m = PeakMemory("cuda:0")
    m.start()
    fake.alloc(30 * MIB)
    fake.free(30 * MIB)
    got = m.stop()
    assert fake.resets == [torch.device("cuda", 0)]
    assert got["cuda_max_allocated_mib"] == pytest.approx(38.0)


REUSE_SCRIPT = """
import resource, sys, torch
from harness import memory
if sys.argv[1] == "retain":
    assert memory.retain_freed_memory()
faults = []
for _ in range(20):  # a training step's activations: allocated, touched, freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(16 * 2**20)  # 64 MiB
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[10:]))  # (the steady state: torch's aligned blocks settle in a few steps)
"""


def _faults(mode: str) -> int:
    import subprocess
    import sys

    cmd = [sys.executable, "-c", REUSE_SCRIPT, mode]
    return int(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()[-1])


@pytest.mark.skipif(
    memory._glibc() is None or "LD_PRELOAD" in os.environ or any(k.startswith("MALLOC_") for k in os.environ),
    reason="the law is glibc's malloc at its defaults (no preloaded allocator, no MALLOC_ settings)",
)
def test_freed_memory_is_reused_without_page_faults_and_given_back_when_a_cell_starts():
    # the law: blocks freed by one step are the next step's, not fresh pages from the kernel
    default, kept = _faults("default"), _faults("retain")
    pages = 64 * MIB // 4096
    assert default > 5 * pages  # (glibc's default: every 64 MiB block unmapped, faulted again)
    assert kept < pages // 4, (default, kept)  # (10 steps: under a quarter of one block)
    # in this process: what was freed stays resident until a cell's window starts
    assert memory.retain_freed_memory()
    rss = PeakMemory("cpu").process.memory_info
    base = rss().rss
    block = _touch(200)
    del block
    assert rss().rss - base > 150 * MIB  # kept for reuse
    m = PeakMemory("cpu")
    m.start()
    assert m.stop()["start_rss_mib"] * MIB - base < 50 * MIB  # given back by the cell's start


def test_a_cell_gives_freed_memory_back_when_it_starts_and_when_it_ends(write_grid, tmp_path, monkeypatch):
    # (so its peak counts from live memory, and an idle worker holds only live memory)
    from harness.grid import load_grid
    from harness.plugins import get_registry
    from harness.runner import RunOptions, cell, run_cell

    calls = []
    monkeypatch.setattr(memory, "release_freed_memory", lambda: calls.append("start"))
    monkeypatch.setattr(cell, "release_freed_memory", lambda: calls.append("end"))
    spec = load_grid(write_grid(distillers="[none]"), get_registry()).cells[0].spec
    record = run_cell(spec, "g", RunOptions(teacher_dir=str(tmp_path / "t")))
    assert record["status"] == "ok", record.get("error")
    assert calls == ["start", "end"]
