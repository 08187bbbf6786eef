"""SRN against Detectron2's RetinaNet, and SRN's ablations, on the embedded mini_faces data:
the library behind ``python -m srn_d2.tools.ablation`` (``make demo``).

Every model is trained from scratch on one budget (the same data, augmentation,
schedule, backbone and anchors: the SRN_mini*.yaml and RetinaNet_mini.yaml
configs), evaluated on mini_faces_val with the WIDER FACE protocol and printed
side by side. With several seeds every cell is the mean and standard deviation
over the seeds, and the paper's WIDER FACE ablation is printed beside.
"""
import json
import logging
import math
import os
import statistics
import time
from typing import Dict, List, NamedTuple, Sequence

import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.engine import HookBase
from detectron2.utils.env import seed_all_rng
from tabulate import tabulate
from tqdm import tqdm

from .. import model_zoo
from ..data import datasets_root, ensure_mini_faces
from ..data.image_io import image_to_tensor, read_image
from ..errors import require
from ..evaluation.widerface_evaluator import WiderFaceEvaluator
from ..evaluation.widerface_protocol import match_image
from ..utils.measure import median_time
from .defaults import setup_cfg
from .trainer import SRNTrainer

logger = logging.getLogger(__name__)


class Detector(NamedTuple):
    config_file: str
    components: str  # SRN's parts it has, as the paper's ablation names them


DETECTORS = {
    "SRN": Detector("SRN_mini.yaml", "STC STR RFE"),
    "noSTC": Detector("SRN_mini_noSTC.yaml", "STR RFE"),
    "noSTR": Detector("SRN_mini_noSTR.yaml", "STC RFE"),
    "noRFE": Detector("SRN_mini_noRFE.yaml", "STC STR"),
    "RetinaNet": Detector("RetinaNet_mini.yaml", "-"),
    "SRN_MobileNetV3": Detector("SRN_MobileNetV3_mini.yaml", "STC STR RFE"),
}
DEMO_MODELS = ("SRN", "RetinaNet")

# The paper's ablation on WIDER FACE val (ResNet-50, AP easy / medium / hard in %),
# as its text states it. "+ STR" is the baseline plus the stated gains of 0.8 / 0.9 / 0.8;
# the text leaves out the hard AP of "+ STC".
PAPER_ABLATION = (
    ("RetinaNet", "-", (95.1, 93.9, 88.0)),
    ("+ STC", "STC", (95.3, 94.4, None)),
    ("+ STR", "STR", (95.9, 94.8, 88.8)),
    ("+ STC + STR", "STC STR", (96.1, 95.0, 90.1)),
    ("SRN", "STC STR RFE", (96.4, 95.3, 90.2)),
)

# (results key, header, digits). APs in %, at IoU 0.5 unless the header says otherwise.
METRICS = (
    ("AP_easy", "AP easy", 1),
    ("AP_medium", "AP medium", 1),
    ("AP_hard", "AP hard", 1),
    ("AP_hard_IoU60", "hard IoU.6", 1),
    ("AP_hard_IoU70", "hard IoU.7", 1),
    ("AP_hard_IoU80", "hard IoU.8", 1),
    ("FP_at_recall80", "FP@R80", 0),
    ("FP_at_recall90", "FP@R90", 0),
    ("train_min", "train min", 1),
    ("infer_ms", "infer ms", 0),
    ("params_M", "params M", 2),
)

# Picture colours (BGR): found faces' boxes, false positives, faces no box found.
TRUE_POSITIVE, FALSE_POSITIVE, MISSED = (60, 200, 60), (40, 40, 230), (0, 215, 255)


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


class Run(NamedTuple):
    row: Dict[str, float]  # model, seed and every METRICS key
    curves: Dict  # setting -> IoU-0.5 PRCurve
    model: torch.nn.Module
    cfg: object


def train_and_evaluate(name: str, seed: int, output_dir: str, opts: Sequence[str]) -> Run:
    config_file = model_zoo.get_config_file(DETECTORS[name].config_file)
    opts = [*opts, "SEED", str(seed), "OUTPUT_DIR", os.path.join(output_dir, f"{name}_seed{seed}")]
    cfg = setup_cfg(config_file, opts)
    # default_setup would seed, but it also reconfigures logging; every model of a seed starts from it.
    seed_all_rng(cfg.SEED)
    # The stock trainer would evaluate after training; evaluating here keeps the PR curves.
    trainer = SRNTrainer(setup_cfg(config_file, [*opts, "DATASETS.TEST", "()"]))
    trainer.register_hooks([ProgressBar(f"{name} (seed {seed})")])
    trainer.resume_or_load(resume=False)
    start = time.perf_counter()
    trainer.train()
    train_minutes = (time.perf_counter() - start) / 60

    model = trainer.model.eval()
    dataset = cfg.DATASETS.TEST[0]
    evaluator = WiderFaceEvaluator.from_config(cfg, dataset, os.path.join(cfg.OUTPUT_DIR, "inference"))
    results = SRNTrainer.test(cfg, model, [evaluator])["widerface"]
    row = {"model": name, "seed": seed, **{key: float(results[key]) for key, _, _ in METRICS if key in results}}
    row["params_M"] = sum(p.numel() for p in model.parameters()) / 1e6
    row["infer_ms"] = 1000 * inference_seconds(cfg, model, dataset)
    row["train_min"] = train_minutes
    return Run(row, evaluator.pr_curves, model, cfg)


def _model_input(cfg, file_name):
    return {"image": image_to_tensor(read_image(file_name, cfg.INPUT.FORMAT)).float()}


def inference_seconds(cfg, model, dataset: str, num_images: int = 10) -> float:
    """Median single-image inference time over the first val images (model only, no I/O)."""
    inputs = [_model_input(cfg, d["file_name"]) for d in DatasetCatalog.get(dataset)[:num_images]]
    queue = iter(inputs * 3)
    with torch.no_grad():
        return median_time(lambda: model([next(queue)]), "cpu", iters=len(inputs), warmup=2)


def format_cell(values: Sequence[float], digits: int) -> str:
    """One value as is; several as ``mean ± sample standard deviation``.

    Several values of which one is not finite (false positives at a recall a run
    never reaches are infinite) have no mean: they are listed, seed by seed.
    """
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    if not all(math.isfinite(value) for value in values):
        return " / ".join(f"{value:.{digits}f}" for value in values)
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def study_table(rows: List[Dict[str, float]]) -> str:
    """One line per model (in order of first appearance), its cells over all its seeds."""
    models = list(dict.fromkeys(row["model"] for row in rows))
    lines = []
    for name in models:
        runs = [row for row in rows if row["model"] == name]
        cells = [format_cell([row[key] for row in runs], digits) for key, _, digits in METRICS]
        lines.append([name, DETECTORS[name].components, len(runs), *cells])
    headers = ["model", "parts", "seeds", *(header for _, header, _ in METRICS)]
    return tabulate(lines, headers, tablefmt="github", disable_numparse=True)


def paper_table() -> str:
    lines = [
        [name, parts, *("-" if ap is None else f"{ap:.1f}" for ap in aps)]
        for name, parts, aps in PAPER_ABLATION
    ]
    return tabulate(lines, ["paper", "parts", "AP easy", "AP medium", "AP hard"], tablefmt="github",
                    disable_numparse=True)


def record_with_most_faces(records):
    return max(records, key=lambda d: len(d["annotations"]))


def draw_detections(runs: Dict[str, Run], dataset: str, path: str, score_threshold: float) -> None:
    """One :func:`detection_panel` per model, side by side, on the val image with most faces."""
    record = record_with_most_faces(DatasetCatalog.get(dataset))
    faces = np.array([face["bbox"] for face in record["annotations"]], dtype=np.float64).reshape(-1, 4)
    image = read_image(record["file_name"], "BGR")
    panels = []
    for name, run in runs.items():
        with torch.no_grad():
            instances = run.model([_model_input(run.cfg, record["file_name"])])[0]["instances"].to("cpu")
        panels.append(detection_panel(
            image, faces, instances.pred_boxes.tensor.numpy(), instances.scores.numpy(), score_threshold, name
        ))
    cv2.imwrite(path, np.concatenate(panels, axis=1))


def detection_panel(image: np.ndarray, faces_xywh: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                    score_threshold: float, name: str, scale: int = 2) -> np.ndarray:
    """The detections scoring at least ``score_threshold``, coloured by the WIDER FACE protocol.

    Each box is a true positive (green) or a false positive (red) at IoU 0.5
    (:func:`match_image`); faces that no box found are yellow. A caption above
    the image counts each.

    Args:
        image: (H, W, 3) uint8 BGR. faces_xywh: (m, 4). boxes: (n, 4) x1, y1, x2, y2; scores: (n,).
    Returns:
        (scale * H + 46, scale * W, 3) uint8 BGR (a two-line caption above the image).
    """
    kept = scores >= score_threshold
    boxes = np.asarray(boxes, dtype=np.float64)[kept]
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    true_positive, found = match_image(xywh, scores[kept], faces_xywh)

    panel = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    for x, y, w, h in faces_xywh[~found]:
        _rectangle(panel, scale * np.array([x, y, x + w, y + h]), MISSED)
    for box, correct in zip(boxes, true_positive):
        _rectangle(panel, scale * box, TRUE_POSITIVE if correct else FALSE_POSITIVE)
    caption = (f"{name}, detections with score >= {score_threshold:g}:",
               f"{int(true_positive.sum())} true (green), {int((~true_positive).sum())} false (red); "
               f"{int((~found).sum())} of {len(found)} faces missed (yellow)")
    return _with_caption(panel, caption)


def _rectangle(image, x1y1x2y2, color):
    x1, y1, x2, y2 = (int(round(v)) for v in x1y1x2y2)
    cv2.rectangle(image, (x1, y1), (x2, y2), color, 2)


CAPTION_LINE_HEIGHT = 20


def _with_caption(image, lines: Sequence[str]) -> np.ndarray:
    banner = np.full((CAPTION_LINE_HEIGHT * len(lines) + 6, image.shape[1], 3), 255, dtype=np.uint8)
    for index, line in enumerate(lines):
        cv2.putText(banner, line, (6, CAPTION_LINE_HEIGHT * (index + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([banner, image], axis=0)


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


def run_study(models: Sequence[str], seeds: int, output: str, opts: Sequence[str] = (),
              score_threshold: float = 0.5) -> str:
    """Train and evaluate each of ``models`` with seeds 1..``seeds``; write the PR curves,
    the picture of detections, table.md and results.json to ``output``; return the report."""
    require(seeds >= 1, "--seeds", seeds, "must be at least 1")
    os.makedirs(output, exist_ok=True)
    started = time.perf_counter()
    print(f"mini_faces data: {ensure_mini_faces(datasets_root())}")
    rows, first_runs = [], {}
    for seed in range(1, seeds + 1):
        for name in models:
            run = train_and_evaluate(name, seed, output, opts)
            rows.append(run.row)
            if seed == 1:
                first_runs[name] = run
            # Written after every run, so that an interrupted study keeps what it finished.
            with open(os.path.join(output, "results.json"), "w") as f:
                json.dump(rows, f, indent=2)

    dataset = next(iter(first_runs.values())).cfg.DATASETS.TEST[0]
    plot_comparison({name: run.curves for name, run in first_runs.items()}, os.path.join(output, "pr_curves.png"))
    draw_detections(first_runs, dataset, os.path.join(output, "detections.jpg"), score_threshold)
    num_images = len(DatasetCatalog.get(dataset))
    spread = "one sample: seed 1 only" if seeds == 1 else f"mean ± standard deviation over seeds 1..{seeds}"
    report = "\n".join([
        f"{dataset} ({num_images} images), WIDER FACE protocol, AP in % at IoU 0.5 unless stated; {spread}:",
        study_table(rows),
        "",
        "The paper's ablation on WIDER FACE val (ResNet-50, full training; AP in %):",
        paper_table(),
    ])
    with open(os.path.join(output, "table.md"), "w") as f:
        f.write(report + "\n")
    print()
    print(report)
    print(f"\nPR curves, detections (score >= {score_threshold:g}), table.md and results.json in "
          f"{output}/ (total {(time.perf_counter() - started) / 60:.1f} min)")

    return report
