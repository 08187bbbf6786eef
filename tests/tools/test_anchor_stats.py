"""Anchor coverage statistics: exactness against dense IoU, and real WIDER FACE faces."""

import os

import numpy as np
import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_anchor_generator
from detectron2.structures import Boxes, pairwise_iou

from srn_testing import widerface_val_gt_dir
from srn_d2.tools.anchor_stats import main
from srn_d2.apps.anchor_coverage import (
    SRN_CONFIG,
    AnchorTiling,
    anchor_strides,
    count_anchor_matches,
    default_configs,
    load_config,
    load_wider_faces,
    anchor_coverage,
    prepare_faces,
)

_GT_DIR = widerface_val_gt_dir()
VAL_MAT = os.path.join(_GT_DIR, "wider_face_val.mat") if _GT_DIR else None
needs_val = pytest.mark.skipif(
    VAL_MAT is None, reason="WIDER FACE val ground truth (.mat) not found"
)


@pytest.fixture(scope="module")
def configs():
    return default_configs()


def _generator(cfg):
    return build_anchor_generator(cfg, [ShapeSpec(stride=s) for s in anchor_strides(cfg)])


def dense_counts(generator, faces, height, width, thresholds=(0.5, 0.7)):
    """The reference: detectron2's own anchors over the whole input, all pairs' IoU."""
    features = [torch.empty(1, 1, -(-height // s), -(-width // s)) for s in generator.strides]
    anchors = Boxes(Boxes.cat(generator(features)).tensor.double())
    iou = pairwise_iou(Boxes(faces.double()), anchors)
    return torch.stack([(iou >= t).sum(dim=1) for t in thresholds], dim=1)


def test_face_identical_to_an_anchor_is_covered(configs):
    generator = _generator(configs["SRN (Base-SRN.yaml)"])
    tiling = AnchorTiling.from_generator(generator)
    # The second cell anchor of stride 8 at grid cell (row 5, column 3).
    cell = list(generator.cell_anchors)[1][1].double()
    anchor = cell + (torch.tensor([3.0, 5.0, 3.0, 5.0], dtype=torch.float64) + generator.offset) * 8
    faces = anchor[None]
    extents = torch.tensor([[128.0, 128.0]])
    counts = count_anchor_matches(faces, extents, tiling, (0.5, 0.7, 0.999))
    assert counts[0, 2] == 1  # only the anchor itself reaches IoU ~1
    assert torch.equal(counts[:, :2], dense_counts(generator, faces, 128, 128))


@pytest.mark.parametrize(
    "label", ["SRN (Base-SRN.yaml)", "RetinaNet (detectron2 Base-RetinaNet.yaml)"]
)
def test_counts_equal_dense_iou_on_random_faces(configs, label):
    generator = _generator(configs[label])
    rng = np.random.default_rng(0)
    xy = rng.uniform(-20, 300, size=(300, 2))
    wh = np.exp(rng.uniform(np.log(2), np.log(400), size=(300, 2)))
    faces = torch.from_numpy(np.concatenate([xy, xy + wh], axis=1))
    extents = torch.tensor([[384.0, 256.0]]).expand(len(faces), 2)
    # A small chunk size exercises the chunking.
    got = count_anchor_matches(
        faces, extents, AnchorTiling.from_generator(generator), max_elements=997
    )
    assert torch.equal(got, dense_counts(generator, faces, 384, 256))
    assert got[:, 0].sum() > 0


@needs_val
def test_counts_equal_dense_iou_on_real_faces(configs):
    _, per_image = load_wider_faces(VAL_MAT)
    for label, cfg in configs.items():
        generator = _generator(cfg)
        tiling = AnchorTiling.from_generator(generator)
        for boxes in per_image[:4]:
            faces, extents, _ = prepare_faces([boxes])
            height, width = (int(v) for v in extents[0])
            got = count_anchor_matches(faces, extents, tiling)
            assert torch.equal(got, dense_counts(generator, faces, height, width)), label


@needs_val
def test_real_faces_srn_covers_more_than_retinanet(capsys):
    results, report = anchor_coverage(VAL_MAT, max_images=20)
    srn = results["SRN (Base-SRN.yaml)"]
    retina = results["RetinaNet (detectron2 Base-RetinaNet.yaml)"]
    assert srn["reach 0.5"] > retina["reach 0.5"]
    assert (
        srn["reach 0.7"] <= srn["reach 0.5"] and srn["anchors/face 0.7"] <= srn["anchors/face 0.5"]
    )
    assert "in 20 images" in report and "SRN (Base-SRN.yaml)" in report
    # Halving the images halves the faces: small ones fall below every SRN anchor.
    half, _ = anchor_coverage(VAL_MAT, max_images=20, scale=0.5, config_files=[SRN_CONFIG])
    assert half["Base-SRN.yaml"]["reach 0.5"] < srn["reach 0.5"]


def test_bbx_gt_text_file(tmp_path, capsys):
    gt = tmp_path / "wider_face_val_bbx_gt.txt"
    gt.write_text(
        "0--Parade/a.jpg\n2\n"
        "10 20 16 20 0 0 0 0 0 0\n"
        "100 100 0 12 0 0 0 0 0 0\n"
        "1--Handshaking/b.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n"
    )
    names, boxes = load_wider_faces(str(gt))
    assert names == ["0--Parade/a.jpg", "1--Handshaking/b.jpg"]
    assert [len(b) for b in boxes] == [2, 0]
    assert main(["--gt", str(gt), "--image-size", "200", "300", "--config-file", SRN_CONFIG]) == 0
    assert "| Base-SRN.yaml" in capsys.readouterr().out
    results, report = anchor_coverage(str(gt), image_size=(200, 300), config_files=[SRN_CONFIG])
    assert results["Base-SRN.yaml"]["reach 0.5"] == 1.0
    assert "1 faces in 2 images (skipped 1 of zero size)" in report


def test_unknown_architecture_is_named():
    cfg = load_config(SRN_CONFIG)
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    with pytest.raises(ValueError, match="GeneralizedRCNN"):
        anchor_strides(cfg)
