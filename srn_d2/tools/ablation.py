"""SRN against Detectron2's RetinaNet, and SRN's ablations, on the embedded mini_faces data.

Every model is trained from scratch on one budget (the same data, augmentation,
schedule, backbone and anchors: configs/SRN_mini*.yaml, configs/RetinaNet_mini.yaml),
evaluated on mini_faces_val with the WIDER FACE protocol and printed side by side.

    python -m srn_d2.tools.ablation                   # make demo: SRN and RetinaNet, seed 1
    python -m srn_d2.tools.ablation --study paper --seeds 3   # the paper's ablation rows
    python -m srn_d2.tools.ablation --study levels --seeds 3  # STC / STR on one level at a time
    python -m srn_d2.tools.ablation --seeds 3 --models SRN SRN:MODEL.SRN.LOSS_NORMALIZATION=per_loss

With several seeds every cell is the mean and standard deviation over the seeds,
the paper's directions are measured (difference and standard error) and the
paper's WIDER FACE ablation is printed beside. PR curves, a picture of
the detections, the table and every run's numbers (results.json) go to ``--output``
(library: ``srn_d2.apps.study``).
"""

import argparse

from . import run_command


def main(argv=None) -> int:
    return run_command(_study, argv)


def _study(argv) -> int:
    import logging

    from ..utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
    from detectron2.utils.logger import setup_logger

    from ..apps.study import STUDIES, report_from_results, run_study

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--study",
        choices=list(STUDIES),
        default="demo",
        help="the models to train: " + "; ".join(f"{k}: {' '.join(v)}" for k, v in STUDIES.items()),
    )
    parser.add_argument(
        "--models",
        nargs="+",
        metavar="NAME[:KEY=VALUE,...]",
        help="these models instead of --study's, each with its own config overrides, "
        "e.g. SRN SRN:MODEL.SRN.LOSS_NORMALIZATION=per_loss",
    )
    parser.add_argument("--seeds", type=int, default=1, help="train each model with N seeds")
    parser.add_argument("--first-seed", type=int, default=1, help="the first of the seeds")
    parser.add_argument(
        "--report",
        nargs="+",
        metavar="RESULTS_JSON",
        help="print the tables of finished studies' results.json files, training nothing",
    )
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=0.5,
        help="detections drawn in detections.jpg score at least this",
    )
    parser.add_argument("--output", default="output/demo")
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config overrides applied to every model"
    )
    args = parser.parse_args(argv)
    setup_logger(name="srn_d2").setLevel(logging.INFO)
    logging.getLogger("detectron2").setLevel(logging.WARNING)
    if args.report:
        print(report_from_results(args.report))
        return 0
    models = args.models or STUDIES[args.study]
    run_study(models, args.seeds, args.output, args.opts, args.score_threshold, args.first_seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
