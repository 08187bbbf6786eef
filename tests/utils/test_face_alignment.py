"""Face alignment: the similarity transform onto ArcFace's template, and the warped crops."""

import math

import cv2
import numpy as np
import pytest

from srn_d2.utils.face_alignment import ARCFACE_TEMPLATE, align_faces, similarity_transforms

COLORS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)], np.float64)


def moved(points, angle_deg, scale, shift):
    angle = math.radians(angle_deg)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return points @ rotation.T * scale + np.asarray(shift)


def apply(matrix, points):
    return points @ matrix[:, :2].T + matrix[:, 2]


def test_template_maps_onto_itself():
    (matrix,) = similarity_transforms(ARCFACE_TEMPLATE[None])
    np.testing.assert_allclose(matrix, [[1, 0, 0], [0, 1, 0]], atol=1e-9)
    assert np.abs(apply(matrix, ARCFACE_TEMPLATE) - ARCFACE_TEMPLATE).max() < 0.5


def test_rotated_scaled_shifted_faces_map_back_exactly_in_one_call():
    faces = np.stack(
        [
            moved(ARCFACE_TEMPLATE, 40, 2.5, (200, 150)),
            moved(ARCFACE_TEMPLATE, -75, 0.3, (-3, 9)),
            moved(ARCFACE_TEMPLATE, 180, 1.0, (0, 0)),
        ]
    )
    matrices = similarity_transforms(faces)
    for matrix, face in zip(matrices, faces):
        np.testing.assert_allclose(apply(matrix, face), ARCFACE_TEMPLATE, atol=1e-9)
    # The angle, undone: rotating by 40 degrees and scaling by 2.5 needs -40 degrees and 0.4.
    assert math.degrees(math.atan2(matrices[0, 1, 0], matrices[0, 0, 0])) == pytest.approx(-40)
    assert math.hypot(*matrices[0, :, 0]) == pytest.approx(0.4)


def test_noisy_points_get_the_least_squares_fit_and_never_a_reflection():
    rng = np.random.default_rng(0)
    faces = moved(ARCFACE_TEMPLATE, 10, 1.5, (5, 5))[None] + rng.normal(0, 2, (50, 5, 2))
    mirrored = faces.copy()
    mirrored[..., 0] *= -1
    for matrices in (similarity_transforms(faces), similarity_transforms(mirrored)):
        assert (np.linalg.det(matrices[:, :, :2]) > 0).all()
    # No small change of the fitted transform fits better.
    matrix = similarity_transforms(faces[:1])[0]
    best = ((apply(matrix, faces[0]) - ARCFACE_TEMPLATE) ** 2).sum()
    for delta in np.eye(4) * 1e-4:
        a, b = matrix[0, 0] + delta[0], matrix[1, 0] + delta[1]
        other = np.array([[a, -b, matrix[0, 2] + delta[2]], [b, a, matrix[1, 2] + delta[3]]])
        assert ((apply(other, faces[0]) - ARCFACE_TEMPLATE) ** 2).sum() >= best


def find_dots(image):
    distance = np.linalg.norm(image[None].astype(np.float64) - COLORS[:, None, None], axis=-1)
    return np.array([np.argwhere(near)[:, ::-1].mean(axis=0) for near in distance < 90])


def test_a_rotated_face_comes_out_upright_on_the_template():
    """Dots drawn at a face's landmarks, tilted 35 degrees and twice the template's size, land on the template."""
    image = np.full((400, 500, 3), 80, np.uint8)
    faces = [
        moved(ARCFACE_TEMPLATE - 56, 35, 2.0, (250, 200)),
        moved(ARCFACE_TEMPLATE - 56, -20, 1.2, (90, 90)),
    ]
    for face in faces:
        for point, color in zip(face, COLORS):
            cv2.circle(
                image, tuple(int(round(v)) for v in point), 5, tuple(int(c) for c in color), -1
            )
    crops = align_faces(image, np.stack(faces))
    assert crops.shape == (2, 112, 112, 3) and crops.dtype == np.uint8
    for crop in crops:
        np.testing.assert_allclose(find_dots(crop), ARCFACE_TEMPLATE, atol=1.0)
    # pred_keypoints' third column (the score) is ignored; a larger crop scales the template.
    with_scores = np.concatenate([np.stack(faces), np.ones((2, 5, 1))], axis=2)
    np.testing.assert_array_equal(align_faces(image, with_scores), crops)
    np.testing.assert_allclose(
        find_dots(align_faces(image, with_scores, size=224)[0]), ARCFACE_TEMPLATE * 2, atol=1.5
    )


def test_no_faces_and_bad_shapes():
    image = np.zeros((10, 10, 3), np.uint8)
    assert align_faces(image, np.zeros((0, 5, 2))).shape == (0, 112, 112, 3)
    for bad in (np.zeros((5, 2)), np.zeros((1, 4, 2)), np.zeros((1, 5, 4))):
        with pytest.raises(ValueError, match="landmarks must be"):
            align_faces(image, bad)
