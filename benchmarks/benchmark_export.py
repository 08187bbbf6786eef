"""Latency of SRN for deployment, side by side: the authors' network, srn_d2 in PyTorch,
and srn_d2 exported to ONNX on onnxruntime.

    python benchmarks/benchmark_export.py [--sizes 640 1024] [--iters 5]

Three rows per image size, timed in turns in this one process on the CPU, with
ratios to the first:

* the authors' released network (``tests/released_network.py``): its
  forward alone, as the release runs it (both towers on all twelve feature
  maps), without its decoding, which ran in numpy and on a GPU NMS;
* srn_d2's SRN R-50 (configs/SRN_R_50_official.yaml) in PyTorch: the whole
  inference, decoding and NMS included;
* the same, exported by ``srn_d2.deploy.export`` and run by onnxruntime.

The weights are random (timing does not depend on them). The authors' network
is a test reference, not part of srn_d2: it lives beside the parity tests that
check srn_d2 against it, and this script, a developer's benchmark like them,
reads it from there.
"""
from srn_d2.utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
import argparse
import os
import sys
import tempfile

import torch
from detectron2.modeling import build_model

from srn_d2 import model_zoo
from srn_d2.deploy.export import export_onnx
from srn_d2.engine import setup_cfg
from srn_d2.utils.measure import format_table, interleaved_median_ms

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from released_network import ReleasedSRN  # noqa: E402  (the test reference, found on the path above)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[640, 1024])
    parser.add_argument("--iters", type=int, default=5, help="timed runs per row (median reported)")
    args = parser.parse_args(argv)
    import onnxruntime

    torch.set_flush_denormal(True)
    cfg = setup_cfg(model_zoo.get_config_file("SRN_R_50_official.yaml"), ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    authors = ReleasedSRN().eval()
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.onnx")
        export_onnx(model, torch.zeros(3, 256, 256), path, {})
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    print(f"CPU, {torch.get_num_threads()} threads, onnxruntime {onnxruntime.__version__}, "
          f"median of {args.iters} runs taken in turns")
    for size in args.sizes:
        image = torch.randint(0, 256, (3, size, size), generator=torch.Generator().manual_seed(0)).float()
        normalized = (image / 255 - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor(
            [0.229, 0.224, 0.225]
        )[:, None, None]
        runs = {
            "authors' network, PyTorch (forward only)": lambda: authors(normalized[None]),
            "srn_d2 SRN R-50, PyTorch (whole inference)": lambda: model([{"image": image}]),
            "srn_d2 SRN R-50, ONNX on onnxruntime (whole inference)": lambda: session.run(
                None, {"image": image.numpy()}
            ),
        }
        with torch.no_grad():
            times = interleaved_median_ms(list(runs.values()), args.iters, warmup=1)
        rows = [{"model": name, "size": size, "ms": ms} for name, ms in zip(runs, times)]
        print(format_table(rows, ["model", "size", "ms"], baseline=rows[0]))
        print()


if __name__ == "__main__":
    main()
