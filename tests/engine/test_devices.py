"""Where training runs: CUDA asked for without it, a CPU config under --num-gpus on a GPU machine,
and deterministic training. What needs a GPU is emulated by making torch report one or none."""

import os
import subprocess
import sys

import pytest
import torch

from srn_d2.engine.defaults import resolve_device
from srn_d2.engine.determinism import enable_deterministic_training
from srn_d2.errors import ConfigValueError
from srn_d2.tools.train_net import run
from srn_testing import REPO_ROOT as ROOT, build_tiny_srn, tiny_srn_cfg

MINI = os.path.join(ROOT, "configs", "SRN_mini.yaml")


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


@pytest.mark.parametrize(
    "build, cause", [(None, "CPU-only build"), ("12.8", "built for CUDA 12.8 but finds no GPU")]
)
def test_training_on_cuda_without_it_stops_and_says_why(no_gpu, monkeypatch, build, cause):
    monkeypatch.setattr(torch.version, "cuda", build)
    with pytest.raises(
        ConfigValueError, match=f"MODEL.DEVICE = 'cuda': this torch .* {cause}.*TORCH_INDEX_URL"
    ):
        resolve_device("cuda", "MODEL.DEVICE", training=True)


def test_evaluating_on_cuda_without_it_runs_on_the_cpu_with_a_warning(no_gpu, caplog):
    assert resolve_device("cuda:1", "MODEL.DEVICE") == "cpu"
    assert "MODEL.DEVICE = 'cuda:1'" in caplog.text and "running on the CPU" in caplog.text


def test_a_cpu_config_on_several_processes(no_gpu):
    # Without CUDA, Detectron2's launch joins the processes over GLOO: CPU training works.
    assert resolve_device("cpu", "MODEL.DEVICE", training=True, num_gpus=2) == "cpu"


def test_a_cpu_config_on_several_gpus_is_refused_by_name(gpus):
    with pytest.raises(ConfigValueError, match="MODEL.DEVICE = 'cpu' with --num-gpus 2.*NCCL"):
        resolve_device("cpu", "MODEL.DEVICE", training=True, num_gpus=2)
    assert resolve_device("cuda", "MODEL.DEVICE", training=True, num_gpus=2) == "cuda"
    assert resolve_device("cpu", "MODEL.DEVICE", training=True, num_gpus=1) == "cpu"


@pytest.mark.parametrize(
    "config, overrides, key",
    [
        (MINI, ["MODEL.DEVICE", "cuda"], "MODEL.DEVICE = 'cuda'"),
        (
            os.path.join(ROOT, "configs", "SRN_mini.py"),
            ["train.device=cuda"],
            "train.device = 'cuda'",
        ),
    ],
    ids=["yaml", "lazy"],
)
def test_train_net_asked_for_cuda_without_it_exits_with_one_line(
    no_gpu, tmp_path, capsys, config, overrides, key
):
    output = (
        [f"train.output_dir={tmp_path}"]
        if config.endswith(".py")
        else ["OUTPUT_DIR", str(tmp_path)]
    )
    assert run(["--config-file", config, *output, *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {key}") and len(err.strip().splitlines()) == 1


def test_train_net_refuses_a_cpu_config_on_gpus_before_starting_processes(gpus, tmp_path, capsys):
    assert run(["--config-file", MINI, "--num-gpus", "2", "OUTPUT_DIR", str(tmp_path)]) == 2
    assert "MODEL.DEVICE = 'cpu' with --num-gpus 2" in capsys.readouterr().err
    assert not os.listdir(tmp_path)


# ------------------------------------------------------------------ deterministic training


@pytest.fixture
def restore_determinism():
    yield
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = False


def test_bilinear_upsampling_on_a_gpu_is_refused_by_its_key(restore_determinism):
    model = build_tiny_srn()  # the default top-down upsampling: bilinear
    with pytest.raises(
        ConfigValueError, match="FUSE_UPSAMPLE = 'bilinear'.*set MODEL.SRN.FUSE_UPSAMPLE nearest"
    ):
        enable_deterministic_training(model, "cuda", "MODEL.SRN.FUSE_UPSAMPLE")
    assert not torch.are_deterministic_algorithms_enabled()
    with pytest.raises(ConfigValueError, match="CUDNN_BENCHMARK"):
        enable_deterministic_training(model, "cpu", "MODEL.SRN.FUSE_UPSAMPLE", cudnn_benchmark=True)
    cfg = tiny_srn_cfg()
    cfg.MODEL.SRN.FUSE_UPSAMPLE = "nearest"
    enable_deterministic_training(build_tiny_srn(cfg), "cuda", "MODEL.SRN.FUSE_UPSAMPLE")
    assert torch.are_deterministic_algorithms_enabled()


def _train_deterministic(tmp_path, datasets, name):
    out = tmp_path / name
    env = dict(os.environ, SRN_DATASETS=datasets, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        os.path.join(ROOT, "train_net.py"),
        "--config-file",
        MINI,
        "DETERMINISTIC",
        "True",
        "SOLVER.MAX_ITER",
        "2",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "INPUT.SQUARE_SIZE_TRAIN",
        "128",
        "SOLVER.WARMUP_ITERS",
        "1",
        "SOLVER.STEPS",
        "()",
        "TEST.EVAL_PERIOD",
        "0",
        "DATASETS.TEST",
        "()",
        "OUTPUT_DIR",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "deterministic training" in (out / "log.txt").read_text()
    return torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["model"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_deterministic_training_steps_and_repeats_bit_for_bit(tmp_path, mini_faces_root):
    first, second = (_train_deterministic(tmp_path, mini_faces_root, name) for name in "ab")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
