"""Anchor matching: SparseGridMatcher against Detectron2's dense Matcher, side by side.

    python benchmarks/benchmark_matching.py [--faces 200 2000] [--size 1024] [--device cuda]

For each number of faces (random face-like boxes, 6 px to a third of the
image) and each of SRN's two steps, both matchers label SRN's anchors of a
size x size image in this one process; step 2 matches the STR levels' anchors
after a random refinement, as in training. Prints the median time and the
peak memory of each, the ratios, and whether the labels (and the matches the
sparse matcher promises) are Detectron2's.
"""

from srn_d2.utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
import argparse
import gc
import math

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_anchor_generator
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, pairwise_iou

from srn_d2 import model_zoo
from srn_d2.engine import setup_cfg
from srn_d2.apps.benchmark import random_faces
from srn_d2.modeling import AnchorLevel, LevelPlan, SparseGridMatcher
from srn_d2.utils.measure import MIB, PeakMemory, format_table, median_time


def srn_anchor_levels(size: int, device: str, refine_str_levels: bool):
    """SRN's anchors of a size x size image, per level; STR levels jittered (refined) if asked."""
    cfg = setup_cfg(model_zoo.get_config_file("Base-SRN.yaml"), ["MODEL.DEVICE", device])
    plan = LevelPlan.from_config(cfg)
    strides = [plan.stride(level) for level in plan.levels]
    generator = build_anchor_generator(cfg, [ShapeSpec(stride=s) for s in strides])
    maps = [
        torch.zeros(1, 1, math.ceil(size / s), math.ceil(size / s), device=device) for s in strides
    ]
    noise = torch.Generator().manual_seed(1)
    levels = []
    for level, stride, feature, anchors, cells in zip(
        plan.levels, strides, maps, generator(maps), generator.num_cell_anchors
    ):
        boxes = anchors.tensor
        if refine_str_levels and level in plan.str_levels:
            jitter = torch.randn(boxes.shape, generator=noise).to(device) * 0.1
            levels.append(AnchorLevel(boxes + jitter * (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)))
        else:
            levels.append(AnchorLevel(boxes, (feature.shape[-2], feature.shape[-1], cells), stride))
    return cfg, levels


def _measure(run, device):
    gc.collect()
    with PeakMemory(device) as peak:
        result = run()
    return result, peak.peak_bytes / MIB, median_time(run, device, iters=3, warmup=1)


def compare(num_faces: int, size: int, device: str, step: str):
    cfg, levels = srn_anchor_levels(size, device, refine_str_levels=step == "step2")
    thresholds = (
        cfg.MODEL.SRN.STEP1_IOU_THRESHOLDS
        if step == "step1"
        else cfg.MODEL.SRN.STEP2_IOU_THRESHOLDS
    )
    labels = cfg.MODEL.SRN.IOU_LABELS
    faces = Boxes(random_faces(num_faces, size, torch.Generator().manual_seed(0)).to(device))
    anchors = Boxes(torch.cat([level.boxes for level in levels]))
    dense = Matcher(thresholds, labels, allow_low_quality_matches=True)
    sparse = SparseGridMatcher(thresholds, labels, True, max_pairs=cfg.MODEL.SRN.MATCHER_MAX_PAIRS)

    def run_dense():
        iou = pairwise_iou(faces, anchors)
        matches, match_labels = dense(iou)
        best = iou.max(dim=0).values
        floor = min(thresholds[0], float(iou.max(dim=1).values.min()))
        return matches, match_labels, best >= floor

    # The sparse matcher first: after the dense one, its allocations would land in pages
    # the dense matrix's gigabytes just handed back, and time their faults.
    (sparse_matches, sparse_labels), sparse_mib, sparse_s = _measure(
        lambda: sparse(faces, levels), device
    )
    (dense_matches, dense_labels, promised), dense_mib, dense_s = _measure(run_dense, device)
    same = torch.equal(sparse_labels, dense_labels) and torch.equal(
        sparse_matches[promised], dense_matches[promised]
    )
    common = {"step": step, "faces": num_faces, "anchors": len(anchors)}
    rows = [
        {
            "matcher": "dense (Detectron2 Matcher)",
            **common,
            "seconds": dense_s,
            "peak_MiB": dense_mib,
        },
        {"matcher": "SparseGridMatcher", **common, "seconds": sparse_s, "peak_MiB": sparse_mib},
    ]
    return rows, same


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--faces", nargs="+", type=int, default=[200, 2000])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    print(f"device: {args.device}, threads: {torch.get_num_threads()}, median of 3 runs")
    columns = ["matcher", "step", "faces", "anchors", "seconds", "peak_MiB"]
    for num_faces in args.faces:
        for step in ("step1", "step2"):
            rows, same = compare(num_faces, args.size, args.device, step)
            print(format_table(rows, columns, baseline=rows[0]))
            print(f"labels and promised matches equal to Detectron2's: {same}\n")


if __name__ == "__main__":
    main()
