"""How well anchor configurations cover real faces (the library behind
``python -m srn_d2.tools.anchor_stats``).

For each anchor configuration (default: the SRN anchors of configs/Base-SRN.yaml
and detectron2's RetinaNet anchors, model zoo Base-RetinaNet.yaml: sizes 32..512
with 3 octave scales, ratios 0.5 / 1 / 2, strides 8..128), the table gives the
fraction of faces whose best anchor reaches each IoU threshold and the mean
number of anchors per face at or above it (the positives a matcher without
the low-quality rule would assign).

Ground truth: a WIDER FACE ``wider_face_<split>.mat`` (or the folder holding
it) or a ``wider_face_<split>_bbx_gt.txt``. Faces of zero width or height are
skipped. Neither file records image sizes, so anchors are laid over
``--image-size`` if given, else over the faces' extent (largest x2, y2), in
both cases times ``--scale`` and rounded up to ``--size-divisibility`` (128, the
padding of SRN's backbone) as the network's input would be. Anchors of the
real (larger) input centred beyond that extent keep at least half their area
outside every face, so they cannot exceed IoU 0.5: the extent is a close
stand-in for the unknown image size.

Exact and fast: IoU is computed only for anchors that can reach the smallest
threshold t. IoU <= min(wa, wf) * min(ha, hf) / max(area_a, area_f) rules out
cell-anchor shapes for a face, and on the grid only the positions whose anchor
overlaps the face at all are visited; these candidate lists are processed in
chunks of bounded size.
"""

from ..utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
import os
import re
import time
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_anchor_generator
from tabulate import tabulate

from .. import model_zoo
from ..config import get_srn_cfg
from ..data.annotation_text import read_counted_records
from ..engine.config_files import merge_config_file
from ..errors import InputError, require
from ..evaluation.widerface_gt import read_faces_mat
from ..modeling.levels import SRN_LEVELS
from ..utils.box_iou import aligned_iou

SRN_CONFIG = model_zoo.get_config_file("Base-SRN.yaml")
RETINANET_CONFIG = "Base-RetinaNet.yaml"
# Columns of a wider_face_*_bbx_gt.txt face line: x y w h and six attributes.
_WIDER_TXT_FIELDS = 10


def load_wider_faces(path: str, split: str = "val") -> Tuple[List[str], List[np.ndarray]]:
    """Image names and per-image (N, 4) face boxes (x, y, w, h) of a WIDER FACE ground truth."""
    if os.path.isdir(path):
        path = os.path.join(path, f"wider_face_{split}.mat")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ground truth {path} not found")
    if path.endswith(".mat"):
        _, file_lists, box_lists = read_faces_mat(path)
        names = [name for names in file_lists for name in names]
        boxes = [b.astype(np.float64) for per_event in box_lists for b in per_event]
        return names, boxes
    if path.endswith(".txt"):
        parsed = read_counted_records(path, _WIDER_TXT_FIELDS, zero_count_placeholder=True)
        splits = np.cumsum(parsed.counts)[:-1]
        return list(parsed.names), np.split(parsed.records[:, :4], splits)
    raise InputError(f"{path}: expected a .mat file, a folder holding one, or a _bbx_gt.txt file")


@dataclass(frozen=True)
class AnchorTiling:
    """Every cell-anchor shape of every level, flattened: anchor k of level l at grid
    cell (i, j) is ``cell[u] + ((j + offset) * stride[u], (i + offset) * stride[u])``."""

    cell: torch.Tensor  # (U, 4) float64
    stride: torch.Tensor  # (U,) float64
    offset: float

    @classmethod
    def from_generator(cls, generator) -> "AnchorTiling":
        cells = list(generator.cell_anchors)
        strides = [
            torch.full((len(c),), float(s), dtype=torch.float64)
            for c, s in zip(cells, generator.strides)
        ]
        return cls(torch.cat(cells).double(), torch.cat(strides), float(generator.offset))


def anchor_strides(cfg) -> List[int]:
    """Strides of the levels the config's detector puts anchors on."""
    if cfg.MODEL.META_ARCHITECTURE == "SRN":
        names, key = SRN_LEVELS, "SRN levels"
    elif cfg.MODEL.META_ARCHITECTURE == "RetinaNet":
        names, key = cfg.MODEL.RETINANET.IN_FEATURES, "MODEL.RETINANET.IN_FEATURES"
    else:
        require(
            False,
            "MODEL.META_ARCHITECTURE",
            cfg.MODEL.META_ARCHITECTURE,
            "only SRN and RetinaNet are known",
        )
    strides = []
    for name in names:
        match = re.fullmatch(r"p(\d+)", name)
        if match is None:
            raise InputError(f"{key}: cannot tell the stride of feature {name!r} (expected pN)")
        strides.append(2 ** int(match[1]))
    return strides


def load_config(config_file: str):
    cfg = get_srn_cfg()
    merge_config_file(cfg, config_file)
    return cfg


def tiling_of_config(cfg) -> AnchorTiling:
    shapes = [ShapeSpec(stride=s) for s in anchor_strides(cfg)]
    return AnchorTiling.from_generator(build_anchor_generator(cfg, shapes))


def count_anchor_matches(
    faces: torch.Tensor,
    extents: torch.Tensor,
    tiling: AnchorTiling,
    thresholds: Sequence[float] = (0.5, 0.7),
    max_elements: int = 1 << 20,
) -> torch.Tensor:
    """Per face, the number of anchors with IoU >= each threshold.

    Args:
        faces: (F, 4) face boxes (x1, y1, x2, y2).
        extents: (F, 2) height and width of the input each face's anchors cover.
        tiling: the anchors.
        thresholds: IoU thresholds.
        max_elements: candidates (face, anchor) handled at once.

    Returns:
        (F, T) int64 counts.
    """
    faces = faces.double()
    extents = extents.double()
    counts = torch.zeros((len(faces), len(thresholds)), dtype=torch.int64)
    if len(faces) == 0:
        return counts
    t_min = min(thresholds)
    cell_w = tiling.cell[:, 2] - tiling.cell[:, 0]
    cell_h = tiling.cell[:, 3] - tiling.cell[:, 1]
    face_w = faces[:, 2] - faces[:, 0]
    face_h = faces[:, 3] - faces[:, 1]
    # Upper bound of the IoU of any anchor of each shape with each face.
    bound = (
        torch.minimum(face_w[:, None], cell_w)
        * torch.minimum(face_h[:, None], cell_h)
        / torch.maximum((face_w * face_h)[:, None], cell_w * cell_h)
    )
    face_index, shape_index = torch.nonzero(bound >= t_min, as_tuple=True)

    # Grid positions whose anchor overlaps the face: (j + offset) * stride strictly
    # between face x1 - cell x2 and face x2 - cell x1; widened by one at each end.
    stride = tiling.stride[shape_index]
    face = faces[face_index]
    cell = tiling.cell[shape_index]
    grid = torch.ceil(extents[face_index] / stride[:, None])  # (P, 2): rows, columns
    low = torch.floor((face[:, :2] - cell[:, 2:]) / stride[:, None] - tiling.offset)
    high = torch.ceil((face[:, 2:] - cell[:, :2]) / stride[:, None] - tiling.offset)
    low = low.clamp(min=0).flip(1)  # (P, 2): i, j
    high = torch.minimum(high.flip(1), grid - 1)
    size = (high - low + 1).clamp(min=0).long()
    num = size[:, 0] * size[:, 1]

    ends = torch.cumsum(num, dim=0)
    starts = ends - num
    thresholds_t = torch.tensor(thresholds, dtype=torch.float64)
    start = 0
    while start < len(num):
        stop = max(
            start + 1, int(torch.searchsorted(ends, starts[start] + max_elements, right=True))
        )
        pair = torch.repeat_interleave(torch.arange(start, stop), num[start:stop])
        # Position of each candidate within its pair's window, row-major.
        local = torch.arange(len(pair)) - (starts[pair] - starts[start])
        cols = size[pair, 1]
        i = low[pair, 0] + torch.div(local, cols, rounding_mode="floor")
        j = low[pair, 1] + local % cols
        shift = (torch.stack([j, i, j, i], dim=1) + tiling.offset) * stride[pair, None]
        iou = aligned_iou(cell[pair] + shift, face[pair])
        counts.index_add_(0, face_index[pair], (iou[:, None] >= thresholds_t).long())
        start = stop
    return counts


def _xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def prepare_faces(
    per_image: Sequence[np.ndarray],
    scale: float = 1.0,
    image_size: Optional[Tuple[int, int]] = None,
    size_divisibility: int = 128,
) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Scaled (F, 4) xyxy faces of all images, their (F, 2) anchor extents, and
    the number of faces skipped for zero width or height."""
    faces, extents, skipped = [], [], 0
    for boxes in per_image:
        valid = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
        skipped += int((~valid).sum())
        xyxy = _xywh_to_xyxy(boxes[valid]) * scale
        if len(xyxy) == 0:
            continue
        if image_size is not None:
            extent = np.array(image_size, dtype=np.float64) * scale
        else:
            extent = np.array([xyxy[:, 3].max(), xyxy[:, 2].max()])
        extent = np.ceil(extent / size_divisibility) * size_divisibility
        faces.append(xyxy)
        extents.append(np.broadcast_to(extent, (len(xyxy), 2)))
    if not faces:
        return (
            torch.zeros((0, 4), dtype=torch.float64),
            torch.zeros((0, 2), dtype=torch.float64),
            skipped,
        )
    return (
        torch.from_numpy(np.concatenate(faces)),
        torch.from_numpy(np.concatenate(extents)),
        skipped,
    )


def coverage_stats(counts: torch.Tensor, thresholds: Sequence[float]) -> Dict[str, float]:
    """Fraction of faces reaching each threshold and mean anchors per face at it."""
    stats = {}
    for k, t in enumerate(thresholds):
        stats[f"reach {t:g}"] = (
            float((counts[:, k] > 0).double().mean()) if len(counts) else float("nan")
        )
        stats[f"anchors/face {t:g}"] = (
            float(counts[:, k].double().mean()) if len(counts) else float("nan")
        )
    return stats


def default_configs() -> Dict[str, object]:
    with warnings.catch_warnings():
        # detectron2.model_zoo imports pkg_resources, deprecated by setuptools (still provided by < 81).
        warnings.filterwarnings(
            "ignore", message="pkg_resources is deprecated", category=UserWarning
        )
        from detectron2 import model_zoo as d2_model_zoo
    return {
        "SRN (Base-SRN.yaml)": load_config(SRN_CONFIG),
        "RetinaNet (detectron2 Base-RetinaNet.yaml)": load_config(
            d2_model_zoo.get_config_file(RETINANET_CONFIG)
        ),
    }


def anchor_coverage(
    gt: str,
    split: str = "val",
    config_files: Sequence[str] = (),
    scale: float = 1.0,
    max_images: int = 0,
    image_size: Optional[Tuple[int, int]] = None,
    size_divisibility: int = 128,
    ious: Sequence[float] = (0.5, 0.7),
) -> Tuple[Dict[str, Dict[str, float]], str]:
    """Coverage of the faces of ``gt`` by each config's anchors (module docstring):
    ``{label: {"reach T": fraction, "anchors/face T": mean}}`` and the printed table."""
    start = time.perf_counter()
    names, per_image = load_wider_faces(gt, split)
    if max_images > 0:
        names, per_image = names[:max_images], per_image[:max_images]
    faces, extents, skipped = prepare_faces(per_image, scale, image_size, size_divisibility)
    configs = (
        {os.path.basename(f): load_config(f) for f in config_files}
        if config_files
        else default_configs()
    )

    results, rows = {}, []
    for label, cfg in configs.items():
        counts = count_anchor_matches(faces, extents, tiling_of_config(cfg), ious)
        results[label] = coverage_stats(counts, ious)
        rows.append(
            [label]
            + [
                f"{v:.2%}" if k.startswith("reach") else f"{v:.2f}"
                for k, v in results[label].items()
            ]
        )
    headers = ["anchors"] + [
        f"faces with IoU>={t:g}" if k == 0 else f"anchors/face IoU>={t:g}"
        for t in ious
        for k in range(2)
    ]
    report = (
        f"{len(faces)} faces in {len(names)} images (skipped {skipped} of zero size), scale {scale:g}, "
        f"{time.perf_counter() - start:.1f} s\n" + tabulate(rows, headers=headers, tablefmt="pipe")
    )
    return results, report
