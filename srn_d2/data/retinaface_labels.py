"""Five-point face landmarks in RetinaFace's ``label.txt`` format, as Detectron2 keypoints.

The format (``retinaface_gt_v1.1/train/label.txt``, WIDER FACE train)::

    # 0--Parade/0_Parade_marchingband_1_849.jpg
    449 330 122 149 488.906 373.643 0.0 542.089 376.442 0.0 515.031 412.83 0.0 485.174 425.893 0.0 538.357 431.491 0.0 0.82
    177 218 64 109 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 0.68

A ``#`` line names an image (relative to the image root); every line up to the
next one is a face: ``x y w h`` (the WIDER box), five ``(x, y, flag)`` points
in the order of :data:`LANDMARK_NAMES`, and a last value that the format's
authors describe as a blur score. A point's flag is 0 where it is visible, 1
where it was placed on an occluded part, -1 where it was not annotated (a face
without landmarks has all fifteen values at -1). The val file of the same
release has boxes only (four values a face); such a file loads as faces
without landmarks.

Each face's ``keypoints`` follow Detectron2's convention, a flat list
``[x1, y1, v1, ..., x5, y5, v5]`` with v = 2 (visible), 1 (occluded) or 0
(not annotated, x = y = 0), in the same pixel frame as the box. "Left" and
"right" are the image's, as RetinaFace and the ArcFace alignment template use them.
"""

import logging
from typing import Dict, List

import numpy as np
from detectron2.structures import BoxMode

from ..errors import InputError, require_unique_images
from .annotation_text import parse_records, read_text_lines, shown
from .wider_face import gc_paused, image_records

logger = logging.getLogger(__name__)

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
# A horizontal flip turns the image's left eye into its right eye, and so the mouth corners.
LANDMARK_FLIP_MAP = (("left_eye", "right_eye"), ("left_mouth", "right_mouth"))
NUM_LANDMARKS = len(LANDMARK_NAMES)
# Where each point goes on a horizontal flip, as detection_utils.create_keypoint_hflip_indices makes it.
LANDMARK_FLIP_INDICES = [1, 0, 2, 4, 3]

_BOX_FIELDS = 4
_FIELDS_WITH_LANDMARKS = _BOX_FIELDS + 3 * NUM_LANDMARKS + 1
# The file's point flag -> Detectron2's visibility.
_VISIBILITY_OF_FLAG = {0.0: 2, 1.0: 1, -1.0: 0}


def landmark_metadata() -> Dict:
    """The metadata Detectron2's keypoint tools read (flip indices, ``Visualizer``)."""
    return dict(keypoint_names=LANDMARK_NAMES, keypoint_flip_map=LANDMARK_FLIP_MAP)


def load_retinaface_labels(
    label_file: str, image_root: str, *, read_sizes: bool = True
) -> List[Dict]:
    """Dataset dicts of a RetinaFace ``label.txt``; ValueError naming the file and line of any malformation.

    Faces of zero width or height are dropped with a warning that counts them.
    Every face gets ``keypoints`` (all zero for a face without landmarks), so
    that Detectron2 batches them as one ``Keypoints`` tensor.
    """
    lines = read_text_lines(label_file)
    # Python strings, not a numpy string array: that would pad every line to the longest one.
    stripped = [line.strip() for line in lines]
    is_header = np.fromiter(
        (line.startswith("#") for line in stripped), dtype=bool, count=len(stripped)
    )
    is_face = ~is_header & np.fromiter(
        (bool(line) for line in stripped), dtype=bool, count=len(stripped)
    )
    header_lines = np.flatnonzero(is_header)
    if len(header_lines) == 0:
        raise InputError(f"{label_file}: lists no image (no '# <image path>' line)")
    face_lines = np.flatnonzero(is_face)
    if len(face_lines) and face_lines[0] < header_lines[0]:
        raise InputError(
            f"{label_file}:{face_lines[0] + 1}: a face before the first '# <image path>' line"
        )

    names = [_image_path(label_file, int(i) + 1, stripped[i]) for i in header_lines]
    places = [f"{label_file}:{i + 1}" for i in header_lines.tolist()]
    require_unique_images(names, places)
    records = _parse_faces(label_file, [lines[i] for i in face_lines], face_lines + 1)
    image_of_face = np.cumsum(is_header)[face_lines] - 1

    has_area = (records[:, 2] > 0) & (records[:, 3] > 0)
    if not has_area.all():
        logger.warning(
            f"{label_file}: dropped {int((~has_area).sum())} faces of zero width or height "
            f"(first at line {int(face_lines[~has_area][0]) + 1})"
        )
    faces_per_image = np.bincount(image_of_face[has_area], minlength=len(names))
    with gc_paused():
        annotations = _face_annotations(records[has_area])

    return image_records(names, places, faces_per_image, annotations, image_root, read_sizes)


def _image_path(label_file: str, line_number: int, header: str) -> str:
    path = header[1:].strip()
    if not path or len(path.split()) != 1:
        raise InputError(
            f"{label_file}:{line_number}: expected '# <image path>', got {shown(header)} "
            "(SCRFD's labelv2 files, with the image size after the path and x2 y2 boxes, are another format)"
        )
    return path


def _parse_faces(label_file: str, face_text: List[str], face_lines: np.ndarray) -> np.ndarray:
    """(N, 20) float64 face records; a boxes-only file gets landmark values of -1."""
    num_fields = _FIELDS_WITH_LANDMARKS
    if face_text and len(face_text[0].split()) == _BOX_FIELDS:
        num_fields = _BOX_FIELDS
    records = parse_records(label_file, face_text, face_lines, num_fields)
    if num_fields == _BOX_FIELDS:
        records = np.concatenate(
            [records, np.full((len(records), _FIELDS_WITH_LANDMARKS - _BOX_FIELDS), -1.0)], 1
        )
    flags = records[:, _BOX_FIELDS + 2 : _BOX_FIELDS + 3 * NUM_LANDMARKS : 3]
    known = np.isin(flags, list(_VISIBILITY_OF_FLAG))
    if not known.all():
        face, point = (int(v) for v in np.argwhere(~known)[0])
        raise InputError(
            f"{label_file}:{int(face_lines[face])}: the flag of landmark {point + 1} ({LANDMARK_NAMES[point]}) "
            f"is {flags[face, point]:g}; it must be 0 (visible), 1 (occluded) or -1 (not annotated)"
        )
    return records


def landmarks_to_keypoints(landmarks: np.ndarray) -> np.ndarray:
    """(N, 5, 3) points with the file's flags -> (N, 5, 3) Detectron2 keypoints (x = y = v = 0 unannotated)."""
    visibility = np.zeros(landmarks.shape[:2])
    for flag, value in _VISIBILITY_OF_FLAG.items():
        visibility[landmarks[..., 2] == flag] = value
    keypoints = np.concatenate([landmarks[..., :2], visibility[..., None]], axis=-1)
    keypoints[visibility == 0] = 0
    return keypoints


def _face_annotations(records: np.ndarray) -> List[Dict]:
    boxes = records[:, :_BOX_FIELDS].tolist()
    landmarks = records[:, _BOX_FIELDS : _BOX_FIELDS + 3 * NUM_LANDMARKS].reshape(
        -1, NUM_LANDMARKS, 3
    )
    keypoints = landmarks_to_keypoints(landmarks).reshape(len(records), 3 * NUM_LANDMARKS).tolist()
    blur_scores = records[:, -1].tolist()
    return [
        {
            "bbox": box,
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": 0,
            "iscrowd": 0,
            "keypoints": points,
            "blur_score": blur_score,
        }
        for box, points, blur_score in zip(boxes, keypoints, blur_scores)
    ]


def attach_landmarks(dataset_dicts: List[Dict], label_file: str, image_root: str) -> List[Dict]:
    """``dataset_dicts`` (of a WIDER-format file) with each face's ``keypoints`` from ``label_file``.

    The label file must list the same images and, for each, the same boxes in
    the same order; ValueError naming the label file's line otherwise.
    """
    labelled = load_retinaface_labels(label_file, image_root, read_sizes=False)
    by_id = {record["image_id"]: record for record in labelled}
    missing = [record["image_id"] for record in dataset_dicts if record["image_id"] not in by_id]
    if missing or len(labelled) != len(dataset_dicts):
        raise InputError(
            f"{label_file}: lists {len(labelled)} images, the boxes' file {len(dataset_dicts)}"
            + (
                f"; {len(missing)} of the latter are missing, first {missing[0]!r}"
                if missing
                else ""
            )
        )
    joined = []
    for record in dataset_dicts:
        faces, points = record.get("annotations", []), by_id[record["image_id"]]["annotations"]
        boxes = np.array([face["bbox"] for face in faces], dtype=np.float64).reshape(-1, 4)
        landmark_boxes = np.array([face["bbox"] for face in points], dtype=np.float64).reshape(
            -1, 4
        )
        if not np.array_equal(boxes, landmark_boxes):
            raise InputError(
                f"{label_file}: the faces of {record['image_id']!r} differ from the boxes' file "
                f"({len(landmark_boxes)} against {len(boxes)} boxes, or other boxes)"
            )
        annotations = [
            {**face, "keypoints": point["keypoints"]} for face, point in zip(faces, points)
        ]
        joined.append({**record, "annotations": annotations})
    return joined
