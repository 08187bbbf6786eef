"""The SRN paper's training augmentation as Detectron2 augmentations.

In order: SSD-style photometric distortion, expansion onto a mean-colour
canvas, a random square patch, horizontal flip, resize to a fixed square.
Each ``Augmentation`` draws its random parameters and returns a deterministic
``Transform``; boxes follow every geometric step through ``apply_box`` /
``apply_coords``. Dropping boxes whose center leaves the patch is the mapper's job.
"""

from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
from detectron2.data import transforms as T
from detectron2.data.detection_utils import build_augmentation
from fvcore.transforms.transform import CropTransform, NoOpTransform, Transform

from ..errors import InputError, require

_HSV_CONVERSIONS = {
    "BGR": (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR),
    "RGB": (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB),
}


class PhotometricDistortionTransform(Transform):
    """Brightness, contrast, saturation and hue changes of a uint8 image; geometry is unchanged.

    A parameter at its neutral value (delta 0, factor 1) is not applied.
    Saturation and hue need a 3-channel BGR or RGB image and are skipped otherwise.
    """

    def __init__(
        self,
        brightness_delta: float = 0.0,
        contrast_factor: float = 1.0,
        saturation_factor: float = 1.0,
        hue_delta: float = 0.0,
        contrast_first: bool = True,
        image_format: str = "BGR",
    ):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        if img.dtype != np.uint8:
            raise InputError(
                f"PhotometricDistortionTransform expects uint8 images, got {img.dtype}"
            )
        image = img.astype(np.float32)
        if self.brightness_delta:
            image += self.brightness_delta
        if self.contrast_first and self.contrast_factor != 1:
            image *= self.contrast_factor
        if self._has_color(img) and (self.saturation_factor != 1 or self.hue_delta):
            image = self._distort_hsv(image)
        if not self.contrast_first and self.contrast_factor != 1:
            image *= self.contrast_factor
        return np.clip(np.rint(image), 0, 255).astype(np.uint8)

    def _has_color(self, img: np.ndarray) -> bool:
        return self.image_format in _HSV_CONVERSIONS and img.ndim == 3 and img.shape[2] == 3

    def _distort_hsv(self, image: np.ndarray) -> np.ndarray:
        to_hsv, from_hsv = _HSV_CONVERSIONS[self.image_format]
        # Float HSV keeps hue in degrees [0, 360) and saturation in [0, 1]; values
        # pushed out of [0, 255] by brightness/contrast must be clipped first.
        hsv = cv2.cvtColor(np.clip(image, 0, 255), to_hsv)
        hsv[..., 1] = np.clip(hsv[..., 1] * self.saturation_factor, 0, 1)
        hsv[..., 0] = np.mod(hsv[..., 0] + self.hue_delta, 360)
        return cv2.cvtColor(hsv, from_hsv)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def inverse(self) -> Transform:
        return NoOpTransform()


class RandomPhotometricDistortion(T.Augmentation):
    """SSD's photometric distortion: each of brightness, contrast, saturation and hue
    is applied with probability ``prob``; contrast goes before or after the HSV
    changes at random.
    """

    def __init__(
        self,
        brightness_delta: float = 32,
        contrast_range: Sequence[float] = (0.5, 1.5),
        saturation_range: Sequence[float] = (0.5, 1.5),
        hue_delta: float = 18,
        image_format: str = "BGR",
        prob: float = 0.5,
    ):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        use_brightness, use_contrast, use_saturation, use_hue = np.random.rand(4) < self.prob
        contrast_first = bool(np.random.rand() < 0.5)
        if not (use_brightness or use_contrast or use_saturation or use_hue):
            return NoOpTransform()
        return PhotometricDistortionTransform(
            brightness_delta=(
                float(np.random.uniform(-self.brightness_delta, self.brightness_delta))
                if use_brightness
                else 0.0
            ),
            contrast_factor=float(np.random.uniform(*self.contrast_range)) if use_contrast else 1.0,
            saturation_factor=(
                float(np.random.uniform(*self.saturation_range)) if use_saturation else 1.0
            ),
            hue_delta=float(np.random.uniform(-self.hue_delta, self.hue_delta)) if use_hue else 0.0,
            contrast_first=contrast_first,
            image_format=self.image_format,
        )


class ExpandTransform(Transform):
    """Place an (orig_h, orig_w) image at (left, top) on a (canvas_h, canvas_w) canvas.

    The canvas is ``fill`` (one value per channel, or one for all).
    """

    def __init__(
        self,
        orig_h: int,
        orig_w: int,
        left: int,
        top: int,
        canvas_h: int,
        canvas_w: int,
        fill: Sequence[float] = (0.0,),
        seg_fill: int = 0,
    ):
        super().__init__()
        if left < 0 or top < 0 or left + orig_w > canvas_w or top + orig_h > canvas_h:
            raise InputError(
                f"image {orig_w}x{orig_h} at ({left}, {top}) does not fit "
                f"a {canvas_w}x{canvas_h} canvas"
            )
        self._set_attributes(locals())

    def _paste(self, img: np.ndarray, fill) -> np.ndarray:
        if img.shape[:2] != (self.orig_h, self.orig_w):
            raise InputError(
                f"ExpandTransform made for {self.orig_h}x{self.orig_w} images got {img.shape[:2]}"
            )
        canvas = np.empty((self.canvas_h, self.canvas_w) + img.shape[2:], dtype=img.dtype)
        canvas[...] = fill
        canvas[self.top : self.top + self.orig_h, self.left : self.left + self.orig_w] = img
        return canvas

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        fill = np.asarray(self.fill, dtype=np.float64)
        if np.issubdtype(img.dtype, np.integer):
            fill = np.rint(fill)
        return self._paste(img, fill.astype(img.dtype))

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self._paste(segmentation, self.seg_fill)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords[:, 0] += self.left
        coords[:, 1] += self.top
        return coords

    def inverse(self) -> Transform:
        return CropTransform(
            self.left, self.top, self.orig_w, self.orig_h, self.canvas_w, self.canvas_h
        )


class RandomExpand(T.Augmentation):
    """Expand the image by a factor drawn from U(1, max_ratio) at a random offset.

    ``fill`` is the canvas colour in the image's channel order; None uses the
    image's own mean colour.
    """

    def __init__(self, max_ratio: float = 2.0, fill: Optional[Sequence[float]] = None):
        super().__init__()
        require(max_ratio >= 1, "INPUT.EXPAND.MAX_RATIO", max_ratio, "must be >= 1")
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        height, width = image.shape[:2]
        ratio = np.random.uniform(1.0, self.max_ratio)
        canvas_h, canvas_w = int(round(height * ratio)), int(round(width * ratio))
        if (canvas_h, canvas_w) == (height, width):
            return NoOpTransform()
        top = int(np.random.randint(0, canvas_h - height + 1))
        left = int(np.random.randint(0, canvas_w - width + 1))
        fill = self.fill
        if fill is None:
            fill = image.reshape(height * width, -1).mean(axis=0)
        return ExpandTransform(height, width, left, top, canvas_h, canvas_w, tuple(np.ravel(fill)))


class SquareCropTransform(CropTransform):
    """A crop whose ``apply_box`` also clips boxes to the patch.

    ``apply_coords`` does not clip, so box centers mapped with it still tell
    whether a box's center left the patch.
    """

    def apply_box(self, box: np.ndarray) -> np.ndarray:
        boxes = super().apply_box(box)
        return np.clip(boxes, 0, [self.w, self.h, self.w, self.h])


class RandomSquareCrop(T.Augmentation):
    """Crop one of two square patches at a random position: side = the shorter
    image side, or side = U(min_scale, max_scale) x the shorter side; each with probability 1/2.
    """

    def __init__(self, min_scale: float = 0.5, max_scale: float = 1.0):
        super().__init__()
        require(
            0 < min_scale <= max_scale <= 1,
            "INPUT.SQUARE_CROP.MIN_SCALE, MAX_SCALE",
            (min_scale, max_scale),
            "need 0 < MIN_SCALE <= MAX_SCALE <= 1",
        )
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        height, width = image.shape[:2]
        short_side = min(height, width)
        scaled_side = max(
            1, int(round(np.random.uniform(self.min_scale, self.max_scale) * short_side))
        )
        side = short_side if np.random.rand() < 0.5 else scaled_side
        x0 = int(np.random.randint(0, width - side + 1))
        y0 = int(np.random.randint(0, height - side + 1))
        return SquareCropTransform(x0, y0, side, side, width, height)


def build_srn_train_augmentation(cfg) -> List[T.Augmentation]:
    """The paper's training augmentation, each step switched by its INPUT.* config key.

    The expansion canvas is MODEL.PIXEL_MEAN, which the model's normalization maps to zero.
    """
    augmentations: List[T.Augmentation] = []
    if cfg.INPUT.PHOTOMETRIC.ENABLED:
        photometric = cfg.INPUT.PHOTOMETRIC
        augmentations.append(
            RandomPhotometricDistortion(
                brightness_delta=photometric.BRIGHTNESS_DELTA,
                contrast_range=tuple(photometric.CONTRAST_RANGE),
                saturation_range=tuple(photometric.SATURATION_RANGE),
                hue_delta=photometric.HUE_DELTA,
                image_format=cfg.INPUT.FORMAT,
            )
        )
    if cfg.INPUT.EXPAND.ENABLED:
        augmentations.append(RandomExpand(cfg.INPUT.EXPAND.MAX_RATIO, fill=_expand_fill(cfg)))
    if cfg.INPUT.SQUARE_CROP.ENABLED:
        augmentations.append(
            RandomSquareCrop(cfg.INPUT.SQUARE_CROP.MIN_SCALE, cfg.INPUT.SQUARE_CROP.MAX_SCALE)
        )
    if cfg.INPUT.RANDOM_FLIP != "none":
        augmentations.append(
            T.RandomFlip(
                horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                vertical=cfg.INPUT.RANDOM_FLIP == "vertical",
            )
        )
    side = cfg.INPUT.SQUARE_SIZE_TRAIN
    augmentations.append(T.Resize((side, side)))
    return augmentations


def build_srn_test_augmentation(cfg) -> List[T.Augmentation]:
    """Detectron2's test resize: ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST).

    MIN_SIZE_TEST 0 keeps the original size.
    """
    return build_augmentation(cfg, is_train=False)


def _expand_fill(cfg) -> Tuple[float, ...]:
    pixel_mean = tuple(float(v) for v in cfg.MODEL.PIXEL_MEAN)
    # A single-channel input gets the mean's grey level.
    if cfg.INPUT.FORMAT == "L":
        return (sum(pixel_mean) / len(pixel_mean),)
    return pixel_mean
