"""The main job (``make demo``): SRN against Detectron2's RetinaNet on the embedded mini_faces data.

Both detectors are trained from scratch with the same budget, data,
augmentation, backbone and anchors (configs/SRN_mini.yaml and
configs/RetinaNet_mini.yaml), evaluated with the WIDER FACE protocol, and
printed side by side. PR curves, a picture of detections and the numbers as
JSON go to ``--output`` (default output/demo).
"""
from ..utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
import argparse
import json
import logging
import os
import time

import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import HookBase
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import Visualizer
from tqdm import tqdm

from ..data import datasets_root, ensure_mini_faces
from ..data.image_io import read_image
from .. import model_zoo
from ..engine import SRNTrainer, setup_cfg
from ..evaluation import WiderFaceEvaluator
from ..utils.measure import format_table, median_time

logger = logging.getLogger("srn_d2.ablation")

DETECTORS = {"SRN": "SRN_mini.yaml", "RetinaNet": "RetinaNet_mini.yaml"}
COLUMNS = [
    "model", "AP_easy", "AP_medium", "AP_hard", "AP_hard_IoU50", "AP_hard_IoU70",
    "FP_at_recall90", "infer_ms", "params_M", "train_min",
]


class ProgressBar(HookBase):
    """A tqdm bar over the training iterations, with the latest total loss."""

    def __init__(self, name: str):
        self.name = name

    def before_train(self):
        self.bar = tqdm(total=self.trainer.max_iter, initial=self.trainer.start_iter, desc=f"train {self.name}")

    def after_step(self):
        history = self.trainer.storage.histories().get("total_loss")
        if history is not None:
            self.bar.set_postfix(loss=f"{history.latest():.3f}", refresh=False)
        self.bar.update(1)

    def after_train(self):
        self.bar.close()


def train_and_evaluate(name: str, config_file: str, output_dir: str, opts):
    opts = [*opts, "OUTPUT_DIR", os.path.join(output_dir, name)]
    cfg = setup_cfg(config_file, opts)
    # default_setup would seed, but it also reconfigures logging; both models start from the same seed.
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED)
    # The stock trainer would evaluate after training; evaluating here keeps the PR curves.
    trainer = SRNTrainer(setup_cfg(config_file, [*opts, "DATASETS.TEST", "()"]))
    trainer.register_hooks([ProgressBar(name)])
    trainer.resume_or_load(resume=False)
    start = time.perf_counter()
    trainer.train()
    train_minutes = (time.perf_counter() - start) / 60

    model = trainer.model.eval()
    dataset = cfg.DATASETS.TEST[0]
    evaluator = WiderFaceEvaluator.from_config(cfg, dataset, os.path.join(cfg.OUTPUT_DIR, "inference"))
    results = SRNTrainer.test(cfg, model, [evaluator])["widerface"]
    row = {"model": name, **{k: float(results[k]) for k in COLUMNS if k in results}}
    row["params_M"] = sum(p.numel() for p in model.parameters()) / 1e6
    row["infer_ms"] = 1000 * inference_seconds(cfg, model, dataset)
    row["train_min"] = train_minutes
    return row, evaluator.pr_curves, model, cfg


def _model_input(cfg, file_name):
    image = read_image(file_name, cfg.INPUT.FORMAT)
    return {"image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))).float()}


def inference_seconds(cfg, model, dataset: str, num_images: int = 10) -> float:
    """Median single-image inference time over the first val images (model only, no I/O)."""
    inputs = [_model_input(cfg, d["file_name"]) for d in DatasetCatalog.get(dataset)[:num_images]]
    queue = iter(inputs * 3)
    with torch.no_grad():
        return median_time(lambda: model([next(queue)]), "cpu", iters=len(inputs), warmup=2)


def record_with_most_faces(records):
    return max(records, key=lambda d: len(d["annotations"]))


def draw_detections(models, dataset: str, path: str) -> None:
    """One val image with each model's N best detections side by side, N = its number of faces.

    A fixed score threshold would compare calibrations rather than detections: after a
    short schedule, focal-loss scores of different models sit at different levels.
    """
    record = record_with_most_faces(DatasetCatalog.get(dataset))
    num_faces = len(record["annotations"])
    panels = []
    for name, (model, cfg) in models.items():
        with torch.no_grad():
            instances = model([_model_input(cfg, record["file_name"])])[0]["instances"].to("cpu")
        instances = instances[instances.scores.argsort(descending=True)[:num_faces]]
        rgb = read_image(record["file_name"], "RGB")
        drawn = Visualizer(rgb, MetadataCatalog.get(dataset), scale=2.0).overlay_instances(
            boxes=instances.pred_boxes, labels=[f"{s:.2f}" for s in instances.scores.tolist()]
        )
        panel = drawn.get_image()
        cv2.putText(panel, f"{name}: best {len(instances)} of {num_faces} faces", (8, 24),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
        panels.append(panel)
    cv2.imwrite(path, cv2.cvtColor(np.concatenate(panels, axis=1), cv2.COLOR_RGB2BGR))


def plot_comparison(curves_by_model, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    for ax, setting in zip(axes, ("easy", "medium", "hard")):
        for name, curves in curves_by_model.items():
            curve = curves[setting]
            ax.plot(curve.recall, curve.precision, linewidth=2, label=f"{name} (AP {curve.ap:.3f})")
        ax.set(title=f"mini_faces_val: {setting}", xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.01))
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="output/demo")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides applied to both models")
    args = parser.parse_args(argv)
    setup_logger(name="srn_d2").setLevel(logging.INFO)
    logging.getLogger("detectron2").setLevel(logging.WARNING)
    os.makedirs(args.output, exist_ok=True)

    started = time.perf_counter()
    print(f"mini_faces data: {ensure_mini_faces(datasets_root())}")
    rows, curves, models = [], {}, {}
    for name, config_name in DETECTORS.items():
        row, curves[name], model, cfg = train_and_evaluate(
            name, model_zoo.get_config_file(config_name), args.output, args.opts
        )
        rows.append(row)
        models[name] = (model, cfg)

    plot_comparison(curves, os.path.join(args.output, "pr_curves.png"))
    draw_detections(models, cfg.DATASETS.TEST[0], os.path.join(args.output, "detections.jpg"))
    with open(os.path.join(args.output, "results.json"), "w") as f:
        json.dump(rows, f, indent=2)
    print()
    print("SRN vs RetinaNet on mini_faces_val (WIDER FACE protocol, AP in %; ratios to SRN):")
    print(format_table(rows, COLUMNS, baseline=rows[0]))
    print(f"\nPR curves, detections and results.json in {args.output}/ "
          f"(total {(time.perf_counter() - started) / 60:.1f} min)")


if __name__ == "__main__":
    main()
