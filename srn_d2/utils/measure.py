"""Time and peak-memory measurement and the ratio table shared by the benchmark tools."""

import ctypes
import ctypes.util
import gc
import math
import os
import platform
import statistics
import threading
import time
from typing import Callable, Dict, List, Sequence

import torch
from tabulate import tabulate

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MIB = float(1 << 20)


def _find_malloc_trim():
    name = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None


# glibc's; None elsewhere, where the CPU peak stays an estimate without it.
_MALLOC_TRIM = _find_malloc_trim()


def _release_freed_memory() -> None:
    """Hand memory that the allocator keeps after frees back to the OS.

    Without it, a model measured after another reuses the pages the first one
    freed, its resident set does not grow, and its peak reads as zero.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE_SIZE


class PeakMemory:
    """Peak memory above the starting level while the context is open.

    On CUDA it is the allocator's exact peak; on the CPU, PyTorch keeps no
    allocation statistics, so a thread samples the process's resident set
    every ``interval`` seconds (an estimate that can miss very short peaks).
    """

    def __init__(self, device: str, interval: float = 0.001):
        self.device = torch.device(device)
        self.interval = interval
        self.peak_bytes = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            _release_freed_memory()
            self._start = _rss_bytes()
            self._peak = self._start
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._start
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self._peak, _rss_bytes()) - self._start
        return False


def synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def run_times(fn: Callable[[], object], device: str, iters: int, warmup: int) -> List[float]:
    """Wall time of each of ``iters`` runs of ``fn``, in seconds, after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def median_time(fn: Callable[[], object], device: str, iters: int, warmup: int) -> float:
    """Median wall time of ``fn`` in seconds over ``iters`` runs after ``warmup`` runs."""
    return statistics.median(run_times(fn, device, iters, warmup))


def interleaved_median_ms(
    runs: Sequence[Callable[[], object]], iters: int, warmup: int, device: str = "cpu"
) -> List[float]:
    """Median milliseconds of each of ``runs``, timed in turns (A, B, A, B, ...) after
    ``warmup`` runs of each, so that a machine that slows down or speeds up during
    the measurement moves every run alike."""
    for run in runs:
        for _ in range(warmup):
            run()
    times = [[] for _ in runs]
    for _ in range(iters):
        for index, run in enumerate(runs):
            times[index].append(1000 * median_time(run, device, iters=1, warmup=0))
    return [statistics.median(t) for t in times]


def peak_mib(run: Callable[[], object], device: str) -> float:
    """Peak memory of one ``run()`` in MiB, above the level before it (see :class:`PeakMemory`)."""
    gc.collect()
    with PeakMemory(device) as peak:
        run()
    return peak.peak_bytes / MIB


def format_table(rows, columns, baseline: Dict[str, float] = None) -> str:
    """Rows of dicts as a text table; numeric cells get "(x1.23)" ratios to ``baseline``."""

    def cell(column, value):
        if not isinstance(value, float):
            return str(value)
        text = f"{value:.2f}" if value == 0 or 0.01 <= abs(value) < 1e5 else f"{value:.2g}"
        reference = baseline.get(column) if baseline is not None else None
        if isinstance(reference, float) and reference and math.isfinite(value / reference):
            text += f" (x{value / reference:.2f})"
        return text

    cells = [[cell(column, row.get(column, "")) for column in columns] for row in rows]
    return tabulate(cells, headers=columns, disable_numparse=True)


def cpu_name(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name as Linux reports it, with its widest vector extension (onnxruntime's
    convolutions take 16 channels a block with AVX-512 and 8 with AVX2, so the same export runs
    differently on the two), e.g. "AMD EPYC (AVX-512)"; or the platform's processor string."""
    name, flags = "", set()
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not name:
                    name = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    if not name:
        return platform.processor() or "an unnamed CPU"
    extension = next((label for flag, label in _VECTOR_EXTENSIONS if flag in flags), "")
    return f"{name} ({extension})" if extension else name


# Widest first: the cpuinfo flag and how it is written.
_VECTOR_EXTENSIONS = (("avx512f", "AVX-512"), ("avx2", "AVX2"))
