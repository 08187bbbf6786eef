"""The GPU check: SRN and Detectron2's RetinaNet as their users run them on a GPU, in one process
(the library behind ``python -m srn_d2.tools.benchmark_gpu``).

For each model, in float32 and under mixed precision: training at the paper's setting (1024 px
crops, 4 images a GPU; random face-like boxes), images a second, peak memory, whether every
loss stayed finite, the GradScaler's scale at the end, and the host syncs of one step;
inference milliseconds at 640x480 and 1024x1024. Then an export of the GPU config that must
verify, and, with two GPUs or more, ``train_net.py --num-gpus 2`` for 20 steps and the same AP
from a 1-GPU and a 2-GPU ``--eval-only``. Without CUDA the same code runs as a smoke test on the
CPU (the mini configs, small sizes, a few steps, bfloat16 for mixed precision).
"""

import logging
import os
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from .. import model_zoo
from ..engine.defaults import setup_cfg
from ..engine.trainer import SRNTrainer
from ..utils.dispatch_count import DispatchCount
from ..utils.measure import PeakMemory, MIB, interleaved_median_ms
from .benchmark import training_batch

__all__ = ["CheckSettings", "FULL", "SMOKE", "run_gpu_check"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckSettings:
    configs: Tuple[str, str]  # SRN's, then RetinaNet's (the baseline)
    crop: int  # square training crops
    images_per_step: int
    steps: int  # timed training steps (after two to warm up)
    faces: int  # per training image
    infer_sizes: Tuple[Tuple[int, int], ...]  # (height, width)
    infer_runs: int


FULL = CheckSettings(
    ("SRN_R_50_FPN_widerface.yaml", "RetinaNet_R_50_FPN_widerface.yaml"),
    1024,
    4,
    30,
    20,
    ((480, 640), (1024, 1024)),
    10,
)
SMOKE = CheckSettings(
    ("SRN_mini.yaml", "RetinaNet_mini.yaml"), 96, 2, 2, 5, ((48, 64), (96, 96)), 1
)


def _model_cfg(config: str, device: str):
    return setup_cfg(
        model_zoo.get_config_file(config), ["MODEL.DEVICE", device, "MODEL.WEIGHTS", ""]
    )


def _train(cfg, device: str, settings: CheckSettings, amp: bool) -> Dict[str, object]:
    """Training steps of a fresh model: images a second, peak memory, finite losses, scale, syncs."""
    on_cuda = device.startswith("cuda")
    torch.manual_seed(0)
    model = build_model(cfg).train()
    # The config's learning rate at its batch, scaled to this one (Detectron2's linear rule).
    cfg = cfg.clone()
    cfg.defrost()
    cfg.SOLVER.BASE_LR *= settings.images_per_step / cfg.SOLVER.IMS_PER_BATCH
    optimizer = SRNTrainer.build_optimizer(cfg, model)
    scaler = torch.amp.GradScaler("cuda") if amp and on_cuda else None
    batch = training_batch(settings.crop, settings.images_per_step, settings.faces, device)
    dtype = torch.float16 if on_cuda else torch.bfloat16
    losses_seen = []

    def forward_backward():
        with torch.autocast(torch.device(device).type, dtype=dtype, enabled=amp):
            losses = model(batch)
        total = sum(losses.values())
        (total if scaler is None else scaler.scale(total)).backward()
        losses_seen.append(torch.stack([v.detach().float() for v in losses.values()]))

    def update():
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()

    def step():
        optimizer.zero_grad()
        forward_backward()
        update()

    with EventStorage():
        for _ in range(2):
            step()
        with PeakMemory(device) as peak:
            (ms,) = interleaved_median_ms([step], settings.steps, 0, device)
        optimizer.zero_grad()
        # The model's part of the step: the optimizer's own reads are the same for both models.
        with DispatchCount() as count:
            forward_backward()
        update()
        cuda_syncs = _cuda_syncs(step) if on_cuda else None
    return {
        "train_img_s": 1000.0 * settings.images_per_step / ms,
        "train_ms": ms,
        "train_peak_MiB": peak.peak_bytes / MIB,
        "losses_finite": str(bool(torch.isfinite(torch.stack(losses_seen)).all())),
        "grad_scale": f"{scaler.get_scale():g}" if scaler is not None else "-",
        "syncs_step": float(count.total_syncs),
        "cuda_syncs_step": float(cuda_syncs) if cuda_syncs is not None else "-",
    }


def _cuda_syncs(step) -> int:
    """Synchronizations CUDA reports in one call of ``step`` (``torch.cuda.set_sync_debug_mode``)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught)


def _inference_ms(cfg, device: str, settings: CheckSettings, amp: bool) -> Dict[str, float]:
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    dtype = torch.float16 if device.startswith("cuda") else torch.bfloat16
    row = {}
    for height, width in settings.infer_sizes:
        image = torch.randint(
            0, 256, (3, height, width), generator=torch.Generator().manual_seed(1)
        ).float()
        inputs = [{"image": image.to(device)}]

        def infer():
            with (
                torch.no_grad(),
                torch.autocast(torch.device(device).type, dtype=dtype, enabled=amp),
            ):
                model(inputs)

        (row[f"infer_ms_{width}x{height}"],) = interleaved_median_ms(
            [infer], settings.infer_runs, 2, device
        )
    return row


def _export(config: str, device: str, folder: str) -> str:
    """Export the config as a GPU user has it (MODEL.DEVICE of the GPU): "verified", or the error."""
    from ..deploy.export import export

    cfg = _model_cfg(config, "cpu").clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = device
    try:
        export(cfg, "onnx", folder, allow_random_weights=True)
    except Exception as error:  # the table reports it: the check goes on with the other parts
        return f"FAILED: {type(error).__name__}: {error}"
    return "verified"


def _two_gpu_runs(folder: str) -> List[str]:
    """20 steps of ``--num-gpus 2``, then the same AP from 1 and 2 GPUs evaluating its weights."""
    train_net = [
        sys.executable,
        "-m",
        "srn_d2.tools.train_net",
        "--config-file",
        model_zoo.get_config_file("SRN_mini.yaml"),
    ]
    common = ["MODEL.DEVICE", "cuda", "OUTPUT_DIR", folder, "DATALOADER.NUM_WORKERS", "2"]
    env = dict(os.environ, SRN_DATASETS=os.path.join(folder, "datasets"))

    def run(*args):
        proc = subprocess.run([*train_net, *args, *common], env=env, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        return proc.stdout

    run(
        "--num-gpus",
        "2",
        "SOLVER.MAX_ITER",
        "20",
        "SOLVER.WARMUP_ITERS",
        "5",
        "SOLVER.STEPS",
        "()",
        "TEST.EVAL_PERIOD",
        "0",
        "DATASETS.TEST",
        "()",
    )
    weights = os.path.join(folder, "model_final.pth")
    results = [
        _ap_line(run("--num-gpus", str(n), "--eval-only", "MODEL.WEIGHTS", weights)) for n in (1, 2)
    ]
    same = "the same" if results[0] == results[1] else "DIFFERENT"
    return [
        f"--num-gpus 2: 20 steps trained; --eval-only AP on 1 GPU {results[0]}, on 2 GPUs {results[1]}: {same}"
    ]


def _ap_line(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if "copypaste:" in line]
    return lines[-1].split("copypaste:", 1)[1].strip() if lines else "(no AP printed)"


def run_gpu_check(
    device: str, settings: CheckSettings, export_folder: Optional[str] = None
) -> Tuple[List[dict], List[str]]:
    """The check's rows (model x precision) and its summary lines (goals, export, several GPUs)."""
    rows = []
    for config in settings.configs:
        cfg = _model_cfg(config, device)
        for amp in (False, True):
            row = {
                "config": config,
                "precision": ("fp16" if device.startswith("cuda") else "bf16") if amp else "fp32",
            }
            row.update(_train(cfg, device, settings, amp))
            row.update(_inference_ms(cfg, device, settings, amp))
            rows.append(row)
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    srn_fp32, srn_amp, retina_fp32, retina_amp = rows
    lines = [
        f"goal AMP >= 1.5x fp32 img/s (SRN): x{srn_amp['train_img_s'] / srn_fp32['train_img_s']:.2f}",
        f"goal SRN step <= 1.5x RetinaNet's: fp32 x{srn_fp32['train_ms'] / retina_fp32['train_ms']:.2f}, "
        f"AMP x{srn_amp['train_ms'] / retina_amp['train_ms']:.2f}",
    ]
    with tempfile.TemporaryDirectory() as folder:
        lines.append(
            f"export of {settings.configs[0]} with MODEL.DEVICE {device}: "
            f"{_export(settings.configs[0], device, export_folder or folder)}"
        )
    if device.startswith("cuda") and torch.cuda.device_count() >= 2:
        with tempfile.TemporaryDirectory() as folder:
            try:
                lines += _two_gpu_runs(folder)
            except RuntimeError as error:
                lines.append(f"--num-gpus 2: FAILED: {error}")
    else:
        lines.append("--num-gpus 2: skipped (fewer than two GPUs)")
    return rows, lines


COLUMNS = [
    "config",
    "precision",
    "train_img_s",
    "train_peak_MiB",
    "losses_finite",
    "grad_scale",
    "syncs_step",
    "cuda_syncs_step",
]


def infer_columns(settings: CheckSettings) -> List[str]:
    return [f"infer_ms_{w}x{h}" for h, w in settings.infer_sizes]
