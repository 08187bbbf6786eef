"""Command line FDDB evaluation of a detection file.

    python -m srn_d2.tools.evaluate_fddb --pred FILE --gt-dir DIR [--image-dir DIR] [--json OUT.json]

``--gt-dir`` holds ``FDDB-fold-NN-ellipseList.txt``; every image of those folds
is evaluated (images absent from ``--pred`` have no detections). With
``--image-dir`` (``originalPics``) regions are clipped to the image as the
official tool does; without it image sizes are unknown and nothing is clipped.
"""

from ..utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
import argparse
import glob
import json
import math
import os
import sys

from ..data.fddb import load_fddb
from ..errors import InputError
from ..evaluation.fddb_evaluator import MAX_FALSE_POSITIVES, fddb_gt_from_dicts
from ..evaluation.fddb_protocol import evaluate_fddb
from . import run_command
from ..evaluation.prediction_files import read_fddb_detections
from ..utils.file_io import write_text


def main(argv=None) -> int:
    return run_command(_evaluate, argv)


def _evaluate(argv) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pred", required=True, help="FDDB detection file")
    parser.add_argument("--gt-dir", required=True, help="folder of FDDB-fold-NN-ellipseList.txt")
    parser.add_argument("--image-dir", help="folder of the images (<path>.jpg), for image sizes")
    parser.add_argument("--json", help="write {'TPR_at_1000FP': rate in [0, 1]} here")
    args = parser.parse_args(argv)

    fold_files = sorted(glob.glob(os.path.join(args.gt_dir, "*ellipseList.txt")))
    if not fold_files:
        parser.error(f"no *ellipseList.txt in {args.gt_dir}")
    dicts = load_fddb(fold_files, args.image_dir or "", read_sizes=bool(args.image_dir))
    ground_truth = fddb_gt_from_dicts(dicts)
    detections = read_fddb_detections(args.pred)
    if not detections:
        raise InputError(f"{args.pred}: no detections (the file lists no image)")
    unknown = [name for name in detections if name not in ground_truth]
    if unknown:
        print(
            f"warning: {len(unknown)} images of {args.pred} are not in the folds, "
            f"ignored, e.g. {unknown[0]}"
        )

    roc = evaluate_fddb(detections, ground_truth)
    tpr = roc.tpr_at_false_positives(MAX_FALSE_POSITIVES)
    num_detections = sum(len(d) for d in detections.values())
    print(f"{len(ground_truth)} images, {roc.num_faces} faces, {num_detections} detections")
    if math.isnan(tpr):
        print(f"TPR at {MAX_FALSE_POSITIVES} false positives: undefined (the folds hold no face)")
    else:
        print(f"TPR at {MAX_FALSE_POSITIVES} false positives (discrete score): {tpr:.4f}")
    if args.json:
        # null, not NaN: JSON has no NaN.
        write_text(
            args.json, json.dumps({"TPR_at_1000FP": None if math.isnan(tpr) else tpr}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
