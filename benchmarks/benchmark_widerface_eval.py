"""Timing of the WIDER FACE evaluation on a full-size synthetic prediction set.

    python benchmarks/benchmark_widerface_eval.py --gt-dir DIR [--per-image 750] [--tmp DIR]

Synthesizes ``--per-image`` predictions for every ground-truth image (each
face jittered, then random boxes), writes them as submission files, reads
them back, and times each step and the evaluation separately.
"""

import argparse
import sys
import tempfile
import time

import numpy as np

from srn_d2.evaluation.prediction_files import (
    read_widerface_predictions,
    write_widerface_predictions,
)
from srn_d2.evaluation.widerface_gt import SETTINGS, WiderFaceGroundTruth, load_widerface_gt_mat
from srn_d2.evaluation.widerface_protocol import WiderFaceMatches, widerface_metrics


def synthesize_predictions(gt: WiderFaceGroundTruth, per_image: int, seed: int = 0):
    """``per_image`` predictions per image: jittered faces (up to ``per_image``)
    scored higher on average, then uniform random boxes filling the rest."""
    rng = np.random.default_rng(seed)
    predictions = {}
    for index, image_id in enumerate(gt.image_ids):
        faces = gt.faces_of(index)[:per_image]
        size = np.maximum(faces[:, 2:4], 1)
        jittered = np.concatenate(
            [
                faces[:, :2] + rng.normal(0, 0.1, faces[:, :2].shape) * size,
                size * np.exp(rng.normal(0, 0.1, size.shape)),
            ],
            axis=1,
        )
        num_random = per_image - len(faces)
        extent = max(1024.0, float(faces[:, :2].max(initial=0)) + 64)
        random_boxes = np.concatenate(
            [rng.uniform(0, extent, (num_random, 2)), rng.uniform(4, 256, (num_random, 2))], axis=1
        )
        scores = np.concatenate(
            [rng.uniform(0.3, 1.0, len(faces)), rng.uniform(0.0, 0.7, num_random)]
        )
        predictions[image_id] = np.concatenate(
            [np.concatenate([jittered, random_boxes]), scores[:, None]], axis=1
        )
    return predictions


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gt-dir", required=True)
    parser.add_argument("--per-image", type=int, default=750)
    parser.add_argument("--tmp", help="folder for the submission files (default: a temporary one)")
    args = parser.parse_args(argv)

    def timed(label, fn, *a):
        start = time.perf_counter()
        out = fn(*a)
        print(f"{label:<40} {time.perf_counter() - start:7.2f} s")
        return out

    gt = timed("load .mat ground truth", load_widerface_gt_mat, args.gt_dir)
    predictions = timed("synthesize predictions", synthesize_predictions, gt, args.per_image)
    num_lines = sum(len(p) for p in predictions.values())
    print(f"{gt.num_images} images, {gt.num_faces} faces, {num_lines} predictions")

    with tempfile.TemporaryDirectory(dir=args.tmp) as pred_dir:
        timed("write submission files", write_widerface_predictions, pred_dir, predictions)
        from_files = timed(
            "read submission files", read_widerface_predictions, pred_dir, gt.image_ids
        )

    def three_settings(preds):
        matches = WiderFaceMatches(preds, gt)
        return {s: matches.pr_curve(s, 0.5).ap for s in SETTINGS}

    aps = timed("evaluate easy/medium/hard", three_settings, from_files)
    metrics, _ = timed(
        "evaluate all metrics (incl. 10 IoUs)",
        lambda: widerface_metrics(WiderFaceMatches(from_files, gt)),
    )
    print("AP " + ", ".join(f"{s} {ap:.4f}" for s, ap in aps.items()))
    print(
        ", ".join(
            f"{k} {v:.4f}" if k.startswith("AP") else f"{k} {v:.0f}" for k, v in metrics.items()
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
