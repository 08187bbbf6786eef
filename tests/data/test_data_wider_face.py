"""WIDER FACE text parsing, registration and lazy builtin datasets."""

import logging
import os
import subprocess
import sys
import textwrap
import time

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from srn_d2.data import load_wider_face, load_wider_face_test_list, register_wider_face_format
from srn_d2.evaluation import WiderFaceEvaluator
from srn_testing import REPO_ROOT, widerface_val_gt_dir


GT_TEXT = """\
0--Parade/0_Parade_marchingband_1_465.jpg
2
345 211 4 4 2 0 0 0 0 0 
331 126 3 3 2 0 0 1 0 0 
1--Handshaking/1_Handshaking_1_2.jpg
0
0 0 0 0 0 0 0 0 0 0 
2--Demonstration/2_Demonstration_3_7.jpg
1
10 20 30 40 1 1 2 0 1 1
"""


def write_text(tmp_path, text, name="gt.txt"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_parses_images_boxes_and_attributes(tmp_path):
    dicts = load_wider_face(write_text(tmp_path, GT_TEXT), "/images")
    assert [d["image_id"] for d in dicts] == [
        "0--Parade/0_Parade_marchingband_1_465",
        "1--Handshaking/1_Handshaking_1_2",
        "2--Demonstration/2_Demonstration_3_7",
    ]
    assert dicts[0]["file_name"] == os.path.join(
        "/images", "0--Parade/0_Parade_marchingband_1_465.jpg"
    )
    assert [len(d["annotations"]) for d in dicts] == [2, 0, 1]
    face = dicts[2]["annotations"][0]
    assert face == {
        "bbox": [10.0, 20.0, 30.0, 40.0],
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": 0,
        "iscrowd": 0,
        "blur": 1,
        "expression": 1,
        "illumination": 2,
        "invalid": 0,
        "occlusion": 1,
        "pose": 1,
    }


def test_invalid_faces_are_crowd(tmp_path):
    faces = load_wider_face(write_text(tmp_path, GT_TEXT), "/images")[0]["annotations"]
    assert [(f["invalid"], f["iscrowd"]) for f in faces] == [(0, 0), (1, 1)]


@pytest.mark.parametrize("placeholder", ["0 0 0 0 0 0 0 0 0 0 \n", ""])
def test_zero_face_image_with_or_without_placeholder_at_end(tmp_path, placeholder):
    text = "a/a_1.jpg\n1\n1 2 3 4 0 0 0 0 0 0\nb/b_2.jpg\n0\n" + placeholder
    dicts = load_wider_face(write_text(tmp_path, text), "/images")
    assert [len(d["annotations"]) for d in dicts] == [1, 0]


def test_zero_size_boxes_dropped_and_logged(tmp_path, caplog):
    text = "a/a_1.jpg\n3\n1 2 0 4 0 0 0 0 0 0\n1 2 3 4 0 0 0 0 0 0\n5 6 7 0 0 0 0 0 0 0\n"
    path = write_text(tmp_path, text)
    with caplog.at_level(logging.WARNING, logger="srn_d2.data.wider_face"):
        dicts = load_wider_face(path, "/images")
    assert [f["bbox"] for f in dicts[0]["annotations"]] == [[1.0, 2.0, 3.0, 4.0]]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(path in m and "dropped 2 faces" in m and "line 3" in m for m in messages), messages


FACE = "1 2 3 4 0 0 0 0 0 0\n"


@pytest.mark.parametrize(
    "text, line, reason",
    [
        ("a.jpg\nabc\n", 2, "integer record count"),
        ("a.jpg\n1.5\n" + FACE, 2, "integer record count"),
        ("a.jpg\n-1\n", 2, "negative record count"),
        (
            "a.jpg\n1\n" + FACE + "b.jpg\n2\n" + FACE + "1 2 3 4 0 0 0 0 0\n",
            7,
            "expected 10 numbers, got 9",
        ),
        ("a.jpg\n1\n1 2 3 4 0 0 0 0 0 0 7\n", 3, "expected 10 numbers, got 11"),
        ("a.jpg\n2\n" + FACE + "1 2 x 4 0 0 0 0 0 0\n", 4, "non-numeric"),
        ("a.jpg\n3\n" + FACE + FACE, 5, "truncated"),
        ("a.jpg\n1\n" + FACE + "b.jpg\n", 5, "truncated"),
        ("a.jpg\n1\n" + FACE + "\nb.jpg\n0\n", 4, "blank line"),
        ("a.jpg\n2\n" + FACE + "b.jpg\n0\n", 4, "expected 10 numbers"),
    ],
)
def test_malformed_file_names_file_and_line(tmp_path, text, line, reason):
    path = write_text(tmp_path, text)
    with pytest.raises(ValueError) as error:
        load_wider_face(path, "/images")
    assert f"{path}:{line}:" in str(error.value)
    assert reason in str(error.value)


def test_image_size_from_header_and_left_out_when_missing(tmp_path):
    image_root = tmp_path / "images"
    (image_root / "a").mkdir(parents=True)
    cv2.imwrite(str(image_root / "a" / "a_1.jpg"), np.zeros((30, 50, 3), np.uint8))
    text = "a/a_1.jpg\n1\n" + FACE + "a/missing.jpg\n0\n"
    present, missing = load_wider_face(write_text(tmp_path, text), str(image_root))
    assert (present["height"], present["width"]) == (30, 50)
    assert "height" not in missing and "width" not in missing


def test_test_list_has_no_annotations(tmp_path):
    path = write_text(tmp_path, "0--Parade/0_Parade_1.jpg\n\n1--Handshaking/1_Handshaking_2.jpg\n")
    dicts = load_wider_face_test_list(path, "/test")
    assert [d["image_id"] for d in dicts] == [
        "0--Parade/0_Parade_1",
        "1--Handshaking/1_Handshaking_2",
    ]
    assert all("annotations" not in d for d in dicts)


def test_register_wider_face_format(tmp_path):
    image_root = tmp_path / "my_faces"
    (image_root / "ev").mkdir(parents=True)
    cv2.imwrite(str(image_root / "ev" / "x.jpg"), np.zeros((20, 24, 3), np.uint8))
    gt_file = write_text(tmp_path, "ev/x.jpg\n1\n2 3 4 5 0 0 0 0 0 0\n")
    name = "test_data_my_faces"
    register_wider_face_format(name, str(image_root), gt_file, extra_field=7)
    try:
        (record,) = DatasetCatalog.get(name)
        assert record["image_id"] == "ev/x"
        assert (record["height"], record["width"]) == (20, 24)
        assert record["annotations"][0]["bbox"] == [2.0, 3.0, 4.0, 5.0]
        metadata = MetadataCatalog.get(name)
        assert metadata.thing_classes == ["face"]
        assert metadata.evaluator_type == "widerface"
        assert metadata.gt_file == gt_file
        assert metadata.image_root == str(image_root)
        assert tuple(metadata.difficulty_by_size) == (50, 20)
        assert metadata.extra_field == 7
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_builtin_wider_face_resolves_root_at_load_time(tmp_path, monkeypatch):
    split_dir = tmp_path / "widerface" / "wider_face_split"
    split_dir.mkdir(parents=True)
    (split_dir / "wider_face_val_bbx_gt.txt").write_text(GT_TEXT)
    (split_dir / "wider_face_test_filelist.txt").write_text("9--Press/9_Press_1.jpg\n")
    monkeypatch.setenv("SRN_DATASETS", str(tmp_path))
    val = DatasetCatalog.get("widerface_val")
    assert len(val) == 3
    assert val[0]["file_name"] == os.path.join(
        str(tmp_path), "widerface", "WIDER_val/images", "0--Parade/0_Parade_marchingband_1_465.jpg"
    )
    (test,) = DatasetCatalog.get("widerface_test")
    assert test["file_name"].startswith(
        os.path.join(str(tmp_path), "widerface", "WIDER_test/images")
    )


def test_builtin_wider_face_metadata():
    for name in ("widerface_train", "widerface_val", "widerface_test"):
        metadata = MetadataCatalog.get(name)
        assert metadata.thing_classes == ["face"]
        assert metadata.evaluator_type == "widerface"
    # Relative to the datasets root, which is read when the path is used.
    assert MetadataCatalog.get("widerface_val").gt_mat_dir == os.path.join(
        "widerface", "eval_tools", "ground_truth"
    )


def test_builtin_metadata_paths_follow_the_root_set_after_import(tmp_path, monkeypatch):
    monkeypatch.setenv("SRN_DATASETS", str(tmp_path))
    evaluator = WiderFaceEvaluator("widerface_val")
    assert evaluator._gt_dir == os.path.join(
        str(tmp_path), "widerface", "eval_tools", "ground_truth"
    )


def test_import_registers_without_touching_files(tmp_path):
    root = str(tmp_path / "no_such_root")
    script = textwrap.dedent(f"""
        import sys
        root = {root!r}
        touched = []
        def audit(event, args):
            watched = event in ("open", "os.listdir", "os.scandir", "os.mkdir")
            if watched and args and str(args[0]).startswith(root):
                touched.append((event, args[0]))
        sys.addaudithook(audit)
        import srn_d2.data
        from detectron2.data import DatasetCatalog, MetadataCatalog
        names = set(DatasetCatalog.list())
        expected = {{"widerface_train", "widerface_val", "widerface_test", "fddb", "fddb_fold_1",
                     "fddb_fold_10", "mini_faces_train", "mini_faces_val"}}
        assert expected <= names, expected - names
        from srn_d2.data.datasets_root import resolve_dataset_path
        assert resolve_dataset_path(MetadataCatalog.get("widerface_val").gt_mat_dir).startswith(root)
        assert not touched, touched
        """)
    env = dict(os.environ, SRN_DATASETS=root)
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert not os.path.exists(root)


def write_synthetic_train_file(path, num_images=12880, num_faces=159424, seed=0):
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(num_faces - 4, np.full(num_images, 1 / num_images))
    counts[:4] += 1
    counts[::500] = 0
    counts[-1] += num_faces - counts.sum()
    rows = np.concatenate(
        [rng.integers(1, 500, (num_faces, 4)), rng.integers(0, 3, (num_faces, 6))], 1
    )
    face_lines = np.array([" ".join(map(str, row)) + " \n" for row in rows.tolist()], dtype=object)
    ends = np.cumsum(counts)
    parts = []
    for index, (count, end) in enumerate(zip(counts.tolist(), ends.tolist())):
        parts.append(f"{index % 61}--Event/{index}_image.jpg\n{count}\n")
        parts.append("".join(face_lines[end - count : end]) if count else "0 0 0 0 0 0 0 0 0 0 \n")
    path.write_text("".join(parts))
    return int(counts.sum())


def test_parsing_train_sized_file_is_fast(tmp_path):
    path = tmp_path / "wider_face_train_bbx_gt.txt"
    num_faces = write_synthetic_train_file(path)
    elapsed = []
    for _ in range(2):
        start = time.perf_counter()
        dicts = load_wider_face(str(path), str(tmp_path / "missing_images"))
        elapsed.append(time.perf_counter() - start)
    assert len(dicts) == 12880
    assert sum(len(d["annotations"]) for d in dicts) == num_faces
    assert min(elapsed) < 2.0, elapsed


def _official_val_mat():
    gt_dir = widerface_val_gt_dir()
    if gt_dir is None:
        pytest.skip("official wider_face_val.mat not available")
    return os.path.join(gt_dir, "wider_face_val.mat")


def test_real_val_ground_truth_round_trip(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    mat = scipy_io.loadmat(_official_val_mat())
    entries, boxes, invalid = [], [], []
    for event_index in range(len(mat["event_list"])):
        event = str(mat["event_list"][event_index, 0][0])
        files = mat["file_list"][event_index, 0]
        for image_index in range(len(files)):
            image_boxes = mat["face_bbx_list"][event_index, 0][image_index, 0].reshape(-1, 4)
            columns = [
                mat[f"{attribute}_label_list"][event_index, 0][image_index, 0].reshape(-1, 1)
                for attribute in (
                    "blur",
                    "expression",
                    "illumination",
                    "invalid",
                    "occlusion",
                    "pose",
                )
            ]
            table = np.concatenate([image_boxes] + columns, 1).astype(np.int64)
            lines = "".join(" ".join(map(str, row)) + " \n" for row in table.tolist())
            entries.append(f"{event}/{files[image_index, 0][0]}.jpg\n{len(table)}\n{lines}")
            boxes.append(image_boxes)
            invalid.append(columns[3].ravel())
    boxes, invalid = np.concatenate(boxes), np.concatenate(invalid)
    has_area = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)

    dicts = load_wider_face(write_text(tmp_path, "".join(entries)), "/images")
    faces = [face for d in dicts for face in d["annotations"]]
    assert len(dicts) == 3226
    assert dicts[0]["image_id"] == "0--Parade/0_Parade_marchingband_1_465"
    assert len(faces) == int(has_area.sum())
    np.testing.assert_array_equal(np.array([f["bbox"] for f in faces]), boxes[has_area])
    assert sum(f["iscrowd"] for f in faces) == int((invalid[has_area] != 0).sum())


def test_missing_builtin_dataset_points_to_readme(tmp_path, monkeypatch):
    monkeypatch.setenv("SRN_DATASETS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="wider_face_train_bbx_gt.txt.*datasets/README.md"):
        DatasetCatalog.get("widerface_train")
