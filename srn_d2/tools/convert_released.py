"""Convert the authors' released SRN checkpoint to a Detectron2 checkpoint.

    python -m srn_d2.tools.convert_released SRN.pth srn_r50_released.pth
    python train_net.py --config-file configs/SRN_R_50_official.yaml --eval-only \\
        MODEL.WEIGHTS srn_r50_released.pth

Every key and shape is checked against the model of ``--config-file`` before
anything is written; the output is a ``.pth`` of tensors, which loads without
running code. The released layout and the name mapping: ``srn_d2.released_checkpoint``.
"""

import argparse
import logging
import os

from . import run_command

logger = logging.getLogger(__name__)


def main(argv=None) -> int:
    return run_command(_convert, argv)


def _convert(argv) -> int:
    from ..released_checkpoint import DEFAULT_CONFIG, build_target_model, convert

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="the released checkpoint (.pth)")
    parser.add_argument("output", help="the Detectron2 checkpoint to write (.pth)")
    parser.add_argument(
        "--config-file",
        default=DEFAULT_CONFIG,
        help="config whose model the checkpoint must fit (default: configs/SRN_R_50_official.yaml)",
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow arbitrary pickled objects in the input (only for files you trust)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if not os.path.isfile(args.config_file):
        parser.error(f"config file {args.config_file} not found; pass --config-file")
    converted = convert(
        args.input, args.output, build_target_model(args.config_file), args.trust_pickle
    )
    logger.info(f"wrote {len(converted)} tensors to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
