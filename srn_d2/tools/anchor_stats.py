"""How well anchor configurations cover real faces.

    python -m srn_d2.tools.anchor_stats --gt datasets/widerface/wider_face_split/wider_face_val.mat
    python -m srn_d2.tools.anchor_stats --gt GT --config-file configs/SRN_R_50_official.yaml --scale 0.5

Prints, per anchor configuration (default: SRN's and Detectron2's RetinaNet's),
the fraction of faces whose best anchor reaches each IoU threshold and the mean
number of anchors per face at or above it. How the anchors are laid over images
of unknown size, and why the count is exact: ``srn_d2.apps.anchor_coverage``.
"""

import argparse

from . import run_command


def main(argv=None) -> int:
    return run_command(_anchor_stats, argv)


def _anchor_stats(argv) -> int:
    from ..apps.anchor_coverage import anchor_coverage

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--gt", required=True, help="wider_face_<split>.mat, its folder, or a _bbx_gt.txt file"
    )
    parser.add_argument(
        "--split", default="val", help="split of the .mat file when --gt is a folder"
    )
    parser.add_argument(
        "--config-file",
        action="append",
        default=[],
        help="anchor config (repeatable; default: SRN and RetinaNet)",
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="test scale applied to images and faces"
    )
    parser.add_argument("--max-images", type=int, default=0, help="first N images only (0 = all)")
    parser.add_argument(
        "--image-size", type=int, nargs=2, metavar=("H", "W"), help="input size of every image"
    )
    parser.add_argument("--size-divisibility", type=int, default=128)
    parser.add_argument("--iou", type=float, nargs="+", default=[0.5, 0.7], help="IoU thresholds")
    args = parser.parse_args(argv)

    _, report = anchor_coverage(
        args.gt,
        args.split,
        args.config_file,
        args.scale,
        args.max_images,
        args.image_size,
        args.size_divisibility,
        args.iou,
    )
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
