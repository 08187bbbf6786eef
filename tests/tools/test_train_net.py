"""train_net.py end to end on the CPU: two processes (GLOO), checkpoints and --resume."""

import os
import subprocess
import sys

import pytest
import torch
from srn_testing import REPO_ROOT as ROOT

# Every run of this file reads the session's one generated mini_faces.
pytestmark = pytest.mark.usefixtures("mini_faces_in_environment")


# A few iterations of the mini config at a small size.
TINY = [
    "SOLVER.IMS_PER_BATCH",
    "4",
    "INPUT.SQUARE_SIZE_TRAIN",
    "128",
    "SOLVER.WARMUP_ITERS",
    "1",
    "SOLVER.STEPS",
    "()",
    "DATALOADER.NUM_WORKERS",
    "0",
    "TEST.EVAL_PERIOD",
    "0",
    "DATASETS.TEST",
    "()",
]


def _train(tmp_path, out, *extra, num_gpus=1):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        os.path.join(ROOT, "train_net.py"),
        "--config-file",
        os.path.join(ROOT, "configs/SRN_mini.yaml"),
        "--num-gpus",
        str(num_gpus),
        *extra,
        *TINY,
        "OUTPUT_DIR",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _iteration_of(checkpoint):
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["iteration"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_processes_train_and_checkpoint(tmp_path):
    out = tmp_path / "out"
    log = _train(tmp_path, out, "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2", num_gpus=2)
    assert "World size: 2" in log and (out / "log.txt.rank1").exists()
    assert _iteration_of(out / "model_final.pth") == 3
    assert (out / "model_0000001.pth").exists()
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_resume_continues_from_last_checkpoint(tmp_path):
    out = tmp_path / "out"
    _train(tmp_path, out, "SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "2")
    # An interrupted run of 6 iterations: its last checkpoint is the one after iteration 2.
    os.remove(out / "model_final.pth")
    (out / "last_checkpoint").write_text("model_0000001.pth")
    _train(tmp_path, out, "--resume", "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "2")
    log = (out / "log.txt").read_text()
    assert f"Loading trainer from {out / 'model_0000001.pth'}" in log
    assert "Starting training from iteration 2" in log
    assert _iteration_of(out / "model_final.pth") == 5
