"""Reading images: their size from the header alone, and their pixels as the models take them."""

from typing import Optional, Tuple

import numpy as np
import torch
from detectron2.data import detection_utils
from detectron2.utils.file_io import PathManager
from PIL import Image, ImageOps

# EXIF orientations that rotate by 90 degrees: detectron2's read_image applies
# them, so the decoded array has width and height swapped.
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
_EXIF_ORIENTATION_TAG = 0x0112
# PIL modes of single-channel images with more than 8 bits per pixel (16-bit PNG / TIFF).
_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def read_image_size(file_name: str) -> Optional[Tuple[int, int]]:
    """(height, width) of the image as it will be decoded, or None if unreadable.

    PIL's ``Image.open`` only parses the header; pixels are never decoded. A
    missing or corrupt file gives None rather than an error so that a dataset
    still loads; the mapper reports the file when it fails to decode it.
    """
    try:
        with Image.open(file_name) as image:
            width, height = image.size
            if image.getexif().get(_EXIF_ORIENTATION_TAG) in _TRANSPOSING_ORIENTATIONS:
                width, height = height, width
    except (OSError, Image.DecompressionBombError):
        return None
    return height, width


def read_image(file_name: str, image_format: str) -> np.ndarray:
    """An (H, W, C) uint8 image in ``image_format``, as detectron2's ``read_image`` decodes it,
    with two differences: errors are OSError naming the file, and 16-bit single-channel
    images are scaled to 8 bits (detectron2 would clip every value above 255 to white).
    """
    try:
        with PathManager.open(file_name, "rb") as f, Image.open(f) as probe:
            mode = probe.mode
            if mode in _HIGH_BIT_DEPTH_MODES:
                return detection_utils.convert_PIL_to_numpy(_to_8_bits(probe), image_format)
        if mode == "F":
            raise OSError(
                "32-bit floating-point pixels are not supported; save the image with 8 or 16 bits"
            )
        return detection_utils.read_image(file_name, format=image_format)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        # PIL reports truncated or unknown files as OSError/SyntaxError, and images of more
        # pixels than Image.MAX_IMAGE_PIXELS (decompression bombs) as its own error, all without the path.
        raise OSError(f"cannot read image {file_name}: {error}") from error


def _to_8_bits(image: Image.Image) -> Image.Image:
    """A 16-bit grayscale image as 8-bit grayscale (0..65535 -> 0..255, rounded), EXIF orientation applied."""
    image = ImageOps.exif_transpose(image)
    values = np.asarray(image, dtype=np.float64).clip(0, 65535)
    return Image.fromarray(np.rint(values / 257.0).astype(np.uint8), mode="L")


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """An (H, W, C) array as the (C, H, W) tensor Detectron2's models take (dtype kept)."""
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


def bgr_to_model_input(bgr: np.ndarray, input_format: str) -> torch.Tensor:
    """An OpenCV (H, W, 3) BGR image as DefaultPredictor hands it to the model:
    (3, H, W) float32 in ``input_format`` ("BGR" or "RGB")."""
    image = bgr[:, :, ::-1] if input_format == "RGB" else bgr
    return image_to_tensor(image.astype("float32"))
