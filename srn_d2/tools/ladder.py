"""SRN's size ladder in one table: from the real-time SRN to SRN R-50, with Detectron2's
RetinaNet on the same backbones beside it.

    python -m srn_d2.tools.ladder                       # cost, then train every missing run
    python -m srn_d2.tools.ladder --results output/a/results.json output/b/results.json
    python -m srn_d2.tools.ladder --results benchmarks/results/ladder_runs.json   # the kept runs
    python -m srn_d2.tools.ladder --rungs "SRN MobileNetV3-Small" --smallest-seeds 5
    python -m srn_d2.tools.ladder --no-training --results output/ladder/results.json   # the table so far
    python -m srn_d2.tools.ladder --no-training --fixed-size   # cost of exports for 640x480 only

For each config: parameters, GFLOPs at --size (fvcore), milliseconds per image end
to end of its ONNX export on onnxruntime with 1 and 2 threads (an OpenCV image
in, boxes out), and the AP on mini_faces_val of its ``_mini`` twin trained from
scratch (mean ± standard deviation over --seeds; --smallest-seeds for the
smallest rung). Runs in --results files (of this command or of
``srn_d2.tools.ablation``) are not trained again. The table goes to
``--output``/ladder.md and every run to ``--output``/results.json (library:
``srn_d2.apps.ladder``). Run it on an otherwise idle machine: the timings are
taken first, before any training.
"""

import argparse

from . import run_command


def main(argv=None) -> int:
    return run_command(_ladder, argv)


def _ladder(argv) -> int:
    import logging

    from ..utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
    from detectron2.utils.logger import setup_logger

    from ..apps.benchmark import parse_size
    from ..apps.ladder import all_rows, run_ladder

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rungs",
        nargs="+",
        default=[],
        metavar="LABEL",
        help="only these rows: " + "; ".join(row.label for row in all_rows()),
    )
    parser.add_argument(
        "--seeds", type=int, default=3, help="seeds 1..N of every row but the smallest rung"
    )
    parser.add_argument(
        "--smallest-seeds", type=int, default=5, help="seeds 1..N of the smallest rung"
    )
    parser.add_argument(
        "--results",
        nargs="+",
        default=[],
        metavar="RESULTS_JSON",
        help="finished runs (results.json of this command or of srn_d2.tools.ablation)",
    )
    parser.add_argument(
        "--size", type=parse_size, default=(480, 640), help="WxH of the timed image"
    )
    parser.add_argument(
        "--iters", type=int, default=20, help="timed runs per config and thread count (median)"
    )
    parser.add_argument(
        "--no-training",
        action="store_true",
        help="train nothing: each row's AP is over the runs the --results files hold",
    )
    parser.add_argument(
        "--fixed-size",
        action="store_true",
        help="time exports for the --size image only (export --input-size) instead of any size",
    )
    parser.add_argument("--output", default="output/ladder")
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config overrides for every training run"
    )
    args = parser.parse_args(argv)
    setup_logger(name="srn_d2").setLevel(logging.INFO)
    logging.getLogger("detectron2").setLevel(logging.WARNING)
    print(
        run_ladder(
            args.rungs,
            args.seeds,
            args.smallest_seeds,
            args.results,
            args.output,
            args.size,
            args.iters,
            args.opts,
            train=not args.no_training,
            any_size=not args.fixed_size,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
