"""The GPU check: SRN R-50 and Detectron2's RetinaNet R-50 trained and run as GPU users run them.

    python -m srn_d2.tools.benchmark_gpu [--device cuda] [--smoke]

Prints one table (a row per model and precision: training images a second at 1024 px crops
and 4 images a step, peak memory, whether every loss stayed finite over the steps, the
GradScaler's scale at the end, the host syncs of one step, counted at the dispatcher in the
model's forward and backward and, on CUDA, as ``torch.cuda.set_sync_debug_mode`` reports them
for the whole step, and inference milliseconds at
640x480 and 1024x1024), then the goals, an export of the GPU config, and with two GPUs or more
20 steps of ``--num-gpus 2`` and the AP of a 1-GPU and a 2-GPU ``--eval-only``. About 5
minutes on one H100. Without CUDA, or with ``--smoke``, it runs the same code on the mini
configs at small sizes for a few steps (library: ``srn_d2.apps.gpu_check``).
"""

import argparse

from . import run_command


def main(argv=None) -> int:
    return run_command(_check, argv)


def _check(argv) -> int:
    import torch

    from ..apps.gpu_check import COLUMNS, FULL, SMOKE, infer_columns, run_gpu_check
    from ..utils.measure import format_table

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--smoke", action="store_true", help="the mini configs, small sizes, a few steps"
    )
    args = parser.parse_args(argv)
    settings = SMOKE if args.smoke or not args.device.startswith("cuda") else FULL
    torch.set_flush_denormal(True)
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    print(
        f"device: {args.device} ({name}), torch {torch.__version__}, {settings.images_per_step} images of "
        f"{settings.crop} px a step, {settings.steps} timed steps"
    )
    rows, lines = run_gpu_check(args.device, settings)
    print(format_table(rows, COLUMNS + infer_columns(settings)))
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
