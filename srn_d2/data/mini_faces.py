"""mini_faces: a small face dataset drawn procedurally, written in the WIDER FACE layout.

It lets the project train and evaluate end to end where WIDER FACE cannot be
downloaded. Every image comes from ``np.random.default_rng((SEED, split, index))``
and is written with a fixed JPEG quality, so every generation gives the same bytes.

Layout written under ``<root>/mini_faces/`` (the same as WIDER FACE, so the
WIDER parser loads it, with RetinaFace's landmark file beside it)::

    WIDER_{train,val}/images/<event>/<image>.jpg
    wider_face_split/wider_face_{train,val}_bbx_gt.txt
    retinaface_gt/{train,val}/label.txt

Every face has five landmarks (:data:`srn_d2.data.retinaface_labels.LANDMARK_NAMES`),
exact because they are where the face's parts were drawn: the eye centres, the
mouth's corners (the ends of its ellipse or arc), and the nose, which is not
drawn, halfway between the eyes' line and the mouth on the face's vertical
axis, flagged as occluded. They are in the boxes' frame: OpenCV's, where a
pixel's centre has integer coordinates.
"""

import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np

from ..utils.file_io import process_alive
from .retinaface_labels import NUM_LANDMARKS

logger = logging.getLogger(__name__)

MINI_FACES_DIR = "mini_faces"
SEED = 1809_02693
# 300 val images (4194 faces, 680 of them easy): resampling them moves a trained model's AP
# by about 1.5 (easy), 0.7 (medium) and 0.4 (hard) points (standard deviation), half of
# what 60 val images gave; the images are generated in seconds.
SPLIT_SIZES = {"train": 240, "val": 300}
EVENTS = ("0--Crowd", "1--Street", "2--Portrait", "3--Clutter")
JPEG_QUALITY = 90
# Written last, inside the temporary folder: a mini_faces folder without it is incomplete.
# Its text names what was generated, so a folder from other settings is generated again.
COMPLETE_MARKER = "GENERATED"
MARKER_TEXT = f"mini_faces, seed {SEED}, splits {SPLIT_SIZES}, five landmarks a face\n"

_SPLIT_IDS = {"train": 0, "val": 1}
_IMAGE_SIDE_RANGE = (256, 384)
_MAX_FACES = 40
_EMPTY_IMAGE_PROB = 0.03
# Face size is sqrt(w * h). Rounding w and h to integers must keep the smallest at >= 6 px.
_SMALL_FACE_RANGE = (6.6, 16.0)
_LARGE_FACE_RANGE = (16.0, 299.0)
# Drawn well above 1/3 because large faces fail to find free room more often.
_SMALL_FACE_PROB = 0.45
_ASPECT_RANGE = (1.15, 1.35)  # height / width
_MAX_DISTRACTORS = 8
_PLACEMENT_TRIES = 32
# cv2 drawing with `shift` bits of sub-pixel precision.
_FACE_SHIFT = 1
_FEATURE_SHIFT = 4
# Skin tones (BGR), light to dark; each face jitters one of them.
_SKIN_TONES = np.array(
    [
        (189, 224, 255),
        (160, 200, 240),
        (125, 194, 241),
        (105, 172, 224),
        (80, 140, 200),
        (66, 134, 198),
        (50, 105, 165),
        (36, 85, 141),
        (23, 51, 92),
    ],
    dtype=np.float64,
)


@dataclass(frozen=True)
class MiniFacesImage:
    relative_path: str  # "<event>/<image>.jpg"
    image: np.ndarray  # (H, W, 3) uint8 BGR
    boxes: np.ndarray  # (K, 4) int64 XYWH, tight around each face ellipse
    blur: np.ndarray  # (K,) int64 WIDER blur attribute: 0 clear, 1 normal, 2 heavy
    landmarks: (
        np.ndarray
    )  # (K, 5, 3) float64 x, y, flag as label.txt writes it: 0 visible, 1 occluded


def image_relative_path(index: int) -> str:
    """WIDER-style ``<event>/<n>_<Event>_mini_<index>.jpg``."""
    event = EVENTS[index % len(EVENTS)]
    number, title = event.split("--")
    return f"{event}/{number}_{title}_mini_{index}.jpg"


def render_mini_faces_image(split: str, index: int) -> MiniFacesImage:
    """Draw image ``index`` of ``split``; the same arguments always give the same pixels."""
    rng = np.random.default_rng((SEED, _SPLIT_IDS[split], index))
    height, width = (
        int(v) for v in rng.integers(_IMAGE_SIDE_RANGE[0], _IMAGE_SIDE_RANGE[1] + 1, 2)
    )
    image = _background(rng, height, width)

    occupied = np.zeros((0, 4), dtype=np.int64)
    face_boxes = []
    for size in _face_sizes(rng, min(height, width)):
        aspect = rng.uniform(*_ASPECT_RANGE)
        box_w = max(5, round(size / math.sqrt(aspect)))
        box_h = max(6, round(size * math.sqrt(aspect)))
        box = _find_free_box(rng, occupied, box_w, box_h, height, width)
        if box is not None:
            occupied = np.vstack([occupied, box])
            face_boxes.append(box)
    for _ in range(int(rng.integers(0, _MAX_DISTRACTORS + 1))):
        side = int(np.exp(rng.uniform(np.log(8), np.log(120))))
        box = _find_free_box(rng, occupied, side, int(side * rng.uniform(0.6, 1.6)), height, width)
        if box is not None:
            occupied = np.vstack([occupied, box])
            _draw_distractor(image, rng, box)
    landmarks = np.array([_draw_face(image, rng, box) for box in face_boxes]).reshape(
        -1, NUM_LANDMARKS, 3
    )

    image, blurred = _degrade(rng, image)
    boxes = np.array(face_boxes, dtype=np.int64).reshape(-1, 4)
    sizes = np.sqrt(boxes[:, 2] * boxes[:, 3])
    blur = np.minimum((sizes < 20).astype(np.int64) + (sizes < 10) + blurred, 2)
    return MiniFacesImage(image_relative_path(index), image, boxes, blur, landmarks)


def generate_mini_faces(out_dir: str) -> None:
    """Write every split of mini_faces under ``out_dir`` (which should be empty)."""
    for split, num_images in SPLIT_SIZES.items():
        image_root = os.path.join(out_dir, f"WIDER_{split}", "images")
        gt_entries, label_entries = [], []
        for index in range(num_images):
            rendered = render_mini_faces_image(split, index)
            file_name = os.path.join(image_root, rendered.relative_path)
            os.makedirs(os.path.dirname(file_name), exist_ok=True)
            if not cv2.imwrite(file_name, rendered.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
                raise OSError(f"could not write {file_name}")
            gt_entries.append(_gt_entry(rendered))
            label_entries.append(_label_entry(rendered))
        gt_file, label_file = mini_faces_split_paths(out_dir, split)[1:]
        for path, entries in ((gt_file, gt_entries), (label_file, label_entries)):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write("".join(entries))


def ensure_mini_faces(root: str) -> str:
    """Path of ``<root>/mini_faces``, generating it first if needed.

    Safe when several processes race: each generates into its own temporary
    folder and renames it into place; the rename is atomic, so the first one
    wins and the others discard their copy. A folder generated with other
    settings (another number of images) is moved aside and generated again.
    """
    final_dir = os.path.join(root, MINI_FACES_DIR)
    if os.path.isdir(root):
        _remove_abandoned_copies(root)
    marker = _read_marker(final_dir)
    if marker == MARKER_TEXT:
        return final_dir
    if marker is None and os.path.exists(final_dir):
        raise OSError(
            f"{final_dir} exists but is incomplete (no {COMPLETE_MARKER} file): delete it "
            "and it will be generated again"
        )
    os.makedirs(root, exist_ok=True)
    start = time.perf_counter()
    # The process id in the name tells later runs whether the copy is still being written.
    tmp_dir = tempfile.mkdtemp(prefix=f".{MINI_FACES_DIR}-{os.getpid()}-", dir=root)
    stale_dir = None
    try:
        generate_mini_faces(tmp_dir)
        with open(os.path.join(tmp_dir, COMPLETE_MARKER), "w") as f:
            f.write(MARKER_TEXT)
        # mkdtemp creates the folder private to this user; the dataset is meant to be shared.
        os.chmod(tmp_dir, 0o755)
        if marker is not None:
            logger.warning(
                f"{final_dir} was generated with other settings ({marker.strip()}); generating it again"
            )
            stale_dir = tempfile.mkdtemp(prefix=f".{MINI_FACES_DIR}-{os.getpid()}-stale-", dir=root)
            _rename_if_present(final_dir, stale_dir)
        try:
            os.rename(tmp_dir, final_dir)
        except OSError:
            if _read_marker(final_dir) != MARKER_TEXT:
                raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if stale_dir is not None:
            shutil.rmtree(stale_dir, ignore_errors=True)
    logger.info(f"Generated {final_dir} in {time.perf_counter() - start:.1f} s")
    return final_dir


def _remove_abandoned_copies(root: str) -> None:
    """Delete the temporary copies of processes that died while generating (killed, out of disk)."""
    prefix = f".{MINI_FACES_DIR}-"
    for name in os.listdir(root):
        owner = name[len(prefix) :].split("-", 1)[0]
        if not name.startswith(prefix) or not owner.isdigit() or process_alive(int(owner)):
            continue
        logger.warning(
            f"removing {os.path.join(root, name)}, left by an interrupted generation (process {owner})"
        )
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def _read_marker(folder: str):
    """Text of the folder's completion marker, or None without one."""
    try:
        with open(os.path.join(folder, COMPLETE_MARKER)) as f:
            return f.read()
    except FileNotFoundError:
        return None


def _rename_if_present(src: str, dst: str) -> None:
    """Rename ``src`` onto the empty folder ``dst``; another process may have moved it first."""
    try:
        os.rename(src, dst)
    except FileNotFoundError:
        pass


def _gt_entry(rendered: MiniFacesImage) -> str:
    if len(rendered.boxes) == 0:
        return f"{rendered.relative_path}\n0\n0 0 0 0 0 0 0 0 0 0 \n"
    zeros = np.zeros((len(rendered.boxes), 5), dtype=np.int64)
    table = np.concatenate([rendered.boxes, rendered.blur[:, None], zeros], 1)
    lines = "".join(" ".join(map(str, row)) + " \n" for row in table.tolist())
    return f"{rendered.relative_path}\n{len(rendered.boxes)}\n{lines}"


def _label_entry(rendered: MiniFacesImage) -> str:
    """The image in RetinaFace's label.txt format; the last value (a blur score there) is 0."""
    points = rendered.landmarks.reshape(-1, 3 * NUM_LANDMARKS)
    table = np.concatenate([rendered.boxes, points, np.zeros((len(points), 1))], 1)
    lines = "".join(" ".join(f"{v:.10g}" for v in row) + "\n" for row in table.tolist())
    return f"# {rendered.relative_path}\n{lines}"


def _face_sizes(rng: np.random.Generator, short_side: int) -> np.ndarray:
    """Face sizes, largest first so that big faces get room before the image fills up."""
    if rng.random() < _EMPTY_IMAGE_PROB:
        return np.zeros(0)
    count = int(rng.integers(1, _MAX_FACES + 1))
    small = rng.random(count) < _SMALL_FACE_PROB
    small_sizes = rng.uniform(*_SMALL_FACE_RANGE, count)
    large_sizes = np.exp(rng.uniform(*np.log(_LARGE_FACE_RANGE), count))
    sizes = np.where(small, small_sizes, large_sizes)
    # The tallest aspect must still fit inside the image.
    sizes = np.minimum(sizes, 0.95 * short_side / math.sqrt(_ASPECT_RANGE[1]))
    return np.sort(sizes)[::-1]


def _find_free_box(rng, occupied, box_w, box_h, height, width):
    """A random XYWH box inside the image not touching any occupied box, or None."""
    if box_w > width or box_h > height:
        return None
    xs = rng.integers(0, width - box_w + 1, _PLACEMENT_TRIES)
    ys = rng.integers(0, height - box_h + 1, _PLACEMENT_TRIES)
    # One pixel of margin keeps anti-aliased edges of neighbours out of each other's box.
    apart_x = (xs[:, None] + box_w + 1 <= occupied[None, :, 0]) | (
        occupied[None, :, 0] + occupied[None, :, 2] + 1 <= xs[:, None]
    )
    apart_y = (ys[:, None] + box_h + 1 <= occupied[None, :, 1]) | (
        occupied[None, :, 1] + occupied[None, :, 3] + 1 <= ys[:, None]
    )
    free = np.flatnonzero((apart_x | apart_y).all(axis=1))
    if len(free) == 0:
        return None
    return np.array([xs[free[0]], ys[free[0]], box_w, box_h], dtype=np.int64)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A gradient with low-frequency texture and random clutter shapes."""
    start_color, end_color = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.arange(width, dtype=np.float32)[None, :] * np.float32(np.cos(angle)) + np.arange(
        height, dtype=np.float32
    )[:, None] * np.float32(np.sin(angle))
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    coarse = rng.standard_normal((height // 16 + 2, width // 16 + 2, 3), dtype=np.float32)
    texture = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    image = (
        start_color
        + (end_color - start_color) * ramp[..., None]
        + texture * np.float32(rng.uniform(10, 50))
    )
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(5, 30))):
        _draw_clutter(image, rng, height, width)
    return image


def _draw_clutter(image, rng, height, width):
    color = tuple(int(c) for c in rng.integers(0, 256, 3))
    x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
    extent = int(rng.integers(4, max(5, min(height, width) // 2)))
    kind = rng.integers(0, 4)
    if kind == 0:
        thickness = -1 if rng.random() < 0.5 else int(rng.integers(1, 4))
        cv2.rectangle(
            image, (x, y), (x + extent, y + int(rng.integers(4, extent + 5))), color, thickness
        )
    elif kind == 1:
        end = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.line(image, (x, y), end, color, int(rng.integers(1, 6)), cv2.LINE_AA)
    elif kind == 2:
        cv2.circle(image, (x, y), extent // 2, color, -1 if rng.random() < 0.5 else 2, cv2.LINE_AA)
    else:
        points = rng.integers(-extent, extent + 1, (3, 2)) + np.array([x, y])
        cv2.fillPoly(image, [points.astype(np.int32)], color, cv2.LINE_AA)


def _skin_color(rng: np.random.Generator) -> Tuple[int, int, int]:
    tone = _SKIN_TONES[rng.integers(0, len(_SKIN_TONES))] + rng.uniform(-15, 15, 3)
    return tuple(int(c) for c in np.clip(tone, 0, 255))


def _draw_distractor(image, rng, box):
    """A face-coloured blob without eyes or mouth: a hard negative, never annotated."""
    x, y, w, h = (int(v) for v in box)
    color = _skin_color(rng)
    if rng.random() < 0.7:
        center = (2 * x + w, 2 * y + h)
        cv2.ellipse(image, center, (w, h), 0, 0, 360, color, -1, cv2.LINE_AA, _FACE_SHIFT)
    else:
        cv2.rectangle(image, (x, y), (x + w - 1, y + h - 1), color, -1)


def _draw_face(image, rng, box) -> np.ndarray:
    """Skin ellipse filling ``box`` exactly, with two eyes and a mouth inside it.

    Returns the face's (5, 3) landmarks as label.txt writes them (module docstring).
    """
    x, y, w, h = (int(v) for v in box)
    # With shift=1, (2x + w, 2y + h) is the box center and (w, h) its half-sides, exactly.
    cv2.ellipse(
        image,
        (2 * x + w, 2 * y + h),
        (w, h),
        0,
        0,
        360,
        _skin_color(rng),
        -1,
        cv2.LINE_AA,
        _FACE_SHIFT,
    )
    scale = 1 << _FEATURE_SHIFT

    def fixed(value: float) -> int:
        return int(round(value * scale))

    center_x, center_y = x + w / 2, y + h / 2
    eye_color = tuple(int(c) for c in rng.integers(10, 60, 3))
    eye_dx = w * rng.uniform(0.17, 0.24)
    eye_y = center_y - h * rng.uniform(0.05, 0.14)
    eye_axes = (
        fixed(max(w * rng.uniform(0.06, 0.09), 0.5)),
        fixed(max(h * rng.uniform(0.05, 0.08), 0.5)),
    )
    eye_centers = [(fixed(center_x + side * eye_dx), fixed(eye_y)) for side in (-1, 1)]
    for eye_center in eye_centers:
        cv2.ellipse(
            image, eye_center, eye_axes, 0, 0, 360, eye_color, -1, cv2.LINE_AA, _FEATURE_SHIFT
        )

    mouth_color = (int(rng.integers(20, 70)), int(rng.integers(20, 70)), int(rng.integers(70, 150)))
    mouth_center = (fixed(center_x), fixed(center_y + h * rng.uniform(0.18, 0.28)))
    mouth_axes = (
        fixed(max(w * rng.uniform(0.12, 0.22), 0.5)),
        fixed(max(h * rng.uniform(0.03, 0.07), 0.5)),
    )
    if rng.random() < 0.5:
        cv2.ellipse(
            image, mouth_center, mouth_axes, 0, 0, 360, mouth_color, -1, cv2.LINE_AA, _FEATURE_SHIFT
        )
    else:
        smile_thickness = max(1, round(h * 0.04))
        cv2.ellipse(
            image,
            mouth_center,
            mouth_axes,
            0,
            0,
            180,
            mouth_color,
            smile_thickness,
            cv2.LINE_AA,
            _FEATURE_SHIFT,
        )
    # The drawn positions, in fixed point: exact, not the unrounded values they came from.
    (left_x, eyes_y), (right_x, _) = eye_centers
    mouth_x, mouth_y = mouth_center
    nose = (fixed(center_x), (eyes_y + mouth_y) / 2)
    points = (
        np.array(
            [
                (left_x, eyes_y),
                (right_x, eyes_y),
                nose,
                (mouth_x - mouth_axes[0], mouth_y),
                (mouth_x + mouth_axes[0], mouth_y),
            ],
            dtype=np.float64,
        )
        / scale
    )
    flags = np.array([0, 0, 1, 0, 0], dtype=np.float64)
    return np.concatenate([points, flags[:, None]], 1)


def _degrade(rng: np.random.Generator, image: np.ndarray) -> Tuple[np.ndarray, int]:
    """Uneven lighting, sometimes blur, always sensor noise.

    Returns the image and 1 if it was blurred, else 0.
    """
    height, width = image.shape[:2]
    lighting = cv2.resize(rng.uniform(0.7, 1.2, (3, 3)).astype(np.float32), (width, height))
    degraded = image.astype(np.float32) * lighting[..., None]
    blurred = int(rng.random() < 0.25)
    if blurred:
        degraded = cv2.GaussianBlur(degraded, (0, 0), rng.uniform(0.5, 1.2))
    degraded += rng.standard_normal(degraded.shape, dtype=np.float32) * np.float32(
        rng.uniform(2, 8)
    )
    return np.clip(np.rint(degraded), 0, 255).astype(np.uint8), blurred


def mini_faces_split_paths(root_dir: str, split: str) -> Tuple[str, str, str]:
    """(image_root, gt_file, landmark label file) of ``split`` inside a generated mini_faces folder."""
    return (
        os.path.join(root_dir, f"WIDER_{split}", "images"),
        os.path.join(root_dir, "wider_face_split", f"wider_face_{split}_bbx_gt.txt"),
        os.path.join(root_dir, "retinaface_gt", split, "label.txt"),
    )
