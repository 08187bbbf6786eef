"""Export an SRN config and its weights for deployment: ONNX or TorchScript.

    python -m srn_d2.tools.export --config-file configs/SRN_R_50_official.yaml \\
        --format onnx --output export/ MODEL.WEIGHTS srn_r50_released.pth

Writes ``model.onnx`` or ``model.ts`` to ``--output``, verified against the
PyTorch model on two image sizes (``srn_d2.deploy.export``). ``--batch`` writes
``model_batched.onnx`` / ``.ts`` instead: a batch of images of any sizes in one
call (``srn_d2.deploy.batched``). With ``--quantize int8 --calibration-dataset
NAME`` also ``model_int8.onnx`` (``model_batched_int8.onnx``), and prints how its
detections compare with fp32's on the calibration images (``srn_d2.deploy.quantize``).

    python -m srn_d2.tools.export --config-file configs/SRN_mini.yaml --batch \
        --quantize int8 --calibration-dataset mini_faces_train MODEL.WEIGHTS model_final.pth

``--input-size WxH`` fixes the one-image ONNX graph to images of that size (after
the test-time resize), such as a camera's frames: onnxruntime then folds the
graph's shape computations away, and ``ONNXFaceDetector`` refuses other sizes.

    python -m srn_d2.tools.export --config-file configs/SRN_MobileNetV3Small_widerface.yaml \
        --input-size 640x480 MODEL.WEIGHTS model_final.pth
"""

import argparse
import logging
import os

from . import run_command


def main(argv=None) -> int:
    return run_command(_export, argv)


def _export(argv) -> int:
    from ..deploy.export import FORMATS, export
    from ..deploy.onnx_runtime import parse_input_size
    from ..deploy.quantize import WEIGHT_BITS
    from ..engine import setup_cfg
    from ..errors import require

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--format", choices=FORMATS, default="onnx")
    parser.add_argument("--output", default="export", help="folder for model.onnx / model.ts")
    parser.add_argument(
        "--batch",
        action="store_true",
        help="export the batched graph (model_batched.*): dynamic batch, height and width",
    )
    parser.add_argument(
        "--quantize",
        choices=("none", "int8"),
        default="none",
        help="int8: also write model_int8.onnx (onnxruntime static quantization of the convolutions)",
    )
    parser.add_argument(
        "--calibration-dataset",
        metavar="NAME",
        help="registered dataset whose images calibrate int8 (e.g. widerface_train, mini_faces_train)",
    )
    parser.add_argument(
        "--calibration-images",
        type=int,
        default=100,
        metavar="N",
        help="how many of its images (default 100)",
    )
    parser.add_argument(
        "--int8-weight-bits",
        type=int,
        choices=WEIGHT_BITS,
        default=WEIGHT_BITS[0],
        help="7 for CPUs without AVX-512 VNNI, whose int8 kernels can overflow on 8-bit weights",
    )
    parser.add_argument(
        "--input-size",
        metavar="WxH",
        help="a one-image ONNX graph for images of this size only (after the test-time resize), "
        "e.g. 640x480: faster, as its shapes are known",
    )
    parser.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="export even if MODEL.WEIGHTS is empty or leaves parameters random",
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs, e.g. MODEL.WEIGHTS FILE"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if args.quantize == "int8":
        require(
            args.format == "onnx",
            "--format",
            args.format,
            "--quantize int8 quantizes the ONNX export",
        )
        require(
            bool(args.calibration_dataset),
            "--calibration-dataset",
            args.calibration_dataset,
            "--quantize int8 needs calibration images: name a registered dataset (e.g. mini_faces_train)",
        )
    input_size = None
    if args.input_size is not None:
        input_size = parse_input_size(args.input_size, "--input-size")
        require(
            args.quantize == "none",
            "--quantize",
            args.quantize,
            "calibrates on images of many sizes, which a --input-size graph does not take",
        )
    cfg = setup_cfg(args.config_file, args.opts)
    if args.quantize == "none":
        export(
            cfg,
            args.format,
            args.output,
            args.allow_random_weights,
            args.batch,
            input_size=input_size,
        )
        return 0
    from ..deploy.export import exported_file
    from ..deploy.quantize import calibration_images, int8_path, quantize_int8
    from ..utils.file_io import atomic_write_path, check_output_path

    # Both outputs checked, and the calibration images read, before anything is written.
    path = check_output_path(os.path.join(args.output, exported_file(args.format, args.batch)))
    twin = check_output_path(int8_path(path))
    images = calibration_images(cfg, args.calibration_dataset, args.calibration_images)
    # The pair is written beside its targets and renamed into place together, the int8 twin first:
    # a failure leaves both previous files; only a kill between the two renames leaves a new twin
    # beside an old model, which their export ids (ONNXFaceDetector) then tell apart.
    with atomic_write_path(path) as staged, atomic_write_path(twin) as staged_twin:
        export(
            cfg, args.format, args.output, args.allow_random_weights, args.batch, output_path=staged
        )
        quantize_int8(staged, images, output_path=staged_twin, weight_bits=args.int8_weight_bits)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
