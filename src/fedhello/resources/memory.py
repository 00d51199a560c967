"""Peak-memory meters for local training: CUDA allocator statistics on GPU, peak RSS on CPU.

Both report the memory *training adds on top of the loaded model* (activations kept for backward,
gradients, optimizer state, temporaries), in MiB. That is the quantity a client's `memory_mb` budget limits.

CPU method: the process's peak resident set (`VmHWM`) is reset through `/proc/self/clear_refs` (Linux)
before training and read after it; the meter reports the peak minus the resident set at the start.
glibc normally keeps freed blocks resident and reuses them, which would hide new allocations, so the first
meter switches the process to "precise" malloc: every allocation of 64 KiB or more is a fresh `mmap`
that is returned on free, and the resident set rises and falls with the live tensors. Measured peaks are
then independent of what ran before (checked: the same layer set measured early or late in a profile
agrees within 0.2 MiB). The price is page faults on every large allocation, so step times measured with
a meter (the profile, `train.record_resources`) are somewhat slower than plain training (~10-25 % more
system time on CPU); the benchmarks that compare throughput run without a meter.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from pathlib import Path

import torch

_M_MMAP_THRESHOLD = -3
_PRECISE_THRESHOLD = 64 * 1024
_NORMAL_THRESHOLD = 32 * 1024 * 1024  # glibc's own upper bound for its dynamic threshold


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _libc()


def precise_malloc(precise: bool) -> bool:
    """Large allocations as fresh mmaps (True, for measuring) or mostly reused heap (False, for speed).
    Returns whether glibc accepted it (False elsewhere, where CPU peaks are less exact)."""
    try:
        threshold = _PRECISE_THRESHOLD if precise else _NORMAL_THRESHOLD
        return bool(_LIBC and _LIBC.mallopt(_M_MMAP_THRESHOLD, threshold))
    except AttributeError:
        return False


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class MemoryMeter:
    """Measures the peak memory added by the code between `start()` and `peak_mb()`."""

    method = "none"

    def start(self) -> None:
        """Begin a measurement window."""

    def peak_mb(self) -> float | None:
        """Peak MiB added since `start()`, or None when this platform cannot measure it."""
        return None


class CudaMeter(MemoryMeter):
    """`torch.cuda.max_memory_allocated` minus what was allocated at the start (tensors only)."""

    method = "cuda max_memory_allocated - allocated at start"

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base = 0

    def start(self) -> None:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.base = torch.cuda.memory_allocated(self.device)

    def peak_mb(self) -> float:
        torch.cuda.synchronize(self.device)
        return (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20


class RssMeter(MemoryMeter):
    """Peak resident set (VmHWM, reset via /proc/self/clear_refs) minus the resident set at the start."""

    method = "cpu peak RSS (VmHWM reset per window, glibc mmap threshold pinned at 64 KiB) - RSS at start"

    def __init__(self) -> None:
        self.base_kib = 0

    @staticmethod
    def available() -> bool:
        return _status_kib("VmHWM") is not None and Path("/proc/self/clear_refs").exists()

    def start(self) -> None:
        precise_malloc(True)
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")  # 5 = reset the peak RSS to the current RSS
        self.base_kib = _status_kib("VmRSS") or 0

    def peak_mb(self) -> float | None:
        peak = _status_kib("VmHWM")
        return None if peak is None else max(peak - self.base_kib, 0) / 1024


def meter_for(device: torch.device) -> MemoryMeter:
    """The right meter for a device: CUDA statistics, Linux RSS, or none."""
    if device.type == "cuda":
        return CudaMeter(device)
    if RssMeter.available():
        return RssMeter()
    return MemoryMeter()
