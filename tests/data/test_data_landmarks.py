"""Five-point landmarks: RetinaFace's label.txt, mini_faces' landmarks, and the mapper moving them."""

import hashlib
import logging
import os

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from fvcore.transforms.transform import HFlipTransform
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from srn_d2.data import RandomPhotometricDistortion, SRNDatasetMapper, SquareCropTransform
from srn_d2.data.mini_faces import mini_faces_split_paths, render_mini_faces_image
from srn_d2.data.retinaface_labels import (
    LANDMARK_FLIP_INDICES,
    LANDMARK_NAMES,
    attach_landmarks,
    load_retinaface_labels,
)
from srn_d2.data.wider_face import load_wider_face
from test_data_mapper import make_cfg

LABELS = """\
# 0--Parade/0_Parade_marchingband_1_849.jpg
449 330 122 149 488.906 373.643 0.0 542.089 376.442 0.0 515.031 412.83 1.0 485.174 425.893 0.0 538.357 431.491 0.0 0.82
177 218 64 109 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 0.68
# 1--Handshaking/1_Handshaking_1_2.jpg
# 2--Demonstration/2_Demonstration_3_7.jpg
10 20 30 40 15 30 0 25 30 0 20 40 -1 16 50 1 24 50 0 0.5
"""
NO_LANDMARK = [0.0] * 15


def write(tmp_path, text, name="label.txt"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_parses_images_boxes_landmarks_and_flags(tmp_path):
    dicts = load_retinaface_labels(write(tmp_path, LABELS), str(tmp_path / "images"))
    assert [d["image_id"] for d in dicts] == [
        "0--Parade/0_Parade_marchingband_1_849",
        "1--Handshaking/1_Handshaking_1_2",
        "2--Demonstration/2_Demonstration_3_7",
    ]
    assert [len(d["annotations"]) for d in dicts] == [2, 0, 1]
    first, without, small = dicts[0]["annotations"] + dicts[2]["annotations"]
    assert first["bbox"] == [449, 330, 122, 149] and first["bbox_mode"] == BoxMode.XYWH_ABS
    # File flag 0 (visible) -> 2, 1 (occluded) -> 1, -1 (not annotated) -> 0 at (0, 0).
    assert first["keypoints"] == [
        488.906,
        373.643,
        2,
        542.089,
        376.442,
        2,
        515.031,
        412.83,
        1,
        485.174,
        425.893,
        2,
        538.357,
        431.491,
        2,
    ]
    assert without["keypoints"] == NO_LANDMARK and without["blur_score"] == 0.68
    assert small["keypoints"] == [15, 30, 2, 25, 30, 2, 0, 0, 0, 16, 50, 1, 24, 50, 2]
    assert all(
        face["iscrowd"] == 0 and face["category_id"] == 0 for face in (first, without, small)
    )


def test_boxes_only_file_loads_faces_without_landmarks(tmp_path):
    dicts = load_retinaface_labels(
        write(tmp_path, "# a/b.jpg\n1 2 3 4\n5 6 7 8\n# a/c.jpg\n"), str(tmp_path)
    )
    assert [face["bbox"] for face in dicts[0]["annotations"]] == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert all(face["keypoints"] == NO_LANDMARK for face in dicts[0]["annotations"])


def test_zero_size_faces_dropped_and_counted(tmp_path, caplog):
    text = (
        "# a/b.jpg\n"
        + "1 2 0 4"
        + " -1" * 16
        + "\n"
        + "1 2 3 4"
        + " -1" * 16
        + "\n"
        + "1 2 3 0"
        + " -1" * 16
        + "\n"
    )
    with caplog.at_level(logging.WARNING):
        dicts = load_retinaface_labels(write(tmp_path, text), str(tmp_path))
    assert [face["bbox"] for face in dicts[0]["annotations"]] == [[1, 2, 3, 4]]
    assert "dropped 2 faces of zero width or height (first at line 2)" in caplog.text


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "lists no image"),
        ("1 2 3 4\n", "lists no image"),
        ("\n1 2 3 4\n# a/b.jpg\n", r"label.txt:2: a face before the first"),
        ("# a/b.jpg\n" + "1 2 3 4" + " 0" * 15 + "\n", r"label.txt:2: expected 20 numbers, got 19"),
        (
            "# a/b.jpg\n" + "1 2 3 4" + " 0" * 16 + "\n1 2 3 4\n",
            r"label.txt:3: expected 20 numbers, got 4",
        ),
        (
            "# a/b.jpg\n" + "1 2 3 4 5 6 2" + " 0" * 13 + "\n",
            r"label.txt:2: the flag of landmark 1 \(left_eye\) is 2",
        ),
        (
            "# a/b.jpg\n" + "1 2 3 4" + " 0" * 14 + " 0.5 0\n",
            r"label.txt:2: the flag of landmark 5 \(right_mouth\) is 0.5",
        ),
        ("# a/b.jpg\n" + "1 2 x 4" + " 0" * 16 + "\n", r"label.txt:2: non-numeric"),
        ("# a/b.jpg\n" + "1 2 nan 4" + " 0" * 16 + "\n", r"label.txt:2: non-finite"),
        ("# a/b.jpg 1024 768\n", r"label.txt:1: expected '# <image path>'.*labelv2"),
        ("#\n", r"label.txt:1: expected '# <image path>'"),
        (
            "# a/b.jpg\n# c.jpg\n# a/b.jpg\n",
            r"label.txt:3: image a/b.jpg is listed again \(first at .*label.txt:1\)",
        ),
        ("# ../b.jpg\n", r"label.txt:1"),
        ("# /etc/b.jpg\n", r"label.txt:1"),
        # Python's float() takes "1_0"; the block parser does not, and the line is named either way.
        ("# a/b.jpg\n" + "1 2 3 4" + " 0" * 15 + " 1_0\n", r"label.txt:2: non-numeric field"),
        ("# a/b\x00.jpg\n", r"label.txt:1: image path .* holds a NUL byte"),
        (
            "# a/b.jpg\n" + "1 2 3 4 1e7 5 0" + " 0" * 12 + " 0.5\n",
            r"label.txt:2: a number beyond any image",
        ),
        (
            "# a/b.jpg\n" + "1 2 3 4 1e39 5 0" + " 0" * 12 + " 0.5\n",
            r"label.txt:2: a number beyond any image",
        ),
        (
            "# a/b.jpg\n" + "1 " * 600_000 + "\n",
            r"label.txt:2: a line of more than 1,048,576 bytes",
        ),
    ],
)
def test_malformed_file_names_file_and_line(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_retinaface_labels(write(tmp_path, text), str(tmp_path))


def test_a_padded_line_loads_as_the_plain_one(tmp_path):
    """A line padded with 50 KB of spaces: the same faces, read line by line (the reader's memory
    grows with the file, not with the longest line times the number of lines)."""
    plain = load_retinaface_labels(write(tmp_path, LABELS), str(tmp_path), read_sizes=False)
    padded_text = LABELS.replace("0.68\n", "0.68" + " " * 50_000 + "\n")
    padded = load_retinaface_labels(
        write(tmp_path, padded_text, "padded.txt"), str(tmp_path), read_sizes=False
    )
    assert [r["annotations"] for r in padded] == [r["annotations"] for r in plain]
    assert sum(len(r["annotations"]) for r in padded) == 3


def test_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "label.txt"
    path.write_bytes(b"# a/b.jpg\n1 2 3 4\n# \xff.jpg\n")
    with pytest.raises(ValueError, match="label.txt:3: not UTF-8"):
        load_retinaface_labels(str(path), str(tmp_path))


# Millipixels, as integers: a float strategy trips over the flush-to-zero mode some libraries set.
_coordinate = st.integers(-(10**7), 10**7).map(lambda v: v / 1000)
_point = st.tuples(_coordinate, _coordinate, st.sampled_from([0.0, 1.0]))
_face = st.tuples(
    st.lists(st.integers(1, 5000), min_size=4, max_size=4),
    st.one_of(st.none(), st.lists(_point, min_size=5, max_size=5)),
    st.integers(0, 100).map(lambda v: v / 100),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.lists(_face, max_size=6), min_size=1, max_size=5))
def test_written_labels_read_back(tmp_path, images):
    lines = []
    for index, faces in enumerate(images):
        lines.append(f"# e/{index}.jpg")
        for box, points, score in faces:
            values = [v for p in points for v in p] if points else [-1.0] * 15
            lines.append(" ".join(repr(float(v)) for v in [*box, *values, score]))
    dicts = load_retinaface_labels(write(tmp_path, "\n".join(lines) + "\n"), str(tmp_path))
    assert [d["image_id"] for d in dicts] == [f"e/{i}" for i in range(len(images))]
    for record, faces in zip(dicts, images):
        assert [face["bbox"] for face in record["annotations"]] == [
            list(map(float, box)) for box, _, _ in faces
        ]
        expected = [
            [v for x, y, flag in points for v in (x, y, 2.0 - flag)] if points else NO_LANDMARK
            for _, points, _ in faces
        ]
        assert [face["keypoints"] for face in record["annotations"]] == expected


# --- the mapper -----------------------------------------------------------------

LEFT_FACE = [10.0, 10.0, 40.0, 50.0]  # XYXY
LEFT_POINTS = [15, 20, 2, 30, 21, 2, 22, 30, 1, 17, 40, 2, 28, 41, 2]


def landmark_face(box, keypoints):
    return {"bbox": box, "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "keypoints": keypoints}


def keypoint_mapper(augmentations):
    return SRNDatasetMapper(
        is_train=True,
        augmentations=augmentations,
        image_format="BGR",
        use_keypoint=True,
        keypoint_hflip_indices=np.array([1, 0, 2, 4, 3]),
    )


@pytest.fixture
def image_100x80(tmp_path):
    path = tmp_path / "image.jpg"
    cv2.imwrite(str(path), np.full((80, 100, 3), 128, np.uint8))
    return str(path)


def test_flip_mirrors_points_and_swaps_left_and_right(image_100x80):
    mapper = keypoint_mapper([T.RandomFlip(prob=1.0)])
    out = mapper(
        {
            "file_name": image_100x80,
            "annotations": [
                landmark_face(LEFT_FACE, LEFT_POINTS),
                landmark_face([60, 5, 90, 40], NO_LANDMARK),
            ],
        }
    )
    keypoints = out["instances"].gt_keypoints.tensor.numpy()
    # x -> 100 - x; the image's left eye of the flipped face is the original right eye, and so the mouth.
    np.testing.assert_array_equal(
        keypoints[0], [[70, 21, 2], [85, 20, 2], [78, 30, 1], [72, 41, 2], [83, 40, 2]]
    )
    np.testing.assert_array_equal(keypoints[1], np.zeros((5, 3)))
    np.testing.assert_array_equal(out["instances"].gt_boxes.tensor[0].numpy(), [60, 10, 90, 50])


def test_dropped_face_takes_its_landmarks_and_points_outside_stay(image_100x80):
    mapper = keypoint_mapper([SquareCropTransform(0, 0, 50, 50, 100, 80)])
    outside = landmark_face([40, 40, 70, 70], [45, 45, 2] * 5)  # centre (55, 55) leaves the crop
    partly = landmark_face(
        [30, 30, 60, 60], [35, 35, 2, 55, 35, 2, 45, 45, 1, 36, 56, 2, 54, 56, 0]
    )
    out = mapper(
        {
            "file_name": image_100x80,
            "annotations": [landmark_face(LEFT_FACE, LEFT_POINTS), outside, partly],
        }
    )
    keypoints = out["instances"].gt_keypoints.tensor.numpy()
    assert keypoints.shape == (2, 5, 3)
    np.testing.assert_array_equal(keypoints[0].ravel(), LEFT_POINTS)
    # Outside the 50x50 crop but kept: coordinates and visibility unchanged; unannotated stays zero.
    np.testing.assert_array_equal(
        keypoints[1], [[35, 35, 2], [55, 35, 2], [45, 45, 1], [36, 56, 2], [0, 0, 0]]
    )


def test_keypoints_required_when_keypoint_on(image_100x80):
    without = {"bbox": LEFT_FACE, "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}
    with pytest.raises(
        ValueError, match="image.jpg: a face has no .keypoints. while MODEL.SRN.LANDMARKS.ENABLED"
    ):
        keypoint_mapper([])(
            {
                "file_name": image_100x80,
                "annotations": [landmark_face(LEFT_FACE, LEFT_POINTS), without],
            }
        )


def test_without_keypoint_on_instances_carry_no_keypoints(image_100x80):
    out = SRNDatasetMapper(make_cfg(), is_train=True)(
        {"file_name": image_100x80, "annotations": [landmark_face(LEFT_FACE, LEFT_POINTS)]}
    )
    assert not out["instances"].has("gt_keypoints")


_DOT_COLORS = np.array(
    [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)], np.float64
)


def find_dots(image):
    """The (5, 2) centroids, in Detectron2's continuous frame, of the pixels nearest each dot colour."""
    distance = np.linalg.norm(image[None].astype(np.float64) - _DOT_COLORS[:, None, None], axis=-1)
    centroids = []
    for near in distance < 90:
        ys, xs = np.nonzero(near)
        centroids.append((xs.mean() + 0.5, ys.mean() + 0.5) if len(xs) else (np.nan, np.nan))
    return np.array(centroids)


def test_srn_augmentation_keeps_landmarks_on_the_pixels_they_mark(tmp_path):
    """Dots drawn at a face's landmarks are found, after the whole SRN augmentation, where its keypoints say."""
    image = np.full((160, 200, 3), 90, np.uint8)
    centres = np.array([(70, 60), (110, 60), (90, 80), (75, 105), (105, 105)])
    for centre, color in zip(centres, _DOT_COLORS):
        cv2.circle(image, tuple(int(v) for v in centre), 4, tuple(int(c) for c in color), -1)
    path = str(tmp_path / "dots.png")
    cv2.imwrite(path, image)
    keypoints = np.concatenate([centres + 0.5, np.full((5, 1), 2.0)], 1).ravel().tolist()
    record = {"file_name": path, "annotations": [landmark_face([50, 35, 130, 130], keypoints)]}

    cfg = make_cfg()
    cfg.INPUT.SQUARE_SIZE_TRAIN = 256
    mapper = SRNDatasetMapper(cfg, is_train=True)
    # Colour changes move no point, and would move the dots' colours away from those searched for.
    mapper.augmentations = T.AugmentationList(
        [a for a in mapper.augmentations.augs if not isinstance(a, RandomPhotometricDistortion)]
    )
    mapper.use_keypoint, mapper.keypoint_hflip_indices = True, np.array([1, 0, 2, 4, 3])
    np.random.seed(3)
    flips, checked = 0, 0
    for _ in range(12):
        aug_input = T.AugInput(cv2.imread(path))
        transforms = mapper.augmentations(aug_input)
        instances = mapper._faces_to_instances(
            record["annotations"], transforms, aug_input.image.shape[:2], path
        )
        if not len(instances):
            continue
        flipped = any(isinstance(t, HFlipTransform) for t in transforms.transforms)
        flips += flipped
        found = find_dots(aug_input.image)
        points = instances.gt_keypoints.tensor[0].numpy()
        # After a flip the file's left eye (the first dot's colour) is the image's right eye.
        order = [1, 0, 2, 4, 3] if flipped else [0, 1, 2, 3, 4]
        scale = aug_input.image.shape[0] / 160
        visible = ~np.isnan(found[:, 0])
        np.testing.assert_allclose(points[order, :2][visible], found[visible], atol=max(0.5, scale))
        checked += int(visible.sum())
    assert flips >= 2 and checked >= 40


# --- mini_faces -----------------------------------------------------------------

# sha256 over (path, bytes) of every image, from before mini_faces had landmarks: they must not change.
IMAGE_DIGESTS = {
    "train": "3b6611733ef0cbcffde8304e6cb177e588602dcdd3ceb07addc3942cc5838d2d",
    "val": "f8a906d43d374e39e13781c91e71869a8ddf8e2b8ece862e6c07fd98add1c8a2",
}


@pytest.fixture(scope="module")
def mini_faces_dir(mini_faces_root):
    return os.path.join(mini_faces_root, "mini_faces")


def test_mini_faces_images_are_unchanged_by_the_landmarks(mini_faces_dir):
    for split, expected in IMAGE_DIGESTS.items():
        image_root = mini_faces_split_paths(mini_faces_dir, split)[0]
        digest = hashlib.sha256()
        for path in sorted(
            os.path.relpath(
                os.path.join(folder, name), os.path.dirname(os.path.dirname(image_root))
            )
            for folder, _, names in os.walk(image_root)
            for name in names
        ):
            digest.update(path.encode())
            with open(os.path.join(mini_faces_dir, path), "rb") as f:
                digest.update(f.read())
        assert digest.hexdigest() == expected, split


def test_mini_faces_landmarks_mark_the_drawn_parts():
    rendered = render_mini_faces_image("val", 0)
    assert rendered.landmarks.shape == (len(rendered.boxes), 5, 3)
    np.testing.assert_array_equal(
        rendered.landmarks[..., 2], np.tile([0, 0, 1, 0, 0], (len(rendered.boxes), 1))
    )
    large = np.sqrt(rendered.boxes[:, 2] * rendered.boxes[:, 3]) >= 40
    assert large.sum() >= 2
    gray = cv2.cvtColor(rendered.image, cv2.COLOR_BGR2GRAY).astype(np.float64)
    for box, points in zip(rendered.boxes[large], rendered.landmarks[large]):
        x, y, w, h = box
        assert (
            (points[:, 0] > x)
            & (points[:, 0] < x + w)
            & (points[:, 1] > y)
            & (points[:, 1] < y + h)
        ).all()
        left, right, nose, mouth_left, mouth_right = points[:, :2]
        assert (
            left[1] == right[1]
            and left[0] < nose[0] < right[0]
            and left[1] < nose[1] < mouth_left[1]
        )
        assert mouth_left[0] < nose[0] < mouth_right[0]
        # The eyes (dark, 10-60 per channel) are darker than the skin at the nose, which is not drawn.
        skin = gray[int(round(nose[1])), int(round(nose[0]))]
        for eye in (left, right):
            assert gray[int(round(eye[1])), int(round(eye[0]))] < skin - 30


def test_mini_faces_datasets_carry_landmarks_and_keypoint_metadata(mini_faces_dir, monkeypatch):
    monkeypatch.setenv("SRN_DATASETS", os.path.dirname(mini_faces_dir))
    dicts = DatasetCatalog.get("mini_faces_val")
    rendered = render_mini_faces_image("val", 7)
    record = next(d for d in dicts if d["file_name"].endswith(rendered.relative_path))
    keypoints = np.array([face["keypoints"] for face in record["annotations"]]).reshape(-1, 5, 3)
    np.testing.assert_array_equal(keypoints[..., :2], rendered.landmarks[..., :2])
    np.testing.assert_array_equal(keypoints[..., 2], 2 - rendered.landmarks[..., 2])
    assert MetadataCatalog.get("mini_faces_val").keypoint_names == LANDMARK_NAMES
    assert (
        utils.create_keypoint_hflip_indices(["mini_faces_train"])
        == LANDMARK_FLIP_INDICES
        == [1, 0, 2, 4, 3]
    )


def test_attach_landmarks_refuses_other_boxes(mini_faces_dir, tmp_path):
    image_root, gt_file, label_file = mini_faces_split_paths(mini_faces_dir, "val")
    with open(label_file) as f:
        lines = f.read().splitlines()
    face_line = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    image = lines[max(i for i in range(face_line) if lines[i].startswith("#"))][2:]
    lines[face_line] = "0 " + lines[face_line].split(" ", 1)[1]
    with pytest.raises(ValueError, match=f"faces of '{os.path.splitext(image)[0]}' differ"):
        attach_landmarks(
            load_wider_face(gt_file, image_root),
            write(tmp_path, "\n".join(lines) + "\n"),
            image_root,
        )
    with pytest.raises(ValueError, match="lists 299 images, the boxes' file 300"):
        first_gone = lines[next(i for i in range(1, len(lines)) if lines[i].startswith("#")) :]
        attach_landmarks(
            load_wider_face(gt_file, image_root),
            write(tmp_path, "\n".join(first_gone) + "\n"),
            image_root,
        )


def test_widerface_train_landmarks_loads_from_the_root(tmp_path, monkeypatch):
    label_dir = tmp_path / "widerface" / "retinaface_gt_v1.1" / "train"
    label_dir.mkdir(parents=True)
    (label_dir / "label.txt").write_text(LABELS)
    monkeypatch.setenv("SRN_DATASETS", str(tmp_path))
    dicts = DatasetCatalog.get("widerface_train_landmarks")
    assert dicts[0]["file_name"] == str(
        tmp_path
        / "widerface"
        / "WIDER_train"
        / "images"
        / "0--Parade"
        / "0_Parade_marchingband_1_849.jpg"
    )
    assert sum(len(d["annotations"]) for d in dicts) == 3
    metadata = MetadataCatalog.get("widerface_train_landmarks")
    assert metadata.keypoint_flip_map == (("left_eye", "right_eye"), ("left_mouth", "right_mouth"))
