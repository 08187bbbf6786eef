"""The generated mini_faces dataset: layout, determinism, face sizes, race safety."""

import os
import pathlib

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from srn_d2.data import ensure_mini_faces, load_wider_face, render_mini_faces_image
from srn_d2.data import mini_faces
from srn_d2.data.mini_faces import (
    COMPLETE_MARKER,
    JPEG_QUALITY,
    MARKER_TEXT,
    SPLIT_SIZES,
    mini_faces_split_paths,
)


@pytest.fixture(scope="module")
def data_mini_faces_root(mini_faces_root):
    return pathlib.Path(mini_faces_root)


def load_split(root, split):
    image_root, gt_file, _ = mini_faces_split_paths(os.path.join(str(root), "mini_faces"), split)
    return load_wider_face(gt_file, image_root)


def all_boxes(dicts):
    return np.array([face["bbox"] for d in dicts for face in d["annotations"]]).reshape(-1, 4)


def test_layout_is_wider_face(data_mini_faces_root):
    base = data_mini_faces_root / "mini_faces"
    assert (base / COMPLETE_MARKER).is_file()
    for split, num_images in SPLIT_SIZES.items():
        assert (base / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt").is_file()
        dicts = load_split(data_mini_faces_root, split)
        assert len(dicts) == num_images
        assert all(os.path.isfile(d["file_name"]) for d in dicts)
        assert all(
            d["file_name"].startswith(str(base / f"WIDER_{split}" / "images")) for d in dicts
        )
        assert all(256 <= d["height"] <= 384 and 256 <= d["width"] <= 384 for d in dicts)
    assert not [name for name in os.listdir(data_mini_faces_root) if name != "mini_faces"]


def test_face_sizes(data_mini_faces_root):
    dicts = load_split(data_mini_faces_root, "train")
    boxes = all_boxes(dicts)
    sizes = np.sqrt(boxes[:, 2] * boxes[:, 3])
    assert sizes.min() >= 6 and sizes.max() <= 300
    assert (sizes < 16).mean() >= 1 / 3
    assert (sizes >= 50).sum() >= 100
    faces_per_image = [len(d["annotations"]) for d in dicts]
    assert max(faces_per_image) >= 20 and min(faces_per_image) == 0
    for d in dicts:
        for face in d["annotations"]:
            x, y, w, h = face["bbox"]
            assert x >= 0 and y >= 0 and x + w <= d["width"] and y + h <= d["height"]


def test_rendering_is_deterministic_and_matches_files(data_mini_faces_root):
    dicts = {d["image_id"]: d for d in load_split(data_mini_faces_root, "val")}
    for index in (0, 7, 59):
        first = render_mini_faces_image("val", index)
        second = render_mini_faces_image("val", index)
        np.testing.assert_array_equal(first.image, second.image)
        record = dicts[os.path.splitext(first.relative_path)[0]]
        encoded = cv2.imencode(".jpg", first.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1]
        with open(record["file_name"], "rb") as f:
            assert f.read() == encoded.tobytes()
        np.testing.assert_array_equal(all_boxes([record]), first.boxes)
    assert not np.array_equal(
        render_mini_faces_image("train", 0).image, render_mini_faces_image("val", 0).image
    )


def test_face_box_is_tight_around_the_drawn_face():
    canvas = np.zeros((60, 60, 3), np.uint8)
    box = np.array([11, 7, 30, 38])
    mini_faces._draw_face(canvas, np.random.default_rng(0), box)
    ys, xs = np.nonzero(canvas.max(axis=2) > 64)
    drawn = np.array([xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()])
    assert np.abs(drawn - box).max() <= 1


def test_ensure_reuses_existing(data_mini_faces_root):
    marker = data_mini_faces_root / "mini_faces" / COMPLETE_MARKER
    before = marker.stat().st_mtime_ns
    assert ensure_mini_faces(str(data_mini_faces_root)) == str(data_mini_faces_root / "mini_faces")
    assert marker.stat().st_mtime_ns == before


def test_losing_a_generation_race_uses_the_winner(tmp_path, monkeypatch):
    winner = tmp_path / "mini_faces"

    def generate_while_another_process_finishes(out_dir):
        (tmp_path / "mini_faces").mkdir()
        (winner / COMPLETE_MARKER).write_text(MARKER_TEXT)
        with open(os.path.join(out_dir, "partial.txt"), "w") as f:
            f.write("ours\n")

    monkeypatch.setattr(mini_faces, "generate_mini_faces", generate_while_another_process_finishes)
    assert ensure_mini_faces(str(tmp_path)) == str(winner)
    assert not (winner / "partial.txt").exists()
    assert os.listdir(tmp_path) == ["mini_faces"]


def test_folder_from_other_settings_is_generated_again(tmp_path, monkeypatch):
    old = tmp_path / "mini_faces"
    old.mkdir()
    (old / "old_image.jpg").write_bytes(b"old")
    (old / COMPLETE_MARKER).write_text(
        "mini_faces, seed 180902693, splits {'train': 240, 'val': 60}\n"
    )

    def generate_one_file(out_dir):
        with open(os.path.join(out_dir, "new.txt"), "w") as f:
            f.write("new\n")

    monkeypatch.setattr(mini_faces, "generate_mini_faces", generate_one_file)
    assert ensure_mini_faces(str(tmp_path)) == str(old)
    assert sorted(os.listdir(old)) == [COMPLETE_MARKER, "new.txt"]
    assert (old / COMPLETE_MARKER).read_text() == MARKER_TEXT
    assert os.listdir(tmp_path) == ["mini_faces"]


def test_incomplete_folder_is_an_error(tmp_path):
    (tmp_path / "mini_faces").mkdir()
    with pytest.raises(OSError, match="incomplete"):
        ensure_mini_faces(str(tmp_path))


def test_registered_names_load_from_root_at_load_time(data_mini_faces_root, monkeypatch):
    monkeypatch.setenv("SRN_DATASETS", str(data_mini_faces_root))
    val = DatasetCatalog.get("mini_faces_val")
    assert len(val) == SPLIT_SIZES["val"]
    assert val[0]["file_name"].startswith(str(data_mini_faces_root))
    metadata = MetadataCatalog.get("mini_faces_val")
    assert metadata.evaluator_type == "widerface"
    assert tuple(metadata.difficulty_by_size) == (50, 20)
    assert metadata.thing_classes == ["face"]
