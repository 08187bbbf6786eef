"""The benchmark's measuring tools: CPU peak memory, median time and the ratio table."""

import gc
import itertools

import torch

import pytest

from srn_d2.utils.measure import PeakMemory, cpu_name, format_table, median_time

MIB = 1 << 20


def _allocate_and_touch(mib: int) -> torch.Tensor:
    return torch.ones(mib * MIB // 4, dtype=torch.float32)


def test_cpu_peak_sees_memory_that_an_earlier_measurement_freed():
    # The first round of frees makes the allocator keep 1 MiB blocks in its heap; the
    # second round stays there below a live tensor. A measurement that took those
    # freed pages as already resident would report the peak below as about zero.
    for _ in range(2):
        blocks = [_allocate_and_touch(1) for _ in range(150)]
        pin = torch.ones(1024)
        del blocks
        gc.collect()
    with PeakMemory("cpu") as peak:
        again = [_allocate_and_touch(1) for _ in range(100)]
    del again, pin
    assert 90 * MIB <= peak.peak_bytes <= 130 * MIB


def test_cpu_peak_of_a_short_lived_tensor():
    with PeakMemory("cpu", interval=0.0005) as peak:
        tensor = _allocate_and_touch(200)
        float(tensor.sum())
        del tensor
    assert 190 * MIB <= peak.peak_bytes <= 260 * MIB


def test_median_time_runs_warmup_then_reports_the_median():
    calls = itertools.count()
    durations = iter([None, None, 0.0, 0.0, 0.0])

    def fn():
        next(calls)
        next(durations)

    assert median_time(fn, "cpu", iters=3, warmup=2) < 0.01
    assert next(calls) == 5


def test_format_table_gives_ratios_to_the_baseline_row():
    rows = [{"name": "a", "ms": 10.0, "n": 4.0}, {"name": "b", "ms": 25.0, "n": 0.0}]
    lines = format_table(rows, ["name", "ms", "n"], baseline=rows[0]).splitlines()
    assert lines[0].split() == ["name", "ms", "n"]
    assert lines[2].split() == ["a", "10.00", "(x1.00)", "4.00", "(x1.00)"]
    assert lines[3].split() == ["b", "25.00", "(x2.50)", "0.00", "(x0.00)"]


@pytest.mark.parametrize(
    "flags, named",
    [
        ("fpu sse2 avx avx2 fma avx512f avx512bw", "AMD EPYC (AVX-512)"),
        ("fpu sse2 avx avx2 fma", "AMD EPYC (AVX2)"),
        ("fpu sse2 avx", "AMD EPYC"),
    ],
)
def test_cpu_name_gives_the_widest_vector_extension(tmp_path, flags, named):
    cpuinfo = tmp_path / "cpuinfo"
    processor = f"processor\t: {{}}\nmodel name\t: AMD EPYC\nflags\t\t: {flags}\n\n"
    cpuinfo.write_text(processor.format(0) + processor.format(1))
    assert cpu_name(str(cpuinfo)) == named
