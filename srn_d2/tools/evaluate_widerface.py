"""Command line WIDER FACE evaluation of a submission folder.

    python -m srn_d2.tools.evaluate_widerface --pred DIR (--gt-dir DIR | --dataset NAME) \
        [--size-bins 10 20 50] [--json OUT.json] [--plot OUT.png] [--iou 0.5]

Prints the easy / medium / hard AP (at ``--iou``) and the hard-set extras;
``--json`` gets ``{"easy": AP, "medium": AP, "hard": AP}`` with AP in [0, 1].
``--dataset`` takes the ground truth of a registered dataset (e.g. ``mini_faces_val``)
as its evaluator does; ``--size-bins`` adds the AP of the hard set's faces of each
size bin (``widerface_gt.with_size_bins``), also into ``--json``.
"""

import argparse
import json
import os
import sys
import time

from . import run_command
from ..evaluation.prediction_files import list_prediction_ids, read_widerface_predictions
from ..evaluation.widerface_gt import load_widerface_gt_mat, with_size_bins
from ..evaluation.widerface_plot import plot_pr_curves
from ..evaluation.widerface_protocol import WiderFaceMatches, warn_unmatched_ids, widerface_metrics
from ..utils.file_io import write_text


def main(argv=None) -> int:
    return run_command(_evaluate, argv)


def _evaluate(argv) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pred", required=True, help="submission folder: <event>/<image>.txt")
    ground_truth = parser.add_mutually_exclusive_group(required=True)
    ground_truth.add_argument("--gt-dir", help="folder of wider_face_val.mat and wider_*_val.mat")
    ground_truth.add_argument(
        "--dataset", help="a registered dataset's ground truth instead, e.g. mini_faces_val"
    )
    parser.add_argument(
        "--size-bins",
        nargs="+",
        type=float,
        metavar="PX",
        help="also the AP of the hard set's faces between these sizes, sqrt(w * h) in pixels",
    )
    parser.add_argument("--json", help="write {easy, medium, hard} AP in [0, 1] here")
    parser.add_argument("--plot", help="draw the three PR curves into this image")
    parser.add_argument(
        "--iou", type=float, default=0.5, help="IoU threshold of easy/medium/hard AP"
    )
    args = parser.parse_args(argv)
    if not os.path.isdir(args.pred):
        parser.error(f"--pred {args.pred} is not a folder")

    gt = load_widerface_gt_mat(args.gt_dir) if args.gt_dir else _dataset_ground_truth(args.dataset)
    if args.size_bins:
        gt = with_size_bins(gt, args.size_bins, key="--size-bins")
    start = time.perf_counter()
    predictions = read_widerface_predictions(args.pred, gt.image_ids)
    read_s = time.perf_counter() - start
    warn_unmatched_ids(list_prediction_ids(args.pred), gt, what="prediction files")

    start = time.perf_counter()
    matches = WiderFaceMatches(predictions, gt)
    curves = {setting: matches.pr_curve(setting, args.iou) for setting in gt.listed}
    extras, _ = widerface_metrics(matches)
    eval_s = time.perf_counter() - start

    print(f"{'setting':<10} AP (IoU {args.iou:g})  faces")
    for setting, curve in curves.items():
        print(f"{setting:<10} {curve.ap:.4f}  {curve.num_faces}")
    print("hard-set extras (IoU 0.5 unless named):")
    for key, value in extras.items():
        if key not in ("AP_easy", "AP_medium", "AP_hard"):
            shown = f"{value:.4f}" if key.startswith("AP") else f"{value:.0f}"
            print(f"  {key:<16} {shown}")
    print(f"read {len(predictions)} files in {read_s:.2f} s, evaluated in {eval_s:.2f} s")

    if args.json:
        write_text(
            args.json,
            json.dumps({setting: curve.ap for setting, curve in curves.items()}, indent=2),
        )
    if args.plot:
        plot_pr_curves(curves, args.plot, title=f"WIDER FACE val (IoU {args.iou:g})")
    return 0


def _dataset_ground_truth(name: str):
    """The ground truth ``WiderFaceEvaluator`` scores ``name`` with (Detectron2 imported only here)."""
    from ..data.builtin import require_registered_dataset
    from ..evaluation.widerface_evaluator import WiderFaceEvaluator

    return WiderFaceEvaluator(
        require_registered_dataset(name, "--dataset"), distributed=False
    ).ground_truth()


if __name__ == "__main__":
    sys.exit(main())
