"""Geometry and colour of every SRN training augmentation, alone and composed."""

import cv2
import numpy as np
import pytest
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from fvcore.transforms.transform import HFlipTransform, NoOpTransform

from srn_d2 import add_srn_config
from srn_d2.data import (
    ExpandTransform,
    PhotometricDistortionTransform,
    RandomExpand,
    RandomPhotometricDistortion,
    RandomSquareCrop,
    SquareCropTransform,
    build_srn_test_augmentation,
    build_srn_train_augmentation,
)

BOXES = np.array([[10.0, 5.0, 30.0, 25.0], [0.0, 0.0, 4.0, 6.0]])


def make_cfg(**input_overrides):
    cfg = get_cfg()
    add_srn_config(cfg)
    for key, value in input_overrides.items():
        setattr(cfg.INPUT, key, value)
    return cfg


def random_image(height=60, width=80, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_photometric_distortion_moves_no_box():
    transform = PhotometricDistortionTransform(20, 1.3, 0.7, 10, contrast_first=False)
    np.testing.assert_array_equal(transform.apply_box(BOXES.copy()), BOXES)
    out = transform.apply_image(random_image())
    assert out.dtype == np.uint8 and out.shape == (60, 80, 3)


def test_brightness_and_contrast_values():
    image = np.full((2, 3, 3), 100, np.uint8)
    brighter = PhotometricDistortionTransform(brightness_delta=20).apply_image(image)
    assert (brighter == 120).all()
    contrast_first = PhotometricDistortionTransform(
        brightness_delta=20, contrast_factor=1.5
    ).apply_image(image)
    assert (contrast_first == 180).all()
    saturated = PhotometricDistortionTransform(brightness_delta=200).apply_image(image)
    assert (saturated == 255).all()


def test_neutral_parameters_keep_the_image():
    image = random_image()
    np.testing.assert_array_equal(PhotometricDistortionTransform().apply_image(image), image)


def test_hue_and_saturation_follow_the_channel_order():
    rgb = random_image()
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    params = dict(saturation_factor=1.4, hue_delta=15)
    out_rgb = PhotometricDistortionTransform(image_format="RGB", **params).apply_image(rgb)
    out_bgr = PhotometricDistortionTransform(image_format="BGR", **params).apply_image(bgr)
    np.testing.assert_array_equal(out_rgb, out_bgr[..., ::-1])
    assert not np.array_equal(out_rgb, rgb)


def test_hue_shift_matches_opencv_hsv():
    bgr = random_image()
    out = PhotometricDistortionTransform(hue_delta=30, image_format="BGR").apply_image(bgr)
    hsv_in = cv2.cvtColor(bgr.astype(np.float32), cv2.COLOR_BGR2HSV)
    hsv_out = cv2.cvtColor(out.astype(np.float32), cv2.COLOR_BGR2HSV)
    colourful = (hsv_in[..., 1] > 0.5) & (hsv_in[..., 2] > 100)
    shift = np.mod(hsv_out[..., 0] - hsv_in[..., 0], 360)[colourful]
    assert np.median(np.abs(shift - 30)) < 2


def test_grey_images_skip_hue_and_saturation():
    grey = random_image()[..., :1]
    transform = PhotometricDistortionTransform(
        saturation_factor=0.5, hue_delta=18, image_format="L"
    )
    np.testing.assert_array_equal(transform.apply_image(grey), grey)


def test_random_photometric_parameters_stay_in_range():
    np.random.seed(0)
    augmentation = RandomPhotometricDistortion(32, (0.5, 1.5), (0.5, 1.5), 18, prob=1.0)
    orders = set()
    for _ in range(20):
        transform = augmentation.get_transform(random_image())
        assert -32 <= transform.brightness_delta <= 32
        assert 0.5 <= transform.contrast_factor <= 1.5
        assert 0.5 <= transform.saturation_factor <= 1.5
        assert -18 <= transform.hue_delta <= 18
        orders.add(transform.contrast_first)
    assert orders == {True, False}
    assert isinstance(
        RandomPhotometricDistortion(prob=0.0).get_transform(random_image()), NoOpTransform
    )


def test_expand_shifts_boxes_by_the_offset_and_fills_the_canvas():
    image = random_image(4, 6)
    transform = ExpandTransform(4, 6, left=3, top=2, canvas_h=10, canvas_w=12, fill=(1, 2, 3))
    out = transform.apply_image(image)
    assert out.shape == (10, 12, 3)
    np.testing.assert_array_equal(out[2:6, 3:9], image)
    outside = np.ones((10, 12), bool)
    outside[2:6, 3:9] = False
    assert (out[outside] == [1, 2, 3]).all()
    np.testing.assert_array_equal(transform.apply_box(BOXES.copy()), BOXES + [3, 2, 3, 2])
    np.testing.assert_array_equal(transform.inverse().apply_image(out), image)


def test_random_expand_ratio_offsets_and_mean_fill():
    np.random.seed(1)
    image = random_image(50, 40)
    for _ in range(10):
        transform = RandomExpand(max_ratio=2.0).get_transform(image)
        if isinstance(transform, NoOpTransform):
            continue
        assert 50 <= transform.canvas_h <= 100 and 40 <= transform.canvas_w <= 80
        assert 0 <= transform.top <= transform.canvas_h - 50
        assert 0 <= transform.left <= transform.canvas_w - 40
        np.testing.assert_allclose(transform.fill, image.reshape(-1, 3).mean(0))
        shifted = transform.apply_box(BOXES.copy())
        np.testing.assert_array_equal(shifted, BOXES + [transform.left, transform.top] * 2)


def test_square_crop_maps_boxes_by_minus_offset_and_clips():
    transform = SquareCropTransform(10, 5, 20, 20, 80, 60)
    box = np.array([[12.0, 8.0, 40.0, 30.0]])
    np.testing.assert_array_equal(transform.apply_box(box.copy()), [[2, 3, 20, 20]])
    np.testing.assert_array_equal(
        transform.apply_coords(np.array([[12.0, 8.0], [40.0, 30.0]])), [[2, 3], [30, 25]]
    )
    assert transform.apply_image(random_image()).shape == (20, 20, 3)


def test_random_square_crop_picks_either_square():
    np.random.seed(2)
    image = random_image(60, 100)
    sides = set()
    for _ in range(40):
        transform = RandomSquareCrop(0.5, 1.0).get_transform(image)
        assert transform.w == transform.h and 30 <= transform.w <= 60
        assert 0 <= transform.x0 <= 100 - transform.w and 0 <= transform.y0 <= 60 - transform.h
        sides.add(transform.w)
    assert 60 in sides and len(sides) > 5


def test_flip_and_resize_box_geometry():
    flip = T.RandomFlip(prob=1.0).get_transform(random_image(60, 100))
    np.testing.assert_array_equal(flip.apply_box(BOXES[:1].copy()), [[70, 5, 90, 25]])
    resize = T.Resize((50, 50)).get_transform(random_image(200, 100))
    np.testing.assert_allclose(resize.apply_box(BOXES[:1].copy()), [[5, 1.25, 15, 6.25]])


def test_composed_transforms_on_a_hand_made_box():
    image = random_image(60, 80)
    transforms = T.TransformList(
        [
            ExpandTransform(60, 80, left=7, top=3, canvas_h=90, canvas_w=100, fill=(0, 0, 0)),
            SquareCropTransform(5, 1, 50, 50, 100, 90),
            HFlipTransform(50),
            T.Resize((100, 100)).get_transform(np.zeros((50, 50, 3), np.uint8)),
        ]
    )
    assert transforms.apply_image(image).shape == (100, 100, 3)
    # expand: +(7, 3) -> (17, 8, 37, 28); crop: -(5, 1) -> (12, 7, 32, 27);
    # flip in 50: (18, 7, 38, 27); resize x2: (36, 14, 76, 54).
    np.testing.assert_allclose(transforms.apply_box(BOXES[:1].copy()), [[36, 14, 76, 54]])
    # A box reaching past the crop is clipped at the crop edge (x = 55 in the canvas).
    np.testing.assert_allclose(
        transforms.apply_box(np.array([[40.0, 10.0, 60.0, 20.0]])), [[0, 24, 16, 44]]
    )


def test_train_augmentation_order_and_output():
    cfg = make_cfg(SQUARE_SIZE_TRAIN=64, FORMAT="BGR")
    augmentations = build_srn_train_augmentation(cfg)
    assert [type(a) for a in augmentations] == [
        RandomPhotometricDistortion,
        RandomExpand,
        RandomSquareCrop,
        T.RandomFlip,
        T.Resize,
    ]
    np.testing.assert_allclose(augmentations[1].fill, cfg.MODEL.PIXEL_MEAN)
    np.random.seed(3)
    for _ in range(5):
        aug_input = T.AugInput(random_image(), boxes=BOXES.copy())
        T.AugmentationList(augmentations)(aug_input)
        assert aug_input.image.shape == (64, 64, 3)


def test_train_augmentation_switches():
    cfg = make_cfg(SQUARE_SIZE_TRAIN=32, RANDOM_FLIP="none")
    cfg.INPUT.PHOTOMETRIC.ENABLED = False
    cfg.INPUT.EXPAND.ENABLED = False
    cfg.INPUT.SQUARE_CROP.ENABLED = False
    (resize,) = build_srn_train_augmentation(cfg)
    assert isinstance(resize, T.Resize) and resize.shape == (32, 32)


@pytest.mark.parametrize("min_size, expected_shape", [(0, (60, 80, 3)), (30, (30, 40, 3))])
def test_test_augmentation(min_size, expected_shape):
    cfg = make_cfg(MIN_SIZE_TEST=min_size, MAX_SIZE_TEST=1000)
    (resize,) = build_srn_test_augmentation(cfg)
    assert isinstance(resize, T.ResizeShortestEdge)
    assert resize.get_transform(random_image()).apply_image(random_image()).shape == expected_shape
