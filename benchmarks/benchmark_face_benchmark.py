"""Time of the AFW / PASCAL faces evaluation (with calibration) against the literal toolbox.

    python benchmarks/benchmark_face_benchmark.py --gt Annotations_Face_PASCALLayout_large_fixed.mat \\
        [--detections 100000] [--reference-detections 5000]

Synthesizes detections spread over the images (a third near faces, the rest
anywhere), times ``evaluate_benchmark`` on all of them, and times both it and
the toolbox restated one detection at a time (tests/toolbox_restatement.py) on
the first ``--reference-detections``, checking that the two agree there.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import toolbox_restatement as toolbox  # noqa: E402

from srn_d2.annotations.face_benchmarks import load_benchmark_mat  # noqa: E402
from srn_d2.evaluation.face_benchmarks import BenchmarkDetections, evaluate_benchmark  # noqa: E402


def synthesize(gt, count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, len(gt.keys), count)
    boxes = np.concatenate([rng.uniform(0, 400, (count, 2)), np.zeros((count, 2))], axis=1)
    boxes[:, 2:] = boxes[:, :2] + rng.uniform(15, 200, (count, 2))
    faces_of = np.diff(gt.offsets)
    near = (rng.random(count) < 1 / 3) & (faces_of[image] > 0)
    face = gt.offsets[image[near]] + (rng.random(near.sum()) * faces_of[image[near]]).astype(
        np.int64
    )
    boxes[near] = gt.boxes[face] + rng.normal(0, 4, (near.sum(), 4))
    return image, rng.random(count).round(3), boxes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gt", required=True)
    parser.add_argument("--detections", type=int, default=100_000)
    parser.add_argument("--reference-detections", type=int, default=5_000)
    args = parser.parse_args(argv)
    gt = load_benchmark_mat(args.gt)
    image, scores, boxes = synthesize(gt, args.detections)

    start = time.perf_counter()
    result = evaluate_benchmark(BenchmarkDetections.sorted(image, scores, boxes), gt)
    full = time.perf_counter() - start
    print(
        f"{args.detections} detections, calibration included: {full:.2f} s "
        f"(AP {100 * result['AP']:.2f}, calibrated {100 * result['AP_calibrated']:.2f})"
    )

    n = args.reference_detections
    start = time.perf_counter()
    ours = evaluate_benchmark(BenchmarkDetections.sorted(image[:n], scores[:n], boxes[:n]), gt)
    ours_s = time.perf_counter() - start
    table = {key: [] for key in gt.keys}
    ignored = gt.ignored
    for index, key in enumerate(gt.keys):
        for face in range(gt.offsets[index], gt.offsets[index + 1]):
            table[key].append((*gt.boxes[face].tolist(), int(gt.flagged[face])))
    rows = [
        [gt.keys[i], s, *b]
        for i, s, b in zip(image[:n].tolist(), scores[:n].tolist(), boxes[:n].tolist())
    ]
    start = time.perf_counter()
    reference = toolbox.ground_truth(table)
    kept = toolbox.drop_small(rows)
    tp, fp, total, _ = toolbox.calibrated(reference, kept)
    reference_s = time.perf_counter() - start
    agree = abs(toolbox.voc_ap(tp, fp, total) - ours["AP_calibrated"]) < 1e-12
    assert int(ignored.sum()) == sum(row[5] for rows_ in reference.values() for row in rows_)
    print(
        f"{n} detections: srn_d2 {ours_s:.3f} s, literal toolbox {reference_s:.2f} s, "
        f"ratio {reference_s / ours_s:.1f}x; calibrated APs {'agree' if agree else 'DIFFER'}"
    )
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
