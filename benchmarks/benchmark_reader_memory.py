"""Peak memory of two readers of user files against their plain inputs, side by side in one process.

    python benchmarks/benchmark_reader_memory.py [--gt Annotations_Face_PASCALLayout_large_fixed.mat]

* RetinaFace ``label.txt``: 20,001 lines (about 2.3 MB) as written, and the same file with one
  line padded by 50 KB of spaces. Bound: the padded file within 1.5x the plain one (the reader
  keeps Python strings, never an array padded to the longest line).
* AFW / PASCAL scoring: the ground truth with 50,000 detections, and the same plus one image of
  2,000 faces that 100 of the detections fall on. Bound: within 2x the plain run (each detection
  meets its own image's faces, in slices of pairs, never padded to the most crowded image).

Peaks are Python's and numpy's allocations (``tracemalloc``), in MB; ``--gt`` defaults to the
synthetic PASCAL-sized ground truth of 851 images when the real file is not given.
"""

import argparse
import os
import sys
import tempfile
import tracemalloc

import numpy as np
from scipy.io import savemat

from srn_d2.data.retinaface_labels import load_retinaface_labels
from srn_d2.annotations.face_benchmarks import load_benchmark_mat
from srn_d2.evaluation.face_benchmarks import BenchmarkDetections, evaluate_benchmark

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark_face_benchmark import synthesize  # noqa: E402


def peak_mb(run) -> float:
    tracemalloc.start()
    run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 1e6


def label_file(path: str, padding: int) -> str:
    rng = np.random.default_rng(0)
    lines = []
    for image in range(2_000):
        lines.append(f"# {image % 61}--Event/{image}.jpg")
        for _ in range(9):
            box = rng.integers(1, 500, 4)
            points = " ".join(f"{v:.3f} {w:.3f} 0.0" for v, w in rng.uniform(0, 500, (5, 2)))
            lines.append(f"{box[0]} {box[1]} {box[2]} {box[3]} {points} {rng.random():.2f}")
    lines.append(f"# last/{padding}.jpg")
    lines[5] += " " * padding
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def ground_truth_mat(path: str, crowded: int, base=None) -> str:
    """A toolbox ground truth: ``base``'s images (or 851 synthetic ones), plus one of ``crowded`` faces."""
    rng = np.random.default_rng(1)
    images = []
    if base is not None:
        for name, start, stop in zip(base.image_names, base.offsets[:-1], base.offsets[1:]):
            images.append(
                (name, np.concatenate([base.boxes[start:stop], np.zeros((stop - start, 2))], 1))
            )
    else:
        for index in range(851):
            xy = rng.uniform(0, 400, (2, 2))
            corners = np.concatenate([xy, xy + rng.uniform(30, 120, (2, 2)), np.zeros((2, 2))], 1)
            images.append((f"{index}.jpg", corners))
    if crowded:
        xy = rng.uniform(0, 4000, (crowded, 2))
        images.append(("crowd.jpg", np.concatenate([xy, xy + 40, np.zeros((crowded, 2))], 1)))
    entries = np.zeros(
        (len(images), 1), dtype=[("imgname", "O"), ("imgsize", "O"), ("objects", "O")]
    )
    for row, (name, objects) in enumerate(images):
        entries[row, 0] = (
            np.array([name]),
            np.array([[640], [480], [3]]),
            objects.astype(np.float64),
        )
    savemat(path, {"Annotations": entries})
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gt", help="the toolbox's PASCAL (or AFW) ground truth .mat")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        plain = label_file(os.path.join(folder, "plain.txt"), 0)
        padded = label_file(os.path.join(folder, "padded.txt"), 50_000)
        sizes = [os.path.getsize(plain) / 1e6, os.path.getsize(padded) / 1e6]
        label_peaks = [
            peak_mb(lambda p=p: load_retinaface_labels(p, folder, read_sizes=False))
            for p in (plain, padded)
        ]
        rows.append(
            (
                "label.txt",
                f"{sizes[0]:.1f} MB",
                f"{sizes[1]:.1f} MB, one line +50 KB",
                *label_peaks,
                1.5,
            )
        )

        base = load_benchmark_mat(args.gt) if args.gt else None
        plain_gt = args.gt or ground_truth_mat(os.path.join(folder, "plain.mat"), 0)
        crowded_gt = ground_truth_mat(
            os.path.join(folder, "crowded.mat"), 2_000, load_benchmark_mat(plain_gt)
        )
        peaks = []
        for path in (plain_gt, crowded_gt):
            gt = load_benchmark_mat(path)
            image, scores, boxes = synthesize(gt, 50_000)
            image[:100] = len(gt.keys) - 1 if path == crowded_gt else image[:100]
            detections = BenchmarkDetections.sorted(image, scores, boxes)
            peaks.append(peak_mb(lambda d=detections, g=gt: evaluate_benchmark(d, g)))
        rows.append(
            (
                "AFW / PASCAL scoring",
                f"{'given' if base else 'synthetic'} gt, 50,000 detections",
                "the same + an image of 2,000 faces",
                *peaks,
                2.0,
            )
        )
    print(
        f"{'reader':22} {'plain input':36} {'hostile input':36} {'plain MB':>9} {'hostile MB':>11} "
        f"{'ratio':>6} bound"
    )
    for name, plain_text, hostile_text, plain_mb, hostile_mb, bound in rows:
        ratio = hostile_mb / plain_mb
        print(
            f"{name:22} {plain_text:36} {hostile_text:36} {plain_mb:9.1f} {hostile_mb:11.1f} {ratio:6.2f} "
            f"{'within' if ratio <= bound else 'OVER'} {bound}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
