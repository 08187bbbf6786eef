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
import re
import statistics
import time
from typing import Dict, List, NamedTuple, Sequence, Tuple

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
from ..engine.defaults import setup_cfg, split_overrides
from ..engine.trainer import SRNTrainer
from ..errors import InputError, require
from ..evaluation.widerface_evaluator import WiderFaceEvaluator
from ..evaluation.widerface_protocol import match_image
from ..utils.file_io import check_output_folder, save_figure, write_image, write_text
from ..utils.measure import median_time

logger = logging.getLogger(__name__)


class Detector(NamedTuple):
    config_file: str
    components: str  # SRN's parts it has, as the paper's ablation names them
    opts: Tuple[str, ...] = ()


_LEVELS = ("p2", "p3", "p4", "p5", "p6", "p7")

DETECTORS = {
    # The paper's ablation: its RetinaNet (SRN's network without STC, STR, RFE), one part added at a time.
    "paper_RetinaNet": Detector("RetinaNet_paper_mini.yaml", "-"),
    "paper_STC": Detector("RetinaNet_paper_mini_STC.yaml", "STC"),
    "paper_STR": Detector("RetinaNet_paper_mini_STR.yaml", "STR"),
    "paper_STC_STR": Detector("RetinaNet_paper_mini_STC_STR.yaml", "STC STR"),
    "SRN": Detector("SRN_mini.yaml", "STC STR RFE"),
    # Detectron2's RetinaNet on the same data and anchors: what users benchmark against.
    "RetinaNet": Detector("RetinaNet_mini.yaml", "Detectron2"),
    # SRN with one part left out.
    "noSTC": Detector("SRN_mini_noSTC.yaml", "STR RFE"),
    "noSTR": Detector("SRN_mini_noSTR.yaml", "STC RFE"),
    "noRFE": Detector("SRN_mini_noRFE.yaml", "STC STR"),
    # The size ladder (srn_d2.apps.ladder), smallest first, with Detectron2's RetinaNet on its backbones.
    "SRN_MobileNetV3Small": Detector("SRN_MobileNetV3Small_mini.yaml", "STC STR RFE"),
    "SRN_MobileNetV3": Detector("SRN_MobileNetV3_mini.yaml", "STC STR RFE"),
    "SRN_R_50": Detector("SRN_R_50_mini.yaml", "STC STR RFE"),
    "RetinaNet_MobileNetV3Small": Detector("RetinaNet_MobileNetV3Small_mini.yaml", "Detectron2"),
    "RetinaNet_MobileNetV3": Detector("RetinaNet_MobileNetV3_mini.yaml", "Detectron2"),
    "RetinaNet_R_50": Detector("RetinaNet_R_50_mini.yaml", "Detectron2"),
    # The paper's per-level experiments: two-step classification, or regression, on one level of its RetinaNet.
    **{
        f"STC_{level}": Detector(
            "RetinaNet_paper_mini.yaml", f"STC {level}", ("MODEL.SRN.STC_LEVELS", f"['{level}']")
        )
        for level in _LEVELS
    },
    **{
        f"STR_{level}": Detector(
            "RetinaNet_paper_mini.yaml", f"STR {level}", ("MODEL.SRN.STR_LEVELS", f"['{level}']")
        )
        for level in _LEVELS
    },
}
STUDIES = {
    "demo": ("SRN", "RetinaNet"),
    "paper": ("paper_RetinaNet", "paper_STC", "paper_STR", "paper_STC_STR", "SRN", "RetinaNet"),
    "leave_one_out": ("SRN", "noSTC", "noSTR", "noRFE", "RetinaNet"),
    "levels": (
        "paper_RetinaNet",
        *(f"STC_{level}" for level in _LEVELS),
        *(f"STR_{level}" for level in _LEVELS),
    ),
}
DEMO_MODELS = STUDIES["demo"]


def parse_model(entry: str) -> Tuple[str, Detector, Tuple[str, ...]]:
    """``"NAME[:KEY=VALUE,...]"`` -> (row label, its detector, its own overrides)."""
    name, opts = split_overrides(entry, "--models")
    require(name in DETECTORS, "--models", entry, f"names no model; known: {sorted(DETECTORS)}")
    return entry, DETECTORS[name], (*DETECTORS[name].opts, *opts)


# The paper's ablation on WIDER FACE val (ResNet-50, AP easy / medium / hard in %),
# as its text states it, by the study's model that builds each row. "+ STR" is the
# baseline plus the stated gains of 0.8 / 0.9 / 0.8; the text leaves out the hard AP of "+ STC".
PAPER_ABLATION = (
    ("RetinaNet", "paper_RetinaNet", (95.1, 93.9, 88.0)),
    ("+ STC", "paper_STC", (95.3, 94.4, None)),
    ("+ STR", "paper_STR", (95.9, 94.8, 88.8)),
    ("+ STC + STR", "paper_STC_STR", (96.1, 95.0, 90.1)),
    ("SRN", "SRN", (96.4, 95.3, 90.2)),
)

# The directions the paper reports on its own rows: (claim, metric, model, against, sign of model - against).
PAPER_DIRECTIONS = (
    (
        "STC cuts false positives at 90% recall",
        "FP_at_recall90",
        "paper_STC",
        "paper_RetinaNet",
        -1,
    ),
    (
        "STC cuts false positives at 80% recall",
        "FP_at_recall80",
        "paper_STC",
        "paper_RetinaNet",
        -1,
    ),
    ("STR raises hard AP at IoU 0.7", "AP_hard_IoU70", "paper_STR", "paper_RetinaNet", 1),
    ("STR raises hard AP at IoU 0.8", "AP_hard_IoU80", "paper_STR", "paper_RetinaNet", 1),
    ("SRN beats the paper's RetinaNet on hard AP", "AP_hard", "SRN", "paper_RetinaNet", 1),
    ("SRN beats Detectron2's RetinaNet on hard AP", "AP_hard", "SRN", "RetinaNet", 1),
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
    # Landmark models only: normalized mean error in % of the face's box size (evaluation/landmark_error.py).
    ("NME", "NME %", 2),
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
        self.bar = tqdm(
            total=self.trainer.max_iter, initial=self.trainer.start_iter, desc=f"train {self.name}"
        )

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


def train_and_evaluate(entry: str, seed: int, output_dir: str, opts: Sequence[str]) -> Run:
    """Train the model ``entry`` names (:func:`parse_model`) with ``seed`` and evaluate it."""
    name, detector, own_opts = parse_model(entry)
    config_file = model_zoo.get_config_file(detector.config_file)
    folder = re.sub(r"[^A-Za-z0-9_.=-]+", "_", name)
    opts = [
        *own_opts,
        *opts,
        "SEED",
        str(seed),
        "OUTPUT_DIR",
        os.path.join(output_dir, f"{folder}_seed{seed}"),
    ]
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
    evaluator = WiderFaceEvaluator.from_config(
        cfg, dataset, os.path.join(cfg.OUTPUT_DIR, "inference")
    )
    results = SRNTrainer.test(cfg, model, [evaluator])["widerface"]
    row = {
        "model": name,
        "seed": seed,
        **{key: float(results[key]) for key, _, _ in METRICS if key in results},
    }
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
    """One value as is; several as ``mean ± sample standard deviation``; none (a metric the
    model does not have, such as the landmark error of a model without landmarks) as "-".

    Several values of which one is not finite (false positives at a recall a run
    never reaches are infinite) have no mean: they are listed, seed by seed.
    """
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    if not all(math.isfinite(value) for value in values):
        return " / ".join(f"{value:.{digits}f}" for value in values)
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _runs_by_model(rows: List[Dict[str, float]]) -> Dict[str, List[Dict[str, float]]]:
    """Each model's rows, models in order of first appearance."""
    runs: Dict[str, List[Dict[str, float]]] = {}
    for row in rows:
        runs.setdefault(row["model"], []).append(row)
    return runs


def study_table(rows: List[Dict[str, float]]) -> str:
    """One line per model (in order of first appearance), its cells over all its seeds."""
    lines = []
    for name, runs in _runs_by_model(rows).items():
        cells = [
            format_cell([row[key] for row in runs if key in row], digits)
            for key, _, digits in METRICS
        ]
        lines.append([name, parse_model(name)[1].components, len(runs), *cells])
    headers = ["model", "parts", "seeds", *(header for _, header, _ in METRICS)]
    return tabulate(lines, headers, tablefmt="github", disable_numparse=True)


def paper_table() -> str:
    lines = [
        [
            name,
            DETECTORS[model].components,
            model,
            *("-" if ap is None else f"{ap:.1f}" for ap in aps),
        ]
        for name, model, aps in PAPER_ABLATION
    ]
    return tabulate(
        lines,
        ["paper", "parts", "study's model", "AP easy", "AP medium", "AP hard"],
        tablefmt="github",
        disable_numparse=True,
    )


def difference(values: Sequence[float], others: Sequence[float]) -> Tuple[float, float]:
    """Difference of the means and its standard error, sqrt(s_a^2 / n_a + s_b^2 / n_b)."""
    error = math.sqrt(
        statistics.variance(values) / len(values) + statistics.variance(others) / len(others)
    )
    return statistics.mean(values) - statistics.mean(others), error


def directions_table(rows: List[Dict[str, float]]) -> str:
    """The paper's directions (:data:`PAPER_DIRECTIONS`) measured on the study's models with
    at least two seeds each: the difference of the means, its standard error, and whether it
    goes the paper's way by more than two standard errors ("reproduced"), the other way by
    more than two ("reversed"), or neither ("within 2 SE"). "" when no claim can be measured."""
    runs = _runs_by_model(rows)
    lines = []
    for claim, key, model, against, sign in PAPER_DIRECTIONS:
        if len(runs.get(model, [])) < 2 or len(runs.get(against, [])) < 2:
            continue
        values = [row.get(key, math.nan) for row in runs[model]]
        others = [row.get(key, math.nan) for row in runs[against]]
        if not all(math.isfinite(v) for v in values + others):
            continue
        diff, error = difference(values, others)
        if sign * diff > 2 * error:
            verdict = "reproduced"
        elif sign * diff < -2 * error:
            verdict = "reversed"
        else:
            verdict = "within 2 SE"
        lines.append([claim, f"{model} - {against}", f"{diff:+.1f} ± {error:.1f}", verdict])
    if not lines:
        return ""
    return tabulate(
        lines,
        ["the paper's direction", "difference", "mean ± SE", "measured"],
        tablefmt="github",
        disable_numparse=True,
    )


def study_report(rows: List[Dict[str, float]], dataset: str, num_images: int) -> str:
    """The study table, the paper's directions measured, and the paper's ablation."""
    seeds = sorted({row["seed"] for row in rows})
    spread = (
        f"one sample: seed {seeds[0]} only"
        if len(seeds) == 1
        else f"mean ± standard deviation over seeds {seeds[0]}..{seeds[-1]}"
    )
    parts = [
        f"{dataset} ({num_images} images), WIDER FACE protocol, AP in % at IoU 0.5 unless stated; {spread}:",
        study_table(rows),
    ]
    directions = directions_table(rows)
    if directions:
        parts += [
            "",
            "The paper's directions on its own rows, measured here (difference of means ± standard error):",
            directions,
        ]
    parts += [
        "",
        "The paper's ablation on WIDER FACE val (ResNet-50, full training; AP in %):",
        paper_table(),
    ]
    return "\n".join(parts)


def record_with_most_faces(records):
    return max(records, key=lambda d: len(d["annotations"]))


def draw_detections(runs: Dict[str, Run], dataset: str, path: str, score_threshold: float) -> None:
    """One :func:`detection_panel` per model, side by side, on the val image with most faces."""
    record = record_with_most_faces(DatasetCatalog.get(dataset))
    faces = np.array([face["bbox"] for face in record["annotations"]], dtype=np.float64).reshape(
        -1, 4
    )
    image = read_image(record["file_name"], "BGR")
    panels = []
    for name, run in runs.items():
        with torch.no_grad():
            instances = run.model([_model_input(run.cfg, record["file_name"])])[0]["instances"].to(
                "cpu"
            )
        panels.append(
            detection_panel(
                image,
                faces,
                instances.pred_boxes.tensor.numpy(),
                instances.scores.numpy(),
                score_threshold,
                name,
            )
        )
    write_image(path, np.concatenate(panels, axis=1))


def detection_panel(
    image: np.ndarray,
    faces_xywh: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    score_threshold: float,
    name: str,
    scale: int = 2,
) -> np.ndarray:
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
    caption = (
        f"{name}, detections with score >= {score_threshold:g}:",
        f"{int(true_positive.sum())} true (green), {int((~true_positive).sum())} false (red); "
        f"{int((~found).sum())} of {len(found)} faces missed (yellow)",
    )
    return _with_caption(panel, caption)


def _rectangle(image, x1y1x2y2, color):
    x1, y1, x2, y2 = (int(round(v)) for v in x1y1x2y2)
    cv2.rectangle(image, (x1, y1), (x2, y2), color, 2)


CAPTION_LINE_HEIGHT = 20


def _with_caption(image, lines: Sequence[str]) -> np.ndarray:
    banner = np.full((CAPTION_LINE_HEIGHT * len(lines) + 6, image.shape[1], 3), 255, dtype=np.uint8)
    for index, line in enumerate(lines):
        cv2.putText(
            banner,
            line,
            (6, CAPTION_LINE_HEIGHT * (index + 1)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
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
        ax.set(
            title=f"mini_faces_val: {setting}",
            xlabel="Recall",
            ylabel="Precision",
            xlim=(0, 1),
            ylim=(0, 1.01),
        )
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower left")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def run_study(
    models: Sequence[str],
    seeds: int,
    output: str,
    opts: Sequence[str] = (),
    score_threshold: float = 0.5,
    first_seed: int = 1,
) -> str:
    """Train and evaluate each of ``models`` (:func:`parse_model` entries) with seeds
    ``first_seed`` .. ``first_seed + seeds - 1``; write the PR curves, the picture of
    detections, table.md and results.json to ``output``; return the report."""
    require(seeds >= 1, "--seeds", seeds, "must be at least 1")
    for entry in models:
        parse_model(entry)
    check_output_folder(output)
    started = time.perf_counter()
    print(f"mini_faces data: {ensure_mini_faces(datasets_root())}")
    rows, first_runs = [], {}
    for seed in range(first_seed, first_seed + seeds):
        for name in models:
            run = train_and_evaluate(name, seed, output, opts)
            rows.append(run.row)
            if seed == first_seed:
                first_runs[name] = run
            # Written after every run, so that an interrupted study keeps what it finished.
            write_text(os.path.join(output, "results.json"), json.dumps(rows, indent=2))

    dataset = next(iter(first_runs.values())).cfg.DATASETS.TEST[0]
    plot_comparison(
        {name: run.curves for name, run in first_runs.items()},
        os.path.join(output, "pr_curves.png"),
    )
    draw_detections(first_runs, dataset, os.path.join(output, "detections.jpg"), score_threshold)
    report = study_report(rows, dataset, len(DatasetCatalog.get(dataset)))
    write_text(os.path.join(output, "table.md"), report + "\n")
    print()
    print(report)
    print(
        f"\nPR curves, detections (score >= {score_threshold:g}), table.md and results.json in "
        f"{output}/ (total {(time.perf_counter() - started) / 60:.1f} min)"
    )

    return report


def read_results(paths: Sequence[str]) -> List[Dict[str, float]]:
    """The runs of results.json files (of studies or of the ladder, run apart), in order.

    A (model, seed) that several files hold is taken from the first and the
    others are logged and left out, so that no run counts twice in a mean.
    """
    runs, seen, repeated = [], set(), []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                rows = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(
                f"{path}: not a results.json of srn_d2.tools.ablation or ladder ({error})"
            ) from None
        valid = isinstance(rows, list) and all(
            isinstance(row, dict)
            and isinstance(row.get("model"), str)
            and type(row.get("seed")) is int
            and all(isinstance(value, (int, float)) for key, value in row.items() if key != "model")
            for row in rows
        )
        if not valid:
            raise InputError(
                f"{path}: not a results.json: expected a list of runs, each with a model name, "
                "an integer seed and numbers"
            )
        for row in rows:
            key = (row["model"], row["seed"])
            if key in seen:
                repeated.append(f"{path}: {key[0]} seed {key[1]}")
            else:
                seen.add(key)
                runs.append(row)
    if repeated:
        logger.warning(
            f"left out {len(repeated)} runs that an earlier results file holds: {repeated}"
        )
    return runs


def report_from_results(paths: Sequence[str], dataset: str = "mini_faces_val") -> str:
    """The report of the rows of one or more results.json files, e.g. of studies run apart."""
    rows = read_results(paths)
    require(bool(rows), "--report", list(paths), "holds no results")
    ensure_mini_faces(datasets_root())
    return study_report(rows, dataset, len(DatasetCatalog.get(dataset)))
