"""Dataset mapper for face detection with the SRN augmentation."""

import logging
from typing import Dict, List, Tuple

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Boxes, BoxMode, Instances, Keypoints
from detectron2.utils.logger import log_every_n_seconds

from ..errors import InputError, require
from .augmentation import build_srn_test_augmentation, build_srn_train_augmentation
from .image_io import image_to_tensor, read_image

logger = logging.getLogger(__name__)

# Faces narrower or shorter than this after augmentation carry no signal at the final scale.
MIN_BOX_SIDE = 1.0
_LOG_PERIOD_S = 60


class SRNDatasetMapper(DatasetMapper):
    """Reads an image, augments it and turns its faces into ``Instances``.

    Training uses :func:`build_srn_train_augmentation` when INPUT.SRN_AUGMENTATION
    is on, otherwise Detectron2's default augmentation. Crowd (WIDER "invalid")
    faces are ignored. A face whose center leaves the crop is dropped, as is one
    left with a side under ``MIN_BOX_SIDE`` px; both are counted in
    ``num_dropped_boxes`` and ``num_degenerate_boxes`` (per data-loader worker).

    With ``use_keypoint`` (``MODEL.SRN.LANDMARKS.ENABLED``, or Detectron2's
    ``MODEL.KEYPOINT_ON``) each
    face's five landmarks follow it as ``gt_keypoints``: moved by every
    geometric step, left and right swapped by a flip, and dropped with their
    face. A kept face's points that leave the crop keep their coordinates and
    visibility, unlike Detectron2's keypoints: the face's box decides, and the
    landmark loss of a face partly outside the image still has its points.
    """

    @configurable
    def __init__(self, is_train: bool, **kwargs):
        super().__init__(is_train, **kwargs)
        self.num_dropped_boxes = 0
        self.num_degenerate_boxes = 0

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        if is_train and cfg.MODEL.SRN.LANDMARKS.ENABLED and not cfg.MODEL.KEYPOINT_ON:
            missing = [
                name
                for name in cfg.DATASETS.TRAIN
                if not MetadataCatalog.get(name).get("keypoint_names")
            ]
            require(
                not missing,
                "DATASETS.TRAIN",
                list(cfg.DATASETS.TRAIN),
                f"has no landmarks in {missing}, which MODEL.SRN.LANDMARKS.ENABLED trains "
                "(widerface_train_landmarks and mini_faces_* have them)",
            )
            ret["use_keypoint"] = True
            ret["keypoint_hflip_indices"] = utils.create_keypoint_hflip_indices(cfg.DATASETS.TRAIN)
        if not is_train:
            ret["augmentations"] = build_srn_test_augmentation(cfg)
        elif cfg.INPUT.SRN_AUGMENTATION:
            ret["augmentations"] = build_srn_train_augmentation(cfg)
            ret["recompute_boxes"] = False
        return ret

    def __call__(self, dataset_dict: Dict) -> Dict:
        # A shallow copy suffices: annotations are read, never modified.
        dataset_dict = dict(dataset_dict)
        annotations = dataset_dict.pop("annotations", None)
        image = read_image(dataset_dict["file_name"], self.image_format)
        utils.check_image_size(dataset_dict, image)

        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        dataset_dict["image"] = image_to_tensor(image)

        if self.is_train and annotations is not None:
            dataset_dict["instances"] = self._faces_to_instances(
                annotations, transforms, image.shape[:2], dataset_dict["file_name"]
            )
        return dataset_dict

    def _faces_to_instances(
        self, annotations: List[Dict], transforms, image_shape: Tuple[int, int], file_name: str
    ) -> Instances:
        faces = [a for a in annotations if not a.get("iscrowd", 0)]
        boxes = annotation_boxes_xyxy(faces)
        classes = np.array([a["category_id"] for a in faces], dtype=np.int64)

        height, width = image_shape
        # Centers are mapped as points, before any transform clips the boxes.
        centers = transforms.apply_coords((boxes[:, :2] + boxes[:, 2:]) / 2)
        center_inside = (
            (centers[:, 0] >= 0)
            & (centers[:, 0] <= width)
            & (centers[:, 1] >= 0)
            & (centers[:, 1] <= height)
        )
        boxes = np.clip(
            transforms.apply_box(boxes).reshape(-1, 4), 0, [width, height, width, height]
        )
        large_enough = ((boxes[:, 2:] - boxes[:, :2]) >= MIN_BOX_SIDE).all(axis=1)
        keep = center_inside & large_enough
        self._count_drops(
            file_name, int((~center_inside).sum()), int((center_inside & ~large_enough).sum())
        )

        instances = Instances(image_shape)
        instances.gt_boxes = Boxes(torch.as_tensor(boxes[keep], dtype=torch.float32))
        instances.gt_classes = torch.as_tensor(classes[keep], dtype=torch.int64)
        if self.use_keypoint:
            keypoints = self._transform_keypoints(faces, transforms, file_name)
            instances.gt_keypoints = Keypoints(
                torch.as_tensor(keypoints[keep], dtype=torch.float32)
            )
        return instances

    def _transform_keypoints(self, faces: List[Dict], transforms, file_name: str) -> np.ndarray:
        """(N, K, 3) keypoints of ``faces`` after ``transforms``; unannotated points stay (0, 0, 0)."""
        if any("keypoints" not in face for face in faces):
            raise InputError(
                f"{file_name}: a face has no 'keypoints' while MODEL.SRN.LANDMARKS.ENABLED (or MODEL.KEYPOINT_ON) "
                "is set; train on a dataset with landmarks (datasets/README.md) or turn it off"
            )
        num_keypoints = len(self.keypoint_hflip_indices)
        keypoints = np.array([face["keypoints"] for face in faces], dtype=np.float64).reshape(
            -1, num_keypoints, 3
        )
        keypoints[..., :2] = transforms.apply_coords(keypoints[..., :2].reshape(-1, 2)).reshape(
            -1, num_keypoints, 2
        )
        if sum(isinstance(t, T.HFlipTransform) for t in transforms.transforms) % 2:
            keypoints = keypoints[:, self.keypoint_hflip_indices]
        keypoints[keypoints[..., 2] == 0] = 0
        return keypoints

    def _count_drops(self, file_name: str, num_outside: int, num_degenerate: int) -> None:
        if num_outside or num_degenerate:
            logger.debug(
                f"{file_name}: dropped {num_outside} faces whose center left the crop "
                f"and {num_degenerate} smaller than {MIN_BOX_SIDE} px"
            )
        self.num_dropped_boxes += num_outside
        self.num_degenerate_boxes += num_degenerate
        log_every_n_seconds(
            logging.INFO,
            f"SRNDatasetMapper: {self.num_dropped_boxes} faces dropped so far with their center "
            f"outside the crop, {self.num_degenerate_boxes} smaller than {MIN_BOX_SIDE} px",
            n=_LOG_PERIOD_S,
            name=__name__,
        )


def annotation_boxes_xyxy(annotations: List[Dict]) -> np.ndarray:
    """(N, 4) float64 XYXY_ABS boxes of ``annotations``, converted one box mode at a time."""
    if not annotations:
        return np.zeros((0, 4), dtype=np.float64)
    boxes = np.array([a["bbox"] for a in annotations], dtype=np.float64).reshape(-1, 4)
    modes = np.array([int(a["bbox_mode"]) for a in annotations])
    for mode in np.unique(modes):
        selected = modes == mode
        boxes[selected] = BoxMode.convert(boxes[selected], BoxMode(int(mode)), BoxMode.XYXY_ABS)
    return boxes
