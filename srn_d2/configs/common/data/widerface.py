"""WIDER FACE with SRN's training augmentation (photometric distortion, expansion, square
crop, flip, resize to 1024 x 1024) and the test at the original size, as the YAML configs'
INPUT keys say; the evaluator is the official WIDER FACE protocol.

For another dataset registered in the WIDER format, set ``dataloader.train.dataset.names``,
``dataloader.test.dataset.names`` and ``dataloader.evaluator.dataset_name``.
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import (
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from omegaconf import OmegaConf

from srn_d2.data.augmentation import RandomExpand, RandomPhotometricDistortion, RandomSquareCrop
from srn_d2.data.dataset_mapper import SRNDatasetMapper
from srn_d2.evaluation import WiderFaceEvaluator

dataloader = OmegaConf.create()
dataloader.image_format = "BGR"
dataloader.pixel_mean = [103.53, 116.28, 123.675]  # the expansion's canvas: the model's pixel mean

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="widerface_train", filter_empty=False),
    mapper=L(SRNDatasetMapper)(
        is_train=True,
        augmentations=[
            L(RandomPhotometricDistortion)(
                brightness_delta=32,
                contrast_range=(0.5, 1.5),
                saturation_range=(0.5, 1.5),
                hue_delta=18,
                image_format="${dataloader.image_format}",
            ),
            L(RandomExpand)(max_ratio=2.0, fill="${dataloader.pixel_mean}"),
            L(RandomSquareCrop)(min_scale=0.5, max_scale=1.0),
            L(T.RandomFlip)(horizontal=True, vertical=False),
            L(T.Resize)(shape=(1024, 1024)),
        ],
        image_format="${dataloader.image_format}",
        recompute_boxes=False,
    ),
    total_batch_size=32,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="widerface_val", filter_empty=False),
    mapper=L(SRNDatasetMapper)(
        is_train=False,
        # The YAML path's INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST: a short edge of 0 keeps the original
        # size; set augmentations.0.short_edge_length and .max_size to test smaller.
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=0, max_size=100000)],
        image_format="${dataloader.image_format}",
    ),
    num_workers=4,
)

dataloader.evaluator = L(WiderFaceEvaluator)(
    dataset_name="${..test.dataset.names}", submission_format="precise"
)
