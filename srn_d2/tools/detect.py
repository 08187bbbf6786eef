"""Detect faces with a config and its weights on images, folders of images or videos.

    python demo.py --config-file configs/SRN_R_50_official.yaml \\
        --input photo.jpg photos/ clip.mp4 --output out/ \\
        --opts MODEL.WEIGHTS srn_r50_released.pth MODEL.DEVICE cpu

    python demo.py --onnx export/model.onnx --input photo.jpg --output out/
    python demo.py --onnx export/model.onnx --webcam 0


(``demo.py`` is ``python -m srn_d2.tools.detect``; ``--onnx`` runs a model exported by
``srn_d2.tools.export`` on onnxruntime instead of a config.) For an image ``<stem>.<ext>``
it writes to ``--output``: ``<stem>.<ext>`` with the detections drawn,
``<stem>.txt`` in the WIDER FACE submission format and ``<stem>.json``; for a
video, ``<stem>.mp4`` drawn and ``<stem>.json`` (``srn_d2.apps.face_demo``).
Video frames and the ``--webcam`` window show the detection's frames per second,
and the log says whether detection keeps up with the video's own frame rate.

Images are resized as at test time (INPUT.MIN_SIZE_TEST, 0 = original size);
TEST.AUG.ENABLED runs the SRN multi-scale test. Detections below
``--confidence-threshold`` are not output. An image that cannot be decoded is
an error when named directly; inside a folder it is logged and skipped.
"""

import argparse
import logging

from . import run_command


def main(argv=None) -> int:
    return run_command(_detect, argv)


def _detect(argv) -> int:
    from detectron2.data.catalog import Metadata

    from ..engine import setup_cfg
    from ..apps.face_demo import FaceDemo, onnx_predictor, run_demo

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument(
        "--config-file", metavar="FILE", help="a config, with MODEL.WEIGHTS in --opts"
    )
    model.add_argument(
        "--onnx", metavar="FILE", help="a model.onnx from srn_d2.tools.export, run on onnxruntime"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", help="images, folders of images, or videos")
    source.add_argument(
        "--webcam",
        type=int,
        nargs="?",
        const=0,
        metavar="INDEX",
        help="detect live on camera INDEX (default 0), shown in a window until Esc or q",
    )
    parser.add_argument("--output", default="demo_output", help="folder for the outputs")
    parser.add_argument("--confidence-threshold", type=float, default=0.5)
    parser.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="run even if MODEL.WEIGHTS is empty or leaves parameters random (the outputs mean nothing)",
    )
    parser.add_argument(
        "--opts", nargs=argparse.REMAINDER, default=[], help="config KEY VALUE pairs"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if args.onnx:

        def make_demo():
            face = Metadata(thing_classes=["face"])
            return FaceDemo(onnx_predictor(args.onnx), args.output, args.confidence_threshold, face)

    else:
        cfg = setup_cfg(args.config_file, args.opts)

        def make_demo():
            return FaceDemo.from_config(
                cfg, args.output, args.confidence_threshold, args.allow_random_weights
            )

    if args.webcam is not None:
        make_demo().run_camera(args.webcam)
    else:
        run_demo(make_demo, args.input)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
