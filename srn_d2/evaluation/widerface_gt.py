"""WIDER FACE evaluation ground truth: every annotated face of every image, and
which of those faces count in each setting (easy, medium, hard).

Two sources:

* the official ``.mat`` files (``wider_face_<split>.mat`` holds ``event_list``,
  ``file_list`` and ``face_bbx_list``; ``wider_{easy,medium,hard}_<split>.mat``
  hold ``gt_list``, per image the 1-based indices of the faces that count);
* Detectron2 dataset dicts in the WIDER format, for datasets without official
  lists (e.g. the generated ``mini_faces_*``). The lists then follow the face
  size ``s = sqrt(w * h)`` in pixels and the ``invalid`` flag (``iscrowd`` when
  ``invalid`` is absent), with ``difficulty_by_size = (easy_min, medium_min)``
  (default ``(50, 20)``):

  - easy:   non-invalid faces with ``s >= easy_min``;
  - medium: non-invalid faces with ``s >= medium_min``;
  - hard:   every non-invalid face.

  Invalid faces stay in the face list without counting in any setting, as in the
  official files: a prediction that finds one is discarded, not a false positive.
"""

import os
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

import numpy as np

from ..annotations.mat_files import load_mat
from ..errors import InputError, require

SETTINGS = ("easy", "medium", "hard")


@dataclass(frozen=True)
class WiderFaceGroundTruth:
    """Faces of all images, concatenated.

    Attributes:
        image_ids: ``"<event>/<image stem>"`` per image.
        boxes: (F, 4) float64 face boxes (x, y, w, h), image after image.
        offsets: (N + 1,) faces of image i are ``boxes[offsets[i]:offsets[i + 1]]``.
        listed: setting -> (F,) bool, whether the face counts in that setting.
    """

    image_ids: Tuple[str, ...]
    boxes: np.ndarray
    offsets: np.ndarray
    listed: Mapping[str, np.ndarray]

    def __post_init__(self):
        if len(self.offsets) != len(self.image_ids) + 1 or self.offsets[-1] != len(self.boxes):
            raise ValueError("offsets must hold len(image_ids) + 1 entries ending at len(boxes)")
        for setting, mask in self.listed.items():
            if mask.shape != (len(self.boxes),):
                raise ValueError(f"listed[{setting!r}] must have one entry per face")

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    @property
    def num_faces(self) -> int:
        return len(self.boxes)

    def faces_of(self, index: int) -> np.ndarray:
        return self.boxes[self.offsets[index] : self.offsets[index + 1]]


def _from_per_image(
    image_ids: Sequence[str], boxes: List[np.ndarray], listed: Dict[str, List[np.ndarray]]
) -> WiderFaceGroundTruth:
    counts = np.array([len(b) for b in boxes], dtype=np.int64)
    return WiderFaceGroundTruth(
        image_ids=tuple(image_ids),
        boxes=np.concatenate(boxes).astype(np.float64) if boxes else np.zeros((0, 4)),
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        listed={
            s: np.concatenate(masks) if masks else np.zeros(0, bool) for s, masks in listed.items()
        },
    )


def read_faces_mat(faces_file: str) -> Tuple[List[str], List[List[str]], List[List[np.ndarray]]]:
    """The faces of an official ``wider_face_<split>.mat``, per event: event names, the
    image names of each event, and each image's (n, 4) x, y, w, h boxes."""
    faces_mat = load_mat(faces_file, ("event_list", "file_list", "face_bbx_list"))
    try:
        events = [str(e[0][0]) for e in faces_mat["event_list"]]
        file_lists = [[str(f[0][0]) for f in files[0]] for files in faces_mat["file_list"]]
        box_lists = [
            [b[0].reshape(-1, 4) for b in boxes[0]] for boxes in faces_mat["face_bbx_list"]
        ]
    except (IndexError, ValueError, TypeError) as error:
        raise InputError(
            f"{faces_file}: not laid out as wider_face_<split>.mat ({error})"
        ) from None
    return events, file_lists, box_lists


def load_widerface_gt_mat(gt_dir: str, split: str = "val") -> WiderFaceGroundTruth:
    """Load the official ground truth from ``gt_dir`` (``wider_face_<split>.mat`` and
    ``wider_{easy,medium,hard}_<split>.mat``), images in the files' event/file order."""
    faces_file = os.path.join(gt_dir, f"wider_face_{split}.mat")
    if not os.path.isfile(faces_file):
        raise FileNotFoundError(
            f"{faces_file} not found: the WIDER FACE evaluation needs the official ground truth "
            "(eval_tools/ground_truth of the WIDER FACE site); "
            "set TEST.WIDERFACE_GT_DIR or --gt-dir"
        )
    events, file_lists, box_lists = read_faces_mat(faces_file)
    image_ids = [f"{event}/{name}" for event, names in zip(events, file_lists) for name in names]
    boxes = [b for per_event in box_lists for b in per_event]

    listed: Dict[str, List[np.ndarray]] = {}
    for setting in SETTINGS:
        setting_file = os.path.join(gt_dir, f"wider_{setting}_{split}.mat")
        gt_lists = load_mat(setting_file, ("gt_list",))["gt_list"]
        if len(gt_lists) != len(events):
            raise InputError(
                f"{setting_file}: {len(gt_lists)} events, {faces_file} has {len(events)}"
            )
        masks = []
        for event_index, per_event in enumerate(gt_lists):
            entries = per_event[0]
            if len(entries) != len(box_lists[event_index]):
                raise InputError(
                    f"{setting_file}: event {events[event_index]} lists {len(entries)} images, "
                    f"{faces_file} has {len(box_lists[event_index])}"
                )
            for image_boxes, entry in zip(box_lists[event_index], entries):
                # int64 first: the files store small index lists as uint8.
                one_based = entry[0].reshape(-1).astype(np.int64)
                if one_based.size and (one_based.min() < 1 or one_based.max() > len(image_boxes)):
                    raise InputError(
                        f"{setting_file}: face index out of range in {events[event_index]}"
                    )
                mask = np.zeros(len(image_boxes), dtype=bool)
                mask[one_based - 1] = True
                masks.append(mask)
        listed[setting] = masks
    return _from_per_image(image_ids, boxes, listed)


def face_sizes(boxes_xywh: np.ndarray) -> np.ndarray:
    """(F,) face sizes ``sqrt(w * h)`` in pixels of (F, 4) x, y, w, h boxes; a degenerate box is 0."""
    return np.sqrt(np.clip(boxes_xywh[:, 2] * boxes_xywh[:, 3], 0, None))


def widerface_gt_from_dicts(
    dataset_dicts: Iterable[Mapping], difficulty_by_size: Tuple[float, float] = (50, 20)
) -> WiderFaceGroundTruth:
    """Ground truth of WIDER-format dataset dicts, settings by face size (module docstring)."""
    from detectron2.structures import BoxMode

    easy_min, medium_min = difficulty_by_size
    image_ids, boxes = [], []
    listed: Dict[str, List[np.ndarray]] = {setting: [] for setting in SETTINGS}
    for record in dataset_dicts:
        annotations = record.get("annotations", [])
        image_boxes = np.array(
            [
                BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYWH_ABS)
                for a in annotations
            ],
            dtype=np.float64,
        ).reshape(-1, 4)
        invalid = np.array(
            [bool(a.get("invalid", a.get("iscrowd", 0))) for a in annotations], dtype=bool
        )
        size = face_sizes(image_boxes)
        image_ids.append(str(record["image_id"]))
        boxes.append(image_boxes)
        listed["easy"].append(~invalid & (size >= easy_min))
        listed["medium"].append(~invalid & (size >= medium_min))
        listed["hard"].append(~invalid)
    return _from_per_image(image_ids, boxes, listed)


def size_bin_names(edges: Sequence[float]) -> List[str]:
    """Setting names of the bins that ``edges`` cut: ``"<e1px"``, ``"e1-e2px"``, ..., ``">=ekpx"``."""
    inner = [f"{low:g}-{high:g}px" for low, high in zip(edges[:-1], edges[1:])]
    return [f"<{edges[0]:g}px", *inner, f">={edges[-1]:g}px"]


def with_size_bins(
    gt: WiderFaceGroundTruth, edges: Sequence[float], key: str = "size bins"
) -> WiderFaceGroundTruth:
    """``gt`` with one more setting per face-size bin (:func:`size_bin_names`).

    A bin lists the hard set's faces whose size ``sqrt(w * h)`` lies in
    ``[edges[i - 1], edges[i])``, the first bin from 0 and the last to infinity.
    The faces of the other bins stay in the face list unlisted, so a detection of
    one of them is discarded rather than counted as a false positive: a bin's AP
    asks how well faces of that size are found, whatever the detector does with
    the rest. Easy and medium nest inside hard; the bins split it into
    disjoint sizes, which shows where a difference in hard AP comes from.

    Raises ConfigValueError naming ``key`` unless ``edges`` are finite, positive and increasing.
    """
    values = np.asarray(list(edges), dtype=np.float64)
    require(
        values.ndim == 1
        and len(values) > 0
        and bool(np.all(np.isfinite(values)))
        and bool(np.all(values > 0))
        and bool(np.all(np.diff(values) > 0)),
        key,
        list(edges),
        "needs one or more finite face sizes in pixels, positive and increasing",
    )
    size = face_sizes(gt.boxes)
    bounds = np.concatenate([[0.0], values, [np.inf]])
    listed = dict(gt.listed)
    for name, low, high in zip(size_bin_names(values), bounds[:-1], bounds[1:]):
        listed[name] = gt.listed["hard"] & (size >= low) & (size < high)
    return WiderFaceGroundTruth(gt.image_ids, gt.boxes, gt.offsets, listed)
