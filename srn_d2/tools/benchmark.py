"""Benchmark detectors side by side: parameters, FLOPs, latency, training step, peak memory.

    python -m srn_d2.tools.benchmark \
        --configs SRN_R_50_FPN_widerface.yaml RetinaNet_R_50_FPN_widerface.yaml \
            "SRN_R_50_FPN_widerface.yaml:MODEL.SRN.HEAD_ACTIVATION_CHECKPOINT=towers" \
        --sizes 640x480 1024 [--device cuda] [--amp] [--opts KEY VALUE ...]

Inference is timed end to end, as DefaultPredictor runs it: an OpenCV (BGR,
uint8) image in, detections out; ``--onnx`` also times each config exported
by ``srn_d2.tools.export`` and run by ``ONNXFaceDetector`` on onnxruntime.
Every config is built in this one process and measured on the same inputs;
timed runs go in turns (one run of each config, then the next round), so that
a machine whose speed drifts affects all configs alike. The table gives
absolute values and, in parentheses, ratios to the first config at the same
input size (library: ``srn_d2.apps.benchmark``). Anchor matching alone:
``python benchmarks/benchmark_matching.py``.
"""

import argparse

from . import run_command


def main(argv=None) -> int:
    return run_command(_benchmark, argv)


def _benchmark(argv) -> int:
    import torch

    from ..apps.benchmark import benchmark, parse_size
    from ..utils.measure import format_table

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["SRN_R_50_FPN_widerface.yaml", "RetinaNet_R_50_FPN_widerface.yaml"],
        help="config files or shipped config names, each optionally followed by :KEY=VALUE,... overrides",
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        type=parse_size,
        default=[(1024, 1024)],
        help="image sizes: S (square) or WxH",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--iters", type=int, default=5, help="timed runs per config (median reported)"
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--train-batch", type=int, default=2, help="images per training step; 0 skips training"
    )
    parser.add_argument("--faces", type=int, default=20, help="faces per training image")
    parser.add_argument(
        "--amp",
        action="store_true",
        help="training steps under autocast (bfloat16 on the CPU, float16 on CUDA)",
    )
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="also export each config and time it end to end on onnxruntime (CPU)",
    )
    parser.add_argument(
        "--opts", nargs=argparse.REMAINDER, default=[], help="config overrides for every config"
    )
    args = parser.parse_args(argv)
    # As SRNTrainer does on the CPU, so that training steps are timed as they train.
    torch.set_flush_denormal(True)

    columns = ["config", "size", "params_M", "GFLOPs", "infer_ms", "infer_peak_MiB"]
    columns += ["onnx_ms"] if args.onnx else []
    if args.train_batch > 0:
        columns += ["train_ms", "train_peak_MiB"]
    print(
        f"device: {args.device}, threads: {torch.get_num_threads()}, median of {args.iters} runs taken in turns"
        + (", training under autocast" if args.amp else "")
    )
    for size in args.sizes:
        rows = benchmark(
            args.configs,
            args.opts,
            size,
            args.device,
            args.iters,
            args.warmup,
            args.train_batch,
            args.faces,
            args.amp,
            args.onnx,
        )
        print(format_table(rows, columns, baseline=rows[0]))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
