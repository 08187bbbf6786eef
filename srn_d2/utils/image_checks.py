"""The one check of an image handed to a detector (PyTorch or ONNX): numpy only."""
import numpy as np

__all__ = ["check_bgr_image"]


def check_bgr_image(image) -> np.ndarray:
    """``image`` if it is a non-empty (H, W, 3) uint8 array; else ValueError saying what it is.

    A YUV frame (H * 3 / 2, W), a gray or a BGRA image would otherwise be read
    as if it were BGR, and give detections of a picture nobody took.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape, dtype = getattr(image, "shape", None), getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"expected an H x W x 3 uint8 BGR image, got {shape} {dtype}; "
                         "convert YUV, gray or BGRA images with cv2.cvtColor first")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"the image is empty ({image.shape[0]} x {image.shape[1]} px)")
    return image
