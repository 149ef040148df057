"""Peak memory of a cell: the process's resident memory (CPU RSS) at its highest during
the cell, and on CUDA the most memory torch's allocator held for tensors.

CPU. `resource.getrusage(...).ru_maxrss` is the process's high-water mark since it
started: it only ever grows, so in a process that runs many cells (`harness run`, a
`-j` worker) it says nothing about one cell. Linux keeps the same peak as `VmHWM` in
/proc/self/status and lets a process reset it: writing "5" to /proc/self/clear_refs
sets it to the current RSS (Linux 4.0 and later). So a cell resets it when it starts and
reads it when it ends: the exact peak over the cell's window, for two small file
operations (about 0.1 ms a cell). Where the reset is refused (another OS, an old kernel,
a read-only /proc), a daemon thread samples psutil's RSS every `SAMPLE_S` seconds
instead (about 50 µs a sample, under 0.1% of a core) and the highest sample is kept:
a spike shorter than the interval can be missed, and the record says "sampled".

The RSS is the whole process's: it includes what the process held before the cell
(the interpreter, torch, datasets cached by earlier cells: `start_rss_mib`), the
teacher's training when the cell trained it, and, where cells share a process at the
same time (threads), the other cells' memory too.

CUDA. `torch.cuda.reset_peak_memory_stats(device)` when the cell starts and
`torch.cuda.max_memory_allocated(device)` when it ends: the peak of the tensors torch's
caching allocator handed out on that device, not its reserved pool, the CUDA context or
other processes.

Freed memory during training. glibc's malloc hands every freed block above its
thresholds back to the kernel (big blocks are unmapped; the heap's free top is
trimmed), so the next step's activations of the same sizes arrive as fresh pages, each
faulted in and zeroed by the kernel. On the 2-core development CPU that was about
147,000 page faults an epoch of 256 CIFAR images for WRN-40-2 → WRN-16-2 KD (4 steps),
and 10-14% of the epoch's time (docs/models.md). `retain_freed_memory` raises both
thresholds for the process (mallopt) when its first training starts: freed blocks stay
in the heap and the next step reuses them. `release_freed_memory` (malloc_trim) gives
the free ones back when a cell starts (`PeakMemory.start`), so each cell's peak RSS
counts from the memory that is live, and when it ends, so an idle worker holds only its
live memory (a Dask worker's memory monitor would otherwise see a finished cell's peak
and could pause it). Neither changes what is computed (torch's CPU tensors are 64-byte
aligned under any allocator). Elsewhere than glibc (macOS, musl) both do nothing. This
is the tuning torch's CPU performance guide does by preloading jemalloc or tcmalloc,
without another library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
import threading
from pathlib import Path
from typing import Any

import psutil

MIB = 1024 * 1024

#: seconds between RSS samples where the kernel's peak cannot be reset
SAMPLE_S = 0.05

#: glibc's mallopt parameters (malloc.h), and the threshold set on both: blocks freed
#: below it stay in the process (the largest the C library accepts, 32 MiB on older ones)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
RETAIN_THRESHOLDS = (1 << 30, 32 * MIB)

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    """A `VmXXX:  N kB` line of /proc/self/status, in KiB (None where there is none)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_kernel_peak() -> bool:
    """Reset the kernel's peak RSS of this process (VmHWM) to its current RSS; False
    where that is not possible here."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    hwm, rss = _status_kib("VmHWM"), _status_kib("VmRSS")
    # a kernel that accepted the write but did not reset keeps an older, higher peak
    return hwm is not None and rss is not None and hwm <= rss + 1024


class PeakMemory:
    """`m = PeakMemory(device); m.start(); ...; m.stop()` -> the record's `memory`:
    {"peak_rss_mib", "start_rss_mib", "rss_method": "kernel-peak" | "sampled",
    "cuda_max_allocated_mib" (None off CUDA)}. `kernel=False` forces sampling."""

    def __init__(self, device: str, kernel: bool = True) -> None:
        self.device = device
        self.kernel = kernel
        self.process = psutil.Process()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak = 0
        self._method = "sampled"
        self._start = 0
        self._started = False

    def _sample(self) -> None:
        try:
            self._peak = max(self._peak, self.process.memory_info().rss)
        except psutil.Error:
            pass

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._sample()

    def start(self) -> None:
        release_freed_memory()  # (the peak counts from live memory, not earlier cells' freed)
        self._start = self.process.memory_info().rss
        self._peak = self._start
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats(torch.device(self.device))
        self._started = True
        if self.kernel and reset_kernel_peak():
            self._method = "kernel-peak"
            return
        self._method = "sampled"
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="harness-rss-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any] | None:
        """The peaks since `start()` (None when it never started)."""
        if not self._started:
            return None
        self._started = False
        cuda = None
        if self.device.startswith("cuda"):
            import torch

            try:
                cuda = torch.cuda.max_memory_allocated(torch.device(self.device)) / MIB
            except RuntimeError:  # (a CUDA error that ended the cell: no reading)
                cuda = None
        if self._method == "kernel-peak":
            hwm = _status_kib("VmHWM")
            peak = hwm * 1024 if hwm is not None else self._start
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self._sample()
            peak = self._peak
        return {
            "peak_rss_mib": peak / MIB,
            "start_rss_mib": self._start / MIB,
            "rss_method": self._method,
            "cuda_max_allocated_mib": cuda,
        }


# --------------------------------------------------------------------------- allocator


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (mallopt and malloc_trim as documented
    above), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    # (musl has no gnu_get_libc_version, and its mallopt does nothing)
    return libc if hasattr(libc, "gnu_get_libc_version") else None


_retaining = False


def retain_freed_memory() -> bool:
    """Keep freed blocks in the process for reuse (module docstring): once per process;
    True where it holds."""
    global _retaining
    libc = _glibc()
    if _retaining or libc is None:
        return _retaining
    for threshold in RETAIN_THRESHOLDS:
        # the mmap threshold first: were it refused, a raised trim threshold alone would
        # fix the mmap one at its 128 KiB default (glibc stops adapting it)
        if libc.mallopt(_M_MMAP_THRESHOLD, threshold) == 1:
            _retaining = libc.mallopt(_M_TRIM_THRESHOLD, threshold) == 1
            break
    return _retaining


def release_freed_memory() -> None:
    """Give the heap's free pages back to the kernel, where `retain_freed_memory` kept
    them."""
    libc = _glibc()
    if _retaining and libc is not None:
        libc.malloc_trim(0)
