"""Latency of SRN for deployment in one table: the authors' network, srn_d2 in PyTorch, and
srn_d2 exported to ONNX on onnxruntime, fp32 and int8, one image and batches.

    python benchmarks/benchmark_export.py [--sizes 640 1024] [--realtime-size 640x480] [--batch 8] [--iters 5]

Every row is timed in this one process on the CPU, in turns (one run of each
row, then the next round), and given with its ratio to the authors' network on
an image of the same size:

* the authors' released network (``tests/released_network.py``): its forward
  alone, as the release runs it (both towers on all twelve feature maps),
  without its decoding, which ran in numpy and on a GPU NMS;
* srn_d2's SRN R-50 (configs/SRN_R_50_official.yaml) in PyTorch: the whole
  inference, decoding and NMS included;
* the same exported (``srn_d2.deploy.export``), fp32 and int8
  (``srn_d2.deploy.quantize``), run end to end by ``ONNXFaceDetector`` (an
  OpenCV image in, boxes out), one image per call and ``--batch`` images of
  the same size per call of the batched export (time per image);
* at ``--realtime-size``, the real-time SRN (configs/SRN_MobileNetV3_widerface.yaml)
  the same ways.

The weights are random (timing does not depend on them); int8 is calibrated on
four random images. The authors' network is a test reference, not part of
srn_d2: it lives beside the parity tests that check srn_d2 against it, and this
script, a developer's benchmark like them, reads it from there.
"""

from srn_d2.utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
import argparse
import os
import sys
import tempfile

import numpy as np
import torch
from detectron2.modeling import build_model

from srn_d2 import model_zoo
from srn_d2.deploy.export import deployment_metadata, export_onnx
from srn_d2.deploy.onnx_runtime import ONNXFaceDetector, pad_images
from srn_d2.deploy.quantize import int8_path, quantize_int8
from srn_d2.engine import setup_cfg
from srn_d2.apps.benchmark import parse_size
from srn_d2.utils.measure import format_table, interleaved_median_ms

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from released_network import ReleasedSRN  # noqa: E402  (the test reference, found on the path above)


def _exports(name: str, folder: str):
    """Build the config's model with random weights and write its one-image and batched
    exports and their int8 twins; returns the model and the four ONNX paths."""
    cfg = setup_cfg(
        model_zoo.get_config_file(name), ["MODEL.DEVICE", "cpu", "MODEL.TIMM.PRETRAINED", "False"]
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    metadata = deployment_metadata(cfg)
    stem = os.path.join(folder, os.path.splitext(name)[0])
    sample = torch.zeros(3, 256, 256)
    single, batched = f"{stem}.onnx", f"{stem}_batched.onnx"
    export_onnx(model, (sample,), single, metadata)
    export_onnx(
        model,
        tuple(torch.from_numpy(x) for x in pad_images([sample.numpy()] * 2)),
        batched,
        metadata,
        batched=True,
    )
    calibration = [
        np.random.default_rng(i).integers(0, 256, (3, 320, 320)).astype(np.float32)
        for i in range(4)
    ]
    paths = {"fp32": single, "fp32 batched": batched}
    for key, path in list(paths.items()):
        quantize_int8(path, calibration)
        paths[key.replace("fp32", "int8")] = int8_path(path)
    return model, paths


def _rows(label, model, paths, authors, height, width, batch, threads):
    """The timed callables of one network at one size: authors' network first."""
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(batch)]
    image = torch.from_numpy(bgr.transpose(2, 0, 1).copy()).float()
    normalized = (
        image[[2, 1, 0]] / 255 - torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    ) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    runs = {
        "authors' network, PyTorch (forward only), 1 image": (lambda: authors(normalized[None]), 1)
    }
    if model is not None:
        runs[f"{label}, PyTorch, 1 image"] = (lambda: model([{"image": image}]), 1)
    for key, path in paths.items():
        detector = ONNXFaceDetector(path, num_threads=threads, spin_wait=False)
        if "batched" in key:
            runs[f"{label}, ONNX {key.split()[0]}, {batch} images per call"] = (
                lambda d=detector: d(images),
                batch,
            )
        else:
            runs[f"{label}, ONNX {key}, 1 image"] = (lambda d=detector: d(bgr), 1)
    return runs


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes",
        nargs="*",
        type=int,
        default=[640, 1024],
        help="square sizes for SRN R-50 (none: the real-time SRN alone)",
    )
    parser.add_argument(
        "--realtime-size", type=parse_size, default=(480, 640), help="WxH for the real-time SRN"
    )
    parser.add_argument(
        "--batch", type=int, default=8, help="images per call of the batched exports"
    )
    parser.add_argument("--iters", type=int, default=5, help="timed runs per row (median reported)")
    args = parser.parse_args(argv)
    import onnxruntime

    torch.set_flush_denormal(True)
    threads = torch.get_num_threads()
    authors = ReleasedSRN().eval()
    with tempfile.TemporaryDirectory() as folder:
        r50, r50_paths = _exports("SRN_R_50_official.yaml", folder) if args.sizes else (None, {})
        _, realtime_paths = _exports("SRN_MobileNetV3_widerface.yaml", folder)
        print(
            f"CPU, {threads} threads, onnxruntime {onnxruntime.__version__}, median of {args.iters} runs taken in "
            "turns; ms per image, (ratio to the authors' network at the same size)"
        )
        tables = [("SRN R-50", r50, r50_paths, (size, size)) for size in args.sizes]
        tables.append(("real-time SRN (MobileNetV3)", None, realtime_paths, args.realtime_size))
        for label, model, paths, (height, width) in tables:
            runs = _rows(label, model, paths, authors, height, width, args.batch, threads)
            with torch.no_grad():
                times = interleaved_median_ms(
                    [run for run, _ in runs.values()], args.iters, warmup=1
                )
            rows = [
                {"model": name, "size": f"{width}x{height}", "ms per image": ms / count}
                for (name, (_, count)), ms in zip(runs.items(), times)
            ]
            print(format_table(rows, ["model", "size", "ms per image"], baseline=rows[0]))
            print()


if __name__ == "__main__":
    main()
