"""SRNDatasetMapper: box dropping, crowd faces, empty images, unreadable files."""

import logging

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from srn_d2 import add_srn_config
from srn_d2.data import RandomSquareCrop, SRNDatasetMapper, SquareCropTransform


def face(x0, y0, x1, y1, iscrowd=0):
    return {
        "bbox": [x0, y0, x1, y1],
        "bbox_mode": BoxMode.XYXY_ABS,
        "category_id": 0,
        "iscrowd": iscrowd,
    }


@pytest.fixture
def data_image_file(tmp_path):
    path = tmp_path / "ev" / "image.jpg"
    path.parent.mkdir()
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, (80, 100, 3), dtype=np.uint8))
    return str(path)


def crop_mapper():
    """A training mapper whose only augmentation is a fixed 50x50 crop at the origin."""
    return SRNDatasetMapper(
        is_train=True,
        augmentations=[SquareCropTransform(0, 0, 50, 50, 100, 80)],
        image_format="BGR",
    )


def test_boxes_with_center_outside_the_crop_are_dropped_and_counted(data_image_file, caplog):
    mapper = crop_mapper()
    annotations = [
        face(10, 10, 20, 20),  # inside
        face(40, 40, 70, 70),  # center (55, 55) outside the crop
        face(30, 30, 60, 60),  # center (45, 45) inside: kept, clipped to the crop
        face(5, 5, 15, 15, iscrowd=1),  # invalid face: ignored, not counted
        face(10, 30, 10.5, 40),  # 0.5 px wide: degenerate
        {
            "bbox": [60, 0, 30, 20],
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": 0,
        },  # center (75, 10)
    ]
    with caplog.at_level(logging.DEBUG, logger="srn_d2.data.dataset_mapper"):
        out = mapper(
            {"file_name": data_image_file, "height": 80, "width": 100, "annotations": annotations}
        )
    instances = out["instances"]
    np.testing.assert_allclose(
        instances.gt_boxes.tensor.numpy(), [[10, 10, 20, 20], [30, 30, 50, 50]]
    )
    assert instances.gt_classes.tolist() == [0, 0]
    assert out["image"].shape == (3, 50, 50)
    assert (mapper.num_dropped_boxes, mapper.num_degenerate_boxes) == (2, 1)
    assert any(
        data_image_file in r.getMessage() and "dropped 2" in r.getMessage() for r in caplog.records
    )

    mapper({"file_name": data_image_file, "annotations": annotations})
    assert (mapper.num_dropped_boxes, mapper.num_degenerate_boxes) == (4, 2)


def test_input_annotations_are_not_modified(data_image_file):
    annotations = [face(10, 10, 20, 20)]
    dataset_dict = {"file_name": data_image_file, "annotations": annotations}
    crop_mapper()(dataset_dict)
    assert dataset_dict == {"file_name": data_image_file, "annotations": [face(10, 10, 20, 20)]}


@pytest.mark.parametrize("annotations", [[], [face(1, 1, 9, 9, iscrowd=1)]])
def test_image_without_faces(data_image_file, annotations):
    out = crop_mapper()({"file_name": data_image_file, "annotations": annotations})
    assert out["instances"].gt_boxes.tensor.shape == (0, 4)
    assert out["instances"].gt_classes.shape == (0,)
    assert out["instances"].gt_classes.dtype == torch.int64


@pytest.mark.parametrize("content", [b"not an image at all", None])
def test_unreadable_image_error_names_the_file(tmp_path, content):
    path = tmp_path / "broken.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(OSError, match="broken.jpg"):
        crop_mapper()({"file_name": str(path), "annotations": []})


def test_truncated_jpeg_error_names_the_file(tmp_path, data_image_file):
    with open(data_image_file, "rb") as f:
        data = f.read()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match="truncated.jpg"):
        crop_mapper()({"file_name": str(path), "annotations": []})


def make_cfg(srn_augmentation=True):
    cfg = get_cfg()
    add_srn_config(cfg)
    cfg.INPUT.SRN_AUGMENTATION = srn_augmentation
    cfg.INPUT.SQUARE_SIZE_TRAIN = 64
    return cfg


def test_from_config_picks_the_augmentation():
    srn = SRNDatasetMapper(make_cfg(), is_train=True)
    assert any(isinstance(a, RandomSquareCrop) for a in srn.augmentations.augs)
    default = SRNDatasetMapper(make_cfg(srn_augmentation=False), is_train=True)
    assert isinstance(default.augmentations.augs[0], T.ResizeShortestEdge)
    test = SRNDatasetMapper(make_cfg(), is_train=False)
    assert [type(a) for a in test.augmentations.augs] == [T.ResizeShortestEdge]


def test_full_training_pipeline_keeps_boxes_inside_the_square(data_image_file):
    np.random.seed(0)
    mapper = SRNDatasetMapper(make_cfg(), is_train=True)
    annotations = [face(x, y, x + 12, y + 15) for x in range(0, 90, 15) for y in range(0, 65, 16)]
    kept = 0
    for _ in range(5):
        out = mapper(
            {"file_name": data_image_file, "height": 80, "width": 100, "annotations": annotations}
        )
        boxes = out["instances"].gt_boxes.tensor
        assert out["image"].shape == (3, 64, 64)
        assert (boxes >= 0).all() and (boxes <= 64).all()
        assert ((boxes[:, 2:] - boxes[:, :2]) >= 1).all()
        kept += len(boxes)
    assert kept + mapper.num_dropped_boxes + mapper.num_degenerate_boxes == 5 * len(annotations)


def test_inference_drops_annotations(data_image_file):
    mapper = SRNDatasetMapper(make_cfg(), is_train=False)
    out = mapper({"file_name": data_image_file, "annotations": [face(1, 1, 9, 9)]})
    assert "annotations" not in out and "instances" not in out
    assert out["image"].shape[0] == 3
