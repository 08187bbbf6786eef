"""The one aligned-pair IoU: equal to Detectron2's pairwise_iou bit for bit, and the released "+1" areas."""

import torch
from detectron2.structures import Boxes, pairwise_iou

from srn_d2.utils.box_iou import aligned_iou, box_areas


def _awkward_boxes(n, seed):
    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand(n, 2, generator=generator) * 1000 - 100
    size = torch.rand(n, 2, generator=generator) ** 4 * 300
    boxes = torch.cat([corner, corner + size], dim=1)
    boxes[::7, 2] = boxes[::7, 0]  # zero width
    boxes[::11] = boxes[::11].round()  # integer corners: ties and touching edges
    return boxes


def test_pairs_equal_the_dense_matrix_bit_for_bit():
    a, b = _awkward_boxes(3000, 0), _awkward_boxes(3000, 1)
    b[::5] = a[::5] + 0.5  # many overlapping pairs
    dense = pairwise_iou(Boxes(a), Boxes(b))
    assert torch.equal(aligned_iou(a, b), dense.diagonal())
    # One box against many, as the vote uses it.
    assert torch.equal(aligned_iou(a[:1], b), dense[0])


def test_plus_one_areas_on_a_case_worked_by_hand():
    # Inclusive pixel boxes 0..9 and 5..14: 10 x 10 each, overlap 5 x 10 = 50, union 150.
    a, b = torch.tensor([[0.0, 0.0, 9.0, 9.0]]), torch.tensor([[5.0, 0.0, 14.0, 9.0]])
    assert (
        aligned_iou(a, b, plus_one=True).item()
        == torch.tensor(50 / 150, dtype=torch.float32).item()
    )
    # Continuous boxes: 9 x 9 each, overlap 4 x 9 = 36, union 126.
    assert aligned_iou(a, b).item() == torch.tensor(36 / 126, dtype=torch.float32).item()
    # Touching inclusive boxes share a column of pixels; continuous ones share none.
    c = torch.tensor([[9.0, 0.0, 18.0, 9.0]])
    assert (
        aligned_iou(a, c, plus_one=True).item()
        == torch.tensor(10 / 190, dtype=torch.float32).item()
    )
    assert aligned_iou(a, c).item() == 0.0
    assert box_areas(a, plus_one=True).item() == 100 and box_areas(a).item() == 81
