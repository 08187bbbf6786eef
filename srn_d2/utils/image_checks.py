"""The checks of an image handed to a detector (PyTorch or ONNX): numpy only."""

from typing import Tuple

import numpy as np

from ..errors import ImageTooLargeError, InputError

__all__ = [
    "MAX_COORDINATE",
    "MAX_TEST_PIXELS",
    "check_bgr_image",
    "check_test_size",
    "network_input_size",
]

# No photo is a million pixels wide: an annotated coordinate beyond it is a damaged file, and one
# beyond float32's range (1e39) would become infinite only once training reads it, or overflow the
# overlap arithmetic of an evaluation.
MAX_COORDINATE = float(1 << 20)

# The most pixels srn_d2's detectors run a network on (4096 x 4096). SRN R-50 needs about 0.3 GB
# of activations a megapixel at inference: a 12000 x 12000 photo at full size would ask for
# tens of GB and fail after minutes; a bound checked first fails at once and says what to do.
MAX_TEST_PIXELS = 4096 * 4096


def check_bgr_image(image) -> np.ndarray:
    """``image`` if it is a non-empty (H, W, 3) uint8 array; else ValueError saying what it is.

    A YUV frame (H * 3 / 2, W), a gray or a BGRA image would otherwise be read
    as if it were BGR, and give detections of a picture nobody took.
    """
    if (
        not isinstance(image, np.ndarray)
        or image.ndim != 3
        or image.shape[2] != 3
        or image.dtype != np.uint8
    ):
        shape, dtype = getattr(image, "shape", None), getattr(image, "dtype", type(image).__name__)
        raise InputError(
            f"expected an H x W x 3 uint8 BGR image, got {shape} {dtype}; "
            "convert YUV, gray or BGRA images with cv2.cvtColor first"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"the image is empty ({image.shape[0]} x {image.shape[1]} px)")
    return image


def network_input_size(height: int, width: int, min_size: int, max_size: int) -> Tuple[int, int]:
    """(h, w) the network sees: Detectron2's ResizeShortestEdge at test time (INPUT.MIN_SIZE_TEST,
    0 = the image as it is, and INPUT.MAX_SIZE_TEST)."""
    if min_size == 0:
        return height, width
    scale = min_size / min(height, width)
    new_h, new_w = (min_size, scale * width) if height < width else (scale * height, min_size)
    if max(new_h, new_w) > max_size:
        shrink = max_size / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return int(new_h + 0.5), int(new_w + 0.5)


def check_test_size(height: int, width: int, min_size: int, max_size: int) -> Tuple[int, int]:
    """:func:`network_input_size`, or an ImageTooLargeError if it holds more than :data:`MAX_TEST_PIXELS`."""
    new_h, new_w = network_input_size(height, width, min_size, max_size)
    if new_h * new_w > MAX_TEST_PIXELS:
        resized = "" if (new_h, new_w) == (height, width) else f" (resized from {height} x {width})"
        raise ImageTooLargeError(
            f"the network would run on {new_h} x {new_w} px{resized}, more than srn_d2's detectors take "
            f"({MAX_TEST_PIXELS:,} px, 4096 x 4096): resize the image, or have the config resize it at test "
            "time (INPUT.MIN_SIZE_TEST / INPUT.MAX_SIZE_TEST)"
        )
    return new_h, new_w
