"""Face crops aligned for recognition: the five landmarks warped onto ArcFace's 112 x 112 template.

Recognizers of the ArcFace family are trained on faces cropped by the
similarity transform (rotation, uniform scale, translation) that carries the
face's five landmarks closest, in least squares, to five fixed positions in a
112 x 112 image. This module estimates that transform for every face of an
image at once (Umeyama's closed form, batched) and warps the crops with OpenCV.
"""

from typing import Optional

import cv2
import numpy as np
from ..errors import InputError

__all__ = ["ARCFACE_TEMPLATE", "similarity_transforms", "align_faces"]

# Left eye, right eye, nose, left and right mouth corner (the image's left and right) in
# a 112 x 112 crop: the template of insightface's ArcFace models.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)
ARCFACE_SIZE = 112


def similarity_transforms(
    landmarks: np.ndarray, template: np.ndarray = ARCFACE_TEMPLATE
) -> np.ndarray:
    """The least-squares similarity transform of each face's points onto ``template``.

    Args:
        landmarks: (N, K, 2) points of N faces.
        template: (K, 2) target points.
    Returns:
        (N, 2, 3) float64 matrices M with ``template ~ M[:, :2] @ p + M[:, 2]``, as
        ``cv2.warpAffine`` takes them.
    """
    src = np.asarray(landmarks, dtype=np.float64)
    if src.ndim != 3 or src.shape[1:] != template.shape:
        raise InputError(f"landmarks must be (N, {template.shape[0]}, 2), got {src.shape}")
    src_mean = src.mean(axis=1, keepdims=True)
    dst_mean = template.mean(axis=0)
    src_centred, dst_centred = src - src_mean, template - dst_mean
    # Umeyama: the rotation from the SVD of the cross-covariance, a reflection turned into a rotation.
    covariance = np.einsum("kd,nke->nde", dst_centred, src_centred) / len(template)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.sign(np.linalg.det(u @ vt))
    correction = np.stack([np.ones_like(sign), sign], axis=-1)
    rotation = (u * correction[:, None, :]) @ vt
    variance = (src_centred**2).sum(axis=(1, 2)) / len(template)
    scale = (singular * correction).sum(axis=1) / np.maximum(variance, 1e-12)
    linear = scale[:, None, None] * rotation
    translation = dst_mean - np.einsum("nij,nj->ni", linear, src_mean[:, 0])
    return np.concatenate([linear, translation[:, :, None]], axis=2)


def align_faces(
    image: np.ndarray,
    landmarks: np.ndarray,
    size: int = ARCFACE_SIZE,
    template: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Every face of ``image`` cropped and warped upright onto the template.

    Args:
        image: (H, W, C) image, e.g. BGR uint8.
        landmarks: (N, 5, 2) or (N, 5, 3) points in the image's pixels (a third
            column, as in ``pred_keypoints``, is ignored).
        size: side of the square crops; the template scales with it from 112.
        template: (5, 2) target points in a ``size`` crop; default: ArcFace's, scaled.
    Returns:
        (N, size, size, C) crops of ``image``'s dtype; borders outside the image are black.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    if points.ndim != 3 or points.shape[1] != 5 or points.shape[2] not in (2, 3):
        raise InputError(f"landmarks must be (N, 5, 2) or (N, 5, 3), got {points.shape}")
    if template is None:
        template = ARCFACE_TEMPLATE * (size / ARCFACE_SIZE)
    transforms = similarity_transforms(points[..., :2], np.asarray(template, dtype=np.float64))
    crops = np.zeros((len(points), size, size, *image.shape[2:]), dtype=image.dtype)
    for crop, matrix in zip(crops, transforms):
        crop[...] = cv2.warpAffine(
            image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        ).reshape(crop.shape)
    return crops
