"""What deployment costs in accuracy, side by side on mini_faces val: the exported fp32 model,
its int8 twins and the batched export on padded batches, same weights, WIDER FACE protocol.

    python benchmarks/benchmark_deploy_accuracy.py --config-file configs/SRN_mini.yaml \
        --weights output/SRN_mini/model_final.pth [--calibration-images 100] [--batch 8]

Rows, all run by ``ONNXFaceDetector``:

* fp32, image by image: the reference (the export equals PyTorch, see tests/deploy/test_export.py);
* int8, convolutions only (``export --quantize int8``, what srn_d2 ships);
* int8, the whole network (every float operator before the decoding) for comparison;
* int8, convolutions with 7-bit weights (``export --int8-weight-bits 7``, for CPUs without
  AVX-512 VNNI);
* fp32 batched, ``--batch`` images padded into one call (``pad=True``), and
  int8 (convolutions) batched the same way.

Columns: AP easy / medium / hard and hard AP at IoU 0.7 (points, with the
difference to fp32), and the agreement with fp32: of its detections scoring >= 0.5,
the share found again at IoU >= 0.9. A model trained with landmarks
(``configs/SRN_mini_landmarks.yaml``) adds their error on the val faces (NME, % of
the face's size, as the WIDER evaluator reports it) and the largest shift of a
matched face's point against fp32, in % of that face's size. int8 is calibrated
on the first ``--calibration-images`` of mini_faces_train, never on val.
"""

from srn_d2.utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
import argparse
import os
import tempfile

import cv2
from detectron2.data import DatasetCatalog, MetadataCatalog
from tabulate import tabulate

from srn_d2.deploy.export import export
from srn_d2.deploy.onnx_runtime import ONNXFaceDetector
from srn_d2.deploy.quantize import calibration_images, detection_agreement, quantize_int8
from srn_d2.engine import setup_cfg
from srn_d2.evaluation.face_evaluator import boxes_to_xywhs
from srn_d2.evaluation.widerface_evaluator import dataset_landmark_metrics
from srn_d2.evaluation.widerface_gt import widerface_gt_from_dicts
from srn_d2.evaluation.widerface_protocol import WiderFaceMatches, widerface_metrics

METRICS = (
    ("AP_easy", "AP easy"),
    ("AP_medium", "AP medium"),
    ("AP_hard", "AP hard"),
    ("AP_hard_IoU70", "hard IoU.7"),
)


def _scores(detections, records, gt):
    """WIDER FACE metrics of each image's (boxes, scores[, landmarks]), and the landmark error."""
    predictions = {str(r["image_id"]): boxes_to_xywhs(*d[:2]) for r, d in zip(records, detections)}
    metrics, _ = widerface_metrics(WiderFaceMatches(predictions, gt))
    if all(len(d) > 2 for d in detections):
        keypoints = {str(r["image_id"]): d[2] for r, d in zip(records, detections)}
        metrics["NME"] = dataset_landmark_metrics(records, predictions, keypoints)["NME"] / 100
    return metrics


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--dataset", default="mini_faces_val")
    parser.add_argument("--calibration-dataset", default="mini_faces_train")
    parser.add_argument("--calibration-images", type=int, default=100)
    parser.add_argument(
        "--batch", type=int, default=8, help="images per padded call in the batched rows"
    )
    args = parser.parse_args(argv)

    cfg = setup_cfg(args.config_file, ["MODEL.WEIGHTS", args.weights])
    records = DatasetCatalog.get(args.dataset)
    gt = widerface_gt_from_dicts(records, MetadataCatalog.get(args.dataset).difficulty_by_size)
    images = [cv2.imread(r["file_name"]) for r in records]
    calibration = calibration_images(cfg, args.calibration_dataset, args.calibration_images)
    with tempfile.TemporaryDirectory(prefix="srn_d2-deploy-") as folder:
        single = export(cfg, "onnx", folder)
        batched = export(cfg, "onnx", folder, batched=True)
        quantize_int8(single, calibration)
        quantize_int8(
            single,
            calibration,
            scope="network",
            output_path=os.path.join(folder, "network_int8.onnx"),
        )
        quantize_int8(
            single, calibration, output_path=os.path.join(folder, "int8_7bit.onnx"), weight_bits=7
        )
        quantize_int8(batched, calibration)
        detectors = {
            "fp32, image by image": (ONNXFaceDetector(single), False),
            "int8 convolutions, image by image": (
                ONNXFaceDetector(os.path.join(folder, "model_int8.onnx")),
                False,
            ),
            "int8 whole network, image by image": (
                ONNXFaceDetector(os.path.join(folder, "network_int8.onnx")),
                False,
            ),
            "int8 convolutions, 7-bit weights": (
                ONNXFaceDetector(os.path.join(folder, "int8_7bit.onnx")),
                False,
            ),
            f"fp32 batched, {args.batch} padded per call": (ONNXFaceDetector(batched), True),
            f"int8 convolutions batched, {args.batch} padded per call": (
                ONNXFaceDetector(os.path.join(folder, "model_batched_int8.onnx")),
                True,
            ),
        }
        results = {}
        for name, (detector, padded) in detectors.items():
            if padded:
                results[name] = [
                    d
                    for start in range(0, len(images), args.batch)
                    for d in detector(images[start : start + args.batch], pad=True)
                ]
            else:
                results[name] = detector(images)
    reference_name = next(iter(results))
    reference = _scores(results[reference_name], records, gt)
    metrics = METRICS + ((("NME", "NME %"),) if "NME" in reference else ())
    rows = []
    for name, detections in results.items():
        scores = reference if name == reference_name else _scores(detections, records, gt)
        agreement = detection_agreement(results[reference_name], detections)
        row = [name]
        for key, _ in metrics:
            # NME is a few percent: two decimals show its changes.
            digits = 2 if key == "NME" else 1
            value, delta = 100 * scores[key], 100 * (scores[key] - reference[key])
            row.append(
                f"{value:.{digits}f}"
                + ("" if name == reference_name else f" ({delta:+.{digits}f})")
            )
        row.append(
            f"{100 * agreement['found_again'] / max(agreement['reference_confident'], 1):.1f}% of "
            f"{agreement['reference_confident']}"
        )
        if "largest_landmark_shift" in agreement:
            row.append(f"{100 * agreement['largest_landmark_shift']:.2f}")
        row.append(str(agreement["other_detections"]))
        rows.append(row)
    headers = [
        "model",
        *(h for _, h in metrics),
        "fp32 >= 0.5 found at IoU 0.9",
        *(["largest point shift %"] if "NME" in reference else []),
        "detections",
    ]
    print(
        f"{args.config_file} ({args.weights}) on {args.dataset} ({len(records)} images), int8 calibrated on "
        f"{len(calibration)} images of {args.calibration_dataset}; AP in %, (difference to fp32):"
    )
    print(tabulate(rows, headers=headers, disable_numparse=True))


if __name__ == "__main__":
    main()
