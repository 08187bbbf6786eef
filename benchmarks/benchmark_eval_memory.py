"""Peak memory of the WIDER FACE evaluation against the predictions of one crowded image.

    python benchmarks/benchmark_eval_memory.py --gt-dir DIR [--boxes 10000 100000 300000]

The most crowded image of the ground truth gets ``--boxes`` predictions (its
faces jittered, then random boxes); every other image gets none. For each
count, ``python -m srn_d2.tools.evaluate_widerface`` runs on that submission
folder in a fresh process, once as shipped (the IoU matrix computed in
slices) and once with the whole matrix at once, as before the slicing; the
table gives each process's peak resident memory and their ratio.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

from srn_d2.evaluation.prediction_files import write_widerface_predictions
from srn_d2.evaluation.widerface_gt import load_widerface_gt_mat
from srn_d2.evaluation.widerface_protocol import MATCH_CHUNK_ELEMENTS

# Run in the child: the evaluation tool, with the slice size of the matching as given.
_CHILD = """
import sys
from srn_d2.evaluation import widerface_protocol
widerface_protocol.MATCH_CHUNK_ELEMENTS = int(sys.argv[1])
from srn_d2.tools.evaluate_widerface import main
sys.exit(main(sys.argv[2:]))
"""
WHOLE_MATRIX = 1 << 62


def crowded_predictions(gt, num_boxes: int, seed: int = 0):
    """(image id, (num_boxes, 5) predictions) for the image with the most faces."""
    rng = np.random.default_rng(seed)
    index = int(np.argmax(np.diff(gt.offsets)))
    faces = gt.faces_of(index)[:num_boxes]
    jittered = faces + np.concatenate(
        [rng.normal(0, 1, (len(faces), 2)), np.zeros((len(faces), 2))], axis=1
    )
    num_random = num_boxes - len(faces)
    random_boxes = np.concatenate(
        [rng.uniform(0, 1024, (num_random, 2)), rng.uniform(4, 128, (num_random, 2))], 1
    )
    boxes = np.concatenate([jittered, random_boxes])
    scores = rng.uniform(0, 1, (num_boxes, 1))
    return gt.image_ids[index], len(faces), np.concatenate([boxes, scores], axis=1)


def peak_rss_mb(gt_dir: str, pred_dir: str, chunk_elements: int) -> float:
    """Peak resident memory (MB) of one evaluation process."""
    process = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(chunk_elements), "--pred", pred_dir, "--gt-dir", gt_dir],
        stdout=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"the evaluation exited with status {process.returncode}")
    return usage.ru_maxrss / 1024  # Linux reports kilobytes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--gt-dir", required=True, help="folder of wider_face_val.mat and wider_*_val.mat"
    )
    parser.add_argument("--boxes", type=int, nargs="+", default=[10_000, 100_000, 300_000])
    args = parser.parse_args(argv)
    gt = load_widerface_gt_mat(args.gt_dir)
    print(f"{'boxes':>8} {'faces':>6} {'sliced MB':>10} {'whole MB':>10} {'whole / sliced':>15}")
    for num_boxes in args.boxes:
        image_id, num_faces, predictions = crowded_predictions(gt, num_boxes)
        with tempfile.TemporaryDirectory() as pred_dir:
            write_widerface_predictions(pred_dir, {image_id: predictions})
            sliced = peak_rss_mb(args.gt_dir, pred_dir, MATCH_CHUNK_ELEMENTS)
            whole = peak_rss_mb(args.gt_dir, pred_dir, WHOLE_MATRIX)
        print(
            f"{num_boxes:>8} {num_faces:>6} {sliced:>10.0f} {whole:>10.0f} {whole / sliced:>15.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
