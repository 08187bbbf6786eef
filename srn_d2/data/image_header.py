"""Image sizes read from file headers, without decoding pixels."""

from typing import Optional, Tuple

from PIL import Image

# EXIF orientations that rotate by 90 degrees: detectron2's read_image applies
# them, so the decoded array has width and height swapped.
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
_EXIF_ORIENTATION_TAG = 0x0112


def read_image_size(file_name: str) -> Optional[Tuple[int, int]]:
    """(height, width) of the image as detectron2 will decode it, or None if unreadable.

    PIL's ``Image.open`` only parses the header; pixels are never decoded. A
    missing or corrupt file gives None rather than an error so that a dataset
    still loads; the mapper reports the file when it fails to decode it.
    """
    try:
        with Image.open(file_name) as image:
            width, height = image.size
            if image.getexif().get(_EXIF_ORIENTATION_TAG) in _TRANSPOSING_ORIENTATIONS:
                width, height = height, width
    except OSError:
        return None
    return height, width
