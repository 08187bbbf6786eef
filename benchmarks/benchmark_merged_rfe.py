"""What merging the RFE's narrow branches (``srn_d2.deploy.merged_rfe``) gains on onnxruntime:
each config exported twice from one model, with its RFE blocks merged (as ``export`` writes them)
and as the paper draws them, and both run end to end by ``ONNXFaceDetector`` (an OpenCV image in,
boxes out) with one and with two threads, in this one process.

    python benchmarks/benchmark_merged_rfe.py [--configs SRN_MobileNetV3Small_widerface.yaml ...]
        [--size 640x480] [--fixed-size] [--rounds 4] [--iters 15]

For each thread count, every export is timed in turns, one session at a time (spinning as
deployed; sessions side by side would take each other's cores): a fresh session, a few warm-up
runs, ``--iters`` timed runs, the next export, over ``--rounds`` rounds, each round in another
order. Each row gives the median over all rounds and its ratio to the unmerged export of the same
config. That export is also timed a second time as if it were another ("paper's RFE, again"): its
ratio, which only the machine moves, is the spread to read the others against. The weights are
random (timing does not depend on them). ``--fixed-size`` exports for the image's size only
(``export --input-size``). A config without narrow RFE branches exports the same graph either
way and gets no merged row.
"""

from srn_d2.utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
import argparse
import functools
import os
import statistics
import tempfile
from typing import List

import onnxruntime

from srn_d2.apps.benchmark import Candidate, parse_size
from srn_d2.deploy.merged_rfe import merge_narrow_rfe
from srn_d2.deploy.onnx_runtime import ONNXFaceDetector
from srn_d2.utils.measure import cpu_name, format_table, run_times

THREADS = (1, 2)
PAPER, AGAIN, MERGED = "paper's RFE", "paper's RFE, again", "merged RFE"


def _timed_ms(path: str, bgr, threads: int, iters: int, warmup: int = 3) -> List[float]:
    """Milliseconds of each of ``iters`` runs of a fresh session of the export ``path``."""
    detector = ONNXFaceDetector(path, num_threads=threads, spin_wait=True)
    return [1000 * t for t in run_times(functools.partial(detector, bgr), "cpu", iters, warmup)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["SRN_MobileNetV3Small_widerface.yaml", "SRN_MobileNetV3_widerface.yaml"],
    )
    parser.add_argument("--size", type=parse_size, default=(480, 640), help="WxH of the image")
    parser.add_argument("--fixed-size", action="store_true")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--iters", type=int, default=10)
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        exports = []
        for config in args.configs:
            candidate = Candidate(config, [], args.size, "cpu", 0, 0)
            variants = [(PAPER, False), (MERGED, True)]
            if merge_narrow_rfe(candidate.model) is candidate.model:
                print(f"{config}: no RFE branch narrower than the merge's bound; timed as it is")
                variants = variants[:1]
            for label, merge in variants:
                path = os.path.join(folder, f"{len(exports)}.onnx")
                candidate.export_onnx(path, any_size=not args.fixed_size, merge_rfe=merge)
                exports.append((config, label, path, candidate.bgr))
                if label == PAPER:
                    exports.append((config, AGAIN, path, candidate.bgr))
        for threads in THREADS:
            times = {(config, label): [] for config, label, _, _ in exports}
            for round_index in range(args.rounds):
                shift = round_index % len(exports)
                for config, label, path, bgr in exports[shift:] + exports[:shift]:
                    times[config, label] += _timed_ms(path, bgr, threads, args.iters)
            for config, label, path, _ in exports:
                rows.append(
                    {
                        "config": config,
                        "export": label,
                        "threads": threads,
                        "ms": statistics.median(times[config, label]),
                    }
                )
    width, height = args.size[1], args.size[0]
    print(
        f"{cpu_name()}, onnxruntime {onnxruntime.__version__}; {width}x{height}, "
        f"{'exported for that size only' if args.fixed_size else 'exported for any size'}; "
        "ratio to the paper's RFE:"
    )
    for config in args.configs:
        for threads in THREADS:
            pair = [r for r in rows if r["config"] == config and r["threads"] == threads]
            print(format_table(pair, ["config", "export", "threads", "ms"], baseline=pair[0]))


if __name__ == "__main__":
    main()
