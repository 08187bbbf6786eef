"""AFW or PASCAL faces AP of detection files, with the protocol of the face papers' toolbox.

    python -m srn_d2.tools.evaluate_face_benchmark --dataset afw --gt new_annotations_AFW.mat \\
        --det srn.txt [other.txt ...] [--plot pr.png] [--json out.json] [--iterations 5]

A detection file has one line per detection, ``image score x1 y1 x2 y2`` (the
image with or without its extension), as the toolbox reads it and
``train_net.py --eval-only`` writes it (``inference/<dataset>/detections.txt``).
Prints, per file, the AP without and with the toolbox's box calibration; the
PR curves of all files (calibrated, as the papers plot them) go to ``--plot``
(library: ``srn_d2.evaluation.face_benchmarks``; numpy only).
"""

import argparse
import json
import sys

from . import run_command
from ..annotations.face_benchmarks import BENCHMARKS, load_benchmark_mat
from ..evaluation.face_benchmarks import (
    CALIBRATION_ITERATIONS,
    evaluate_benchmark,
    read_benchmark_detections,
)
from ..evaluation.widerface_plot import plot_curves
from ..utils.file_io import write_text

TITLES = {"afw": "AFW", "pascal": "PASCAL faces"}


def main(argv=None) -> int:
    return run_command(_evaluate, argv)


def _evaluate(argv) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset",
        required=True,
        choices=list(BENCHMARKS),
        help="afw: new_annotations_AFW.mat; pascal: Annotations_Face_PASCALLayout_large_fixed.mat",
    )
    parser.add_argument(
        "--gt", required=True, metavar="MAT", help="the toolbox's ground truth of --dataset"
    )
    parser.add_argument("--det", required=True, nargs="+", metavar="FILE", help="detection files")
    parser.add_argument(
        "--iterations",
        type=int,
        default=CALIBRATION_ITERATIONS,
        help="iterations of the box calibration (the toolbox's default: 5)",
    )
    parser.add_argument("--plot", help="the calibrated PR curves of every file, in one image")
    parser.add_argument("--json", help="write {file: {AP, AP_calibrated}} (in [0, 1]) here")
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error("--iterations must be at least 1")

    gt = load_benchmark_mat(args.gt)
    ignored = int(gt.ignored.sum())
    print(
        f"{TITLES[args.dataset]}: {len(gt.keys)} images, {gt.num_faces} faces, {ignored} ignored, "
        f"{gt.num_faces - ignored} scored"
    )
    results = {
        path: evaluate_benchmark(read_benchmark_detections(path, gt), gt, args.iterations)
        for path in args.det
    }
    print(f"{'AP':>7} {'AP cal.':>8} {'dets':>8} {'dropped':>8}  file")
    for path, result in results.items():
        print(
            f"{100 * result['AP']:7.2f} {100 * result['AP_calibrated']:8.2f} {result['num_detections']:8d} "
            f"{result['dropped_small']:8d}  {path}"
        )
    if args.json:
        summary = {
            path: {"AP": r["AP"], "AP_calibrated": r["AP_calibrated"]}
            for path, r in results.items()
        }
        write_text(args.json, json.dumps(summary, indent=2))
    if args.plot:
        _plot(results, args.plot, TITLES[args.dataset])
    return 0


def _plot(results, path: str, title: str) -> None:
    """The calibrated PR curve of every file, best first in the legend."""
    ranked = sorted(results.items(), key=lambda item: -item[1]["AP_calibrated"])
    plot_curves(
        {
            f"{name} (AP {100 * r['AP_calibrated']:.2f})": r["matches_calibrated"].pr_curve()
            for name, r in ranked
        },
        path,
        title,
        size=(6, 5),
    )


if __name__ == "__main__":
    sys.exit(main())
