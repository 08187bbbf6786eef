"""The GPU check's CPU smoke run: the same code as on a GPU, so that the prepared check cannot rot."""

import pytest

from srn_d2.tools.benchmark_gpu import main


@pytest.mark.slow
def test_the_gpu_check_runs_on_the_cpu_and_prints_its_table(capsys):
    assert main(["--device", "cpu"]) == 0
    out = capsys.readouterr().out
    rows = [
        line.split() for line in out.splitlines() if line.startswith(("SRN_mini", "RetinaNet_mini"))
    ]
    assert [row[:2] for row in rows] == [
        ["SRN_mini.yaml", "fp32"],
        ["SRN_mini.yaml", "bf16"],
        ["RetinaNet_mini.yaml", "fp32"],
        ["RetinaNet_mini.yaml", "bf16"],
    ]
    assert all(row[4] == "True" for row in rows)  # every loss finite over the steps
    assert "goal AMP >= 1.5x fp32 img/s (SRN): x" in out
    assert "export of SRN_mini.yaml with MODEL.DEVICE cpu: verified" in out
    assert "--num-gpus 2: skipped (fewer than two GPUs)" in out
