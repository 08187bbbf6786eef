"""Export an SRN config and its weights for deployment: ONNX or TorchScript.

    python -m srn_d2.tools.export --config-file configs/SRN_R_50_official.yaml \\
        --format onnx --output export/ MODEL.WEIGHTS srn_r50_released.pth

Writes ``model.onnx`` or ``model.ts`` to ``--output``, verified against the
PyTorch model on two image sizes (``srn_d2.deploy.export``).
"""
import argparse
import logging

from . import run_command


def main(argv=None) -> int:
    return run_command(_export, argv)


def _export(argv) -> int:
    from ..deploy.export import FORMATS, export
    from ..engine import setup_cfg

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--format", choices=FORMATS, default="onnx")
    parser.add_argument("--output", default="export", help="folder for model.onnx / model.ts")
    parser.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="export even if MODEL.WEIGHTS is empty or leaves parameters random",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs, e.g. MODEL.WEIGHTS FILE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    export(setup_cfg(args.config_file, args.opts), args.format, args.output, args.allow_random_weights)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
