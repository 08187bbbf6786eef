"""FDDB ellipse parsing and the ellipse -> box conversion."""

import math
import os

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from srn_d2.data import ellipse_to_box, load_fddb

FOLD_TEXT = """\
2002/08/11/big/img_591
1
123.583300 85.549500 1.265839 269.693400 161.781200  1
2002/08/26/big/img_265
2
20 10 0 50 60  1
20 10 1.5707963267948966 100 100  1
"""


def test_axis_aligned_ellipse_box():
    np.testing.assert_allclose(ellipse_to_box([[20, 10, 0, 50, 60]]), [[30, 50, 70, 70]])


def test_rotated_ellipse_boxes():
    boxes = ellipse_to_box(
        [[20, 10, math.pi / 2, 50, 60], [20, 10, math.pi / 4, 0, 0], [20, 10, math.pi, 5, 5]]
    )
    half = math.sqrt((20**2 + 10**2) / 2)
    np.testing.assert_allclose(
        boxes, [[40, 40, 60, 80], [-half, -half, half, half], [-15, -5, 25, 15]], atol=1e-9
    )


def test_ellipse_box_clipped_to_image():
    boxes = ellipse_to_box([[20, 10, 0, 10, 95]], image_size=(100, 120))
    np.testing.assert_allclose(boxes, [[0, 85, 30, 100]])


def write_fold(directory, text, fold=1):
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"FDDB-fold-{fold:02d}-ellipseList.txt"
    path.write_text(text)
    return str(path)


def test_load_fold(tmp_path):
    dicts = load_fddb([write_fold(tmp_path, FOLD_TEXT)], "/pics")
    assert [d["image_id"] for d in dicts] == ["2002/08/11/big/img_591", "2002/08/26/big/img_265"]
    assert dicts[0]["file_name"] == os.path.join("/pics", "2002/08/11/big/img_591.jpg")
    first, second = dicts[1]["annotations"]
    assert first["bbox_mode"] == BoxMode.XYWH_ABS
    np.testing.assert_allclose(first["bbox"], [30, 50, 40, 20])
    np.testing.assert_allclose(second["bbox"], [90, 80, 20, 40], atol=1e-9)
    assert second["ellipse"] == [20.0, 10.0, 1.5707963267948966, 100.0, 100.0]
    assert first["category_id"] == 0 and first["iscrowd"] == 0


def test_boxes_clipped_when_image_size_known(tmp_path):
    pictures = tmp_path / "originalPics" / "2002/08/26/big"
    pictures.mkdir(parents=True)
    cv2.imwrite(str(pictures / "img_265.jpg"), np.zeros((90, 95, 3), np.uint8))
    dicts = load_fddb([write_fold(tmp_path, FOLD_TEXT)], str(tmp_path / "originalPics"))
    assert (dicts[1]["height"], dicts[1]["width"]) == (90, 95)
    np.testing.assert_allclose(dicts[1]["annotations"][1]["bbox"], [90, 80, 5, 10], atol=1e-9)


@pytest.mark.parametrize(
    "text, line, reason",
    [
        ("a\n1\n20 10 0 50 60\n", 3, "expected 6 numbers, got 5"),
        ("a\none\n", 2, "integer record count"),
        ("a\n2\n20 10 0 50 60 1\n", 4, "truncated"),
    ],
)
def test_malformed_fold(tmp_path, text, line, reason):
    path = write_fold(tmp_path, text)
    with pytest.raises(ValueError) as error:
        load_fddb([path], "/pics")
    assert f"{path}:{line}:" in str(error.value) and reason in str(error.value)


def test_builtin_fddb_names(tmp_path, monkeypatch):
    folds = tmp_path / "fddb" / "FDDB-folds"
    for fold in range(1, 11):
        write_fold(folds, f"2002/07/{fold:02d}/big/img_{fold}\n1\n20 10 0 50 60 1\n", fold)
    monkeypatch.setenv("SRN_DATASETS", str(tmp_path))
    (third,) = DatasetCatalog.get("fddb_fold_3")
    assert third["image_id"] == "2002/07/03/big/img_3"
    assert third["file_name"] == os.path.join(
        str(tmp_path), "fddb", "originalPics", "2002/07/03/big/img_3.jpg"
    )
    every_fold = DatasetCatalog.get("fddb")
    assert [d["image_id"] for d in every_fold] == [
        f"2002/07/{f:02d}/big/img_{f}" for f in range(1, 11)
    ]
    assert MetadataCatalog.get("fddb").evaluator_type == "fddb"
    assert MetadataCatalog.get("fddb_fold_3").thing_classes == ["face"]
