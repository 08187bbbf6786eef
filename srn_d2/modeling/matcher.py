"""Anchor matching without the dense faces x anchors IoU matrix.

WIDER FACE images hold up to ~1,000 faces, and a 1024x1024 image tiles
174,720 SRN anchors: Detectron2's :class:`Matcher` on the dense IoU matrix
takes gigabytes and seconds. SRN's anchors (before STR refines them) lie on a
regular grid per level, so the only anchors that can reach a face's IoU
thresholds, or be its best anchor, are the few near it at compatible sizes.
:class:`SparseGridMatcher` enumerates only those (face, anchor) pairs and
gives Detectron2's answer; refined anchors (a few thousand) are matched densely.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, pairwise_iou

from ..utils.box_iou import aligned_iou

__all__ = ["AnchorLevel", "SparseGridMatcher"]

# Relative slack of the enumeration bounds: float32 IoUs differ from the exact
# ones by a few ulps (~1e-6 relative); candidates are a superset within this.
_SLACK = 1e-4
# Absolute slack (pixels) on anchor-center distances, for the same reason.
_CENTER_SLACK = 0.01
# Faces whose best IoU is below this are matched densely: with them, the pairs
# to enumerate approach every overlapping pair, and the dense path is as fast.
_TINY_BEST_IOU = 1e-6


@dataclass(frozen=True)
class AnchorLevel:
    """One level's anchors, as its anchor generator lays them out.

    Attributes:
        boxes: (R, 4) anchors. On a grid, ``H * W * A`` of them, position-major
            (row by row), ``A`` per position, position (iy, ix) being the first
            position's anchors shifted by ``(ix * stride, iy * stride)``.
        grid: (H, W, A) for anchors on a grid; None for any other anchors
            (e.g. anchors refined by STR), which are matched densely.
        stride: the grid's step in pixels.
    """

    boxes: torch.Tensor
    grid: Optional[Tuple[int, int, int]] = None
    stride: float = 0.0


class SparseGridMatcher:
    """Detectron2's :class:`Matcher` on the IoU of faces and anchors, in memory and time
    that grow with the faces, not with faces x anchors.

    Equal to ``Matcher(thresholds, labels, allow_low_quality_matches)(pairwise_iou(gt, anchors))``
    (the ties of the low-quality rule included) in:

    * every label;
    * every match index of an anchor whose best IoU reaches
      ``min(thresholds[0], the lowest best IoU of any face)``: every anchor not
      labelled ``labels[0]``, and the anchors of non-grid levels. The other
      anchors' best IoUs are all small; Detectron2 matches them to the face of
      that small IoU, which no loss reads, and this matcher to face 0.

    A grid level's candidate positions for each face and anchor shape form a
    rectangle, from the overlap IoU needs: ``O(faces)`` pairs in all. IoUs of
    candidates use pairwise_iou's float32 arithmetic, so ties come out as in
    the dense matrix.
    """

    def __init__(
        self,
        thresholds: List[float],
        labels: List[int],
        allow_low_quality_matches: bool = False,
        max_pairs: int = 1 << 18,
    ):
        """
        Args:
            thresholds, labels, allow_low_quality_matches: as :class:`Matcher`'s.
            max_pairs: at most this many (face, anchor) pairs or IoUs are held at once.
        """
        self.matcher = Matcher(thresholds, labels, allow_low_quality_matches=allow_low_quality_matches)
        # The thresholds alone: the dense path adds the low-quality rule itself, chunk by chunk.
        self._threshold_matcher = Matcher(thresholds, labels, allow_low_quality_matches=False)
        self.max_pairs = int(max_pairs)

    @property
    def allow_low_quality_matches(self) -> bool:
        return self.matcher.allow_low_quality_matches

    @torch.no_grad()
    def __call__(self, gt_boxes: Boxes, levels: Sequence[AnchorLevel]) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            gt_boxes: M faces.
            levels: the anchors, level after level (R in all).

        Returns:
            matches (R,) int64 and match_labels (R,) int8, as :class:`Matcher` returns them
            for the anchors of all levels concatenated.
        """
        anchors = torch.cat([level.boxes for level in levels])
        faces = gt_boxes.tensor
        if len(faces) == 0:
            return self.matcher(anchors.new_zeros((0, len(anchors))))
        placed = list(zip(levels, self._offsets(levels)))
        grid = [(level, offset) for level, offset in placed if level.grid is not None]
        free = [(level, offset) for level, offset in placed if level.grid is None]
        shapes = self._shapes(grid) if grid else None
        best_possible = self._best_grid_iou(faces, shapes)
        free_best = self._free_best_per_face(faces, free)
        if free_best is not None:
            best_possible = torch.maximum(best_possible, free_best.double())
        if bool((best_possible < _TINY_BEST_IOU).any()):
            return self._dense(faces, anchors)
        return self._sparse(faces, anchors, shapes, free, best_possible, free_best)

    @staticmethod
    def _offsets(levels: Sequence[AnchorLevel]) -> List[int]:
        offsets, total = [], 0
        for level in levels:
            offsets.append(total)
            total += len(level.boxes)
        return offsets

    # ----------------------------------------------------------------- grid levels, analytically

    @staticmethod
    def _shapes(grid) -> dict:
        """Per anchor shape of every grid level (T shapes in all), float64: (T,) tensors."""
        rows = []
        for level, offset in grid:
            height, width, num_cell = level.grid
            cells = level.boxes[:num_cell].double()
            for a in range(num_cell):
                rows.append((cells[a], offset, a, height, width, num_cell, float(level.stride)))
        device = grid[0][0].boxes.device
        cell = torch.stack([r[0] for r in rows])
        column = lambda i, dtype: torch.tensor([r[i] for r in rows], dtype=dtype, device=device)  # noqa: E731
        return {
            "cx0": (cell[:, 0] + cell[:, 2]) / 2,
            "cy0": (cell[:, 1] + cell[:, 3]) / 2,
            "half_w": (cell[:, 2] - cell[:, 0]) / 2,
            "half_h": (cell[:, 3] - cell[:, 1]) / 2,
            "offset": column(1, torch.int64),
            "a": column(2, torch.int64),
            "height": column(3, torch.int64),
            "width": column(4, torch.int64),
            "num_cell": column(5, torch.int64),
            "stride": column(6, torch.float64),
        }

    @staticmethod
    def _nearest(center, start, stride, size):
        """Grid index (clamped to the grid) whose center is nearest ``center``."""
        index = torch.round((center - start) / stride)
        return torch.minimum(torch.clamp(index, min=0), (size - 1).double())

    def _best_grid_iou(self, faces: torch.Tensor, s: Optional[dict]) -> torch.Tensor:
        """(M,) each face's highest IoU with any grid anchor, in float64.

        Along each axis a face's overlap with an anchor of fixed size only falls
        as the anchor's center moves away from the face's: the best anchor of
        each shape sits at the grid position nearest the face's center.
        """
        if s is None:
            return faces.new_zeros(len(faces), dtype=torch.float64)
        f = faces.double()[:, None, :]  # (M, 1, 4) against (T,) shapes
        fcx, fcy = (f[..., 0] + f[..., 2]) / 2, (f[..., 1] + f[..., 3]) / 2
        cx = s["cx0"] + self._nearest(fcx, s["cx0"], s["stride"], s["width"]) * s["stride"]
        cy = s["cy0"] + self._nearest(fcy, s["cy0"], s["stride"], s["height"]) * s["stride"]
        ox = (torch.minimum(cx + s["half_w"], f[..., 2]) - torch.maximum(cx - s["half_w"], f[..., 0])).clamp(min=0)
        oy = (torch.minimum(cy + s["half_h"], f[..., 3]) - torch.maximum(cy - s["half_h"], f[..., 1])).clamp(min=0)
        inter = ox * oy
        union = 4 * s["half_w"] * s["half_h"] + (f[..., 2] - f[..., 0]) * (f[..., 3] - f[..., 1]) - inter
        iou = torch.where(inter > 0, inter / union, torch.zeros_like(inter))
        return iou.max(dim=1).values

    def _candidate_pairs(self, faces: torch.Tensor, s: dict, min_iou: float):
        """(face, anchor) pairs of the grid levels that may reach IoU ``min_iou``, in chunks
        of at most ``max_pairs``: a generator of (face index, anchor index) int64 tensors.

        For an anchor of width w_a and a face of width w_f, IoU >= t needs an
        intersection of at least t (A_a + A_f) / (1 + t), hence an x-overlap of at
        least that over min(h_a, h_f), hence a center distance of at most
        (w_a + w_f) / 2 minus that overlap; likewise along y. The positions within
        both distances form a rectangle per face and shape.
        """
        f = faces.double()[:, None, :]
        fw, fh = f[..., 2] - f[..., 0], f[..., 3] - f[..., 1]
        fcx, fcy = (f[..., 0] + f[..., 2]) / 2, (f[..., 1] + f[..., 3]) / 2
        aw, ah = 2 * s["half_w"], 2 * s["half_h"]
        min_inter = min_iou * (aw * ah + fw * fh) / (1 + min_iou)
        min_ox = min_inter / torch.minimum(ah, fh).clamp(min=1e-12)
        min_oy = min_inter / torch.minimum(aw, fw).clamp(min=1e-12)
        reach_x = (aw + fw) / 2 - min_ox + _CENTER_SLACK
        reach_y = (ah + fh) / 2 - min_oy + _CENTER_SLACK
        x_lo = torch.ceil((fcx - reach_x - s["cx0"]) / s["stride"]).clamp(min=0)
        x_hi = torch.minimum(torch.floor((fcx + reach_x - s["cx0"]) / s["stride"]), (s["width"] - 1).double())
        y_lo = torch.ceil((fcy - reach_y - s["cy0"]) / s["stride"]).clamp(min=0)
        y_hi = torch.minimum(torch.floor((fcy + reach_y - s["cy0"]) / s["stride"]), (s["height"] - 1).double())
        nx = (x_hi - x_lo + 1).clamp(min=0).long()
        ny = (y_hi - y_lo + 1).clamp(min=0).long()
        counts = (nx * ny).flatten()  # (M * T,), face-major
        num_shapes = nx.shape[1]
        per_face = counts.view(len(faces), num_shapes).sum(dim=1)
        start = 0
        while start < len(faces):
            # As many faces as fit in max_pairs (at least one).
            cumulative = per_face[start:].cumsum(0)
            stop = start + max(1, int((cumulative <= self.max_pairs).sum()))
            rows = torch.arange(start * num_shapes, stop * num_shapes, device=faces.device)
            row_counts = counts[rows]
            row = torch.repeat_interleave(rows, row_counts)
            first = torch.repeat_interleave(row_counts.cumsum(0) - row_counts, row_counts)
            local = torch.arange(len(row), device=faces.device) - first
            face, shape = row // num_shapes, row % num_shapes
            width_of_row = nx.flatten()[row]
            iy = y_lo.flatten()[row].long() + local // width_of_row
            ix = x_lo.flatten()[row].long() + local % width_of_row
            anchor = s["offset"][shape] + (iy * s["width"][shape] + ix) * s["num_cell"][shape] + s["a"][shape]
            yield face, anchor
            start = stop

    # ----------------------------------------------------------------- non-grid levels, densely

    def _free_blocks(self, faces: torch.Tensor, free):
        """(face slice, anchor index offset, IoU block) over the non-grid levels, bounded by max_pairs."""
        for level, offset in free:
            anchors = Boxes(level.boxes)
            step = max(1, self.max_pairs // max(len(level.boxes), 1))
            for start in range(0, len(faces), step):
                yield slice(start, start + step), offset, pairwise_iou(Boxes(faces[start : start + step]), anchors)

    def _free_best_per_face(self, faces: torch.Tensor, free) -> Optional[torch.Tensor]:
        """(M,) each face's best IoU with the non-grid anchors (float32, as the dense matrix's)."""
        if not free:
            return None
        best = faces.new_zeros(len(faces))
        for rows, _, iou in self._free_blocks(faces, free):
            if iou.shape[1]:
                best[rows] = torch.maximum(best[rows], iou.max(dim=1).values)
        return best

    # ----------------------------------------------------------------- the matching

    def _sparse(self, faces, anchors, shapes, free, best_possible, free_best):
        num_faces, num_anchors = len(faces), len(anchors)
        face_areas, anchor_areas = Boxes(faces).area(), Boxes(anchors).area()
        first_threshold = self.matcher.thresholds[1]
        # Every pair that matters has an IoU of at least this (see the class docstring).
        min_iou = min(first_threshold, float(best_possible.min())) * (1 - _SLACK)
        pair_faces, pair_anchors, pair_ious = [], [], []
        for face, anchor in (self._candidate_pairs(faces, shapes, min_iou) if shapes is not None else []):
            iou = aligned_iou(faces[face], anchors[anchor], area_a=face_areas[face], area_b=anchor_areas[anchor])
            keep = iou >= min_iou
            pair_faces.append(face[keep])
            pair_anchors.append(anchor[keep])
            pair_ious.append(iou[keep])
        face = torch.cat(pair_faces) if pair_faces else faces.new_zeros(0, dtype=torch.int64)
        anchor = torch.cat(pair_anchors) if pair_anchors else face
        iou = torch.cat(pair_ious) if pair_ious else faces.new_zeros(0)

        # Each face's best IoU, exactly: from its candidates and the non-grid anchors.
        best_per_face = faces.new_zeros(num_faces).scatter_reduce(0, face, iou, "amax")
        if free_best is not None:
            best_per_face = torch.maximum(best_per_face, free_best)
        keep = iou >= min(first_threshold, float(best_per_face.min()))
        face, anchor, iou = face[keep], anchor[keep], iou[keep]

        # Each anchor's best IoU and, on ties, the first face that has it (Detectron2's argmax).
        best = faces.new_zeros(num_anchors).scatter_reduce(0, anchor, iou, "amax")
        is_best = iou == best[anchor]
        matches = torch.full((num_anchors,), num_faces, dtype=torch.int64, device=faces.device)
        matches.scatter_reduce_(0, anchor[is_best], face[is_best], "amin")
        promoted = torch.zeros(num_anchors, dtype=torch.bool, device=faces.device)
        promoted[anchor[iou == best_per_face[face]]] = True
        for rows, offset, block in self._free_blocks(faces, free):
            if block.shape[1] == 0:
                continue
            columns = slice(offset, offset + block.shape[1])
            value, index = block.max(dim=0)
            # Blocks come in face order: a later one wins only with a strictly higher IoU.
            better = value > best[columns]
            best[columns] = torch.where(better, value, best[columns])
            matches[columns] = torch.where(better, index + rows.start, matches[columns])
            promoted[columns] |= (block == best_per_face[rows, None]).any(dim=0)
        matches[matches == num_faces] = 0

        labels = self._labels_by_threshold(best)
        if self.allow_low_quality_matches:
            labels[promoted] = 1
        return matches, labels

    def _labels_by_threshold(self, best: torch.Tensor) -> torch.Tensor:
        labels = best.new_full(best.shape, 1, dtype=torch.int8)
        thresholds = self.matcher.thresholds
        for label, low, high in zip(self.matcher.labels, thresholds[:-1], thresholds[1:]):
            labels[(best >= low) & (best < high)] = label
        return labels

    def _dense(self, faces, anchors):
        """Detectron2's Matcher, computed over anchor chunks (used when a face overlaps
        almost nothing, where every anchor's match can matter)."""
        step = max(1, self.max_pairs // len(faces))
        chunks = [(start, min(start + step, len(anchors))) for start in range(0, len(anchors), step)]
        gt = Boxes(faces)
        best_per_face = torch.stack([pairwise_iou(gt, Boxes(anchors[s:e])).max(dim=1).values for s, e in chunks])
        best_per_face = best_per_face.max(dim=0).values
        matches, labels = [], []
        for start, end in chunks:
            iou = pairwise_iou(gt, Boxes(anchors[start:end]))
            chunk_matches, chunk_labels = self._threshold_matcher(iou)
            if self.allow_low_quality_matches:
                chunk_labels[(iou == best_per_face[:, None]).any(dim=0)] = 1
            matches.append(chunk_matches)
            labels.append(chunk_labels)
        return torch.cat(matches), torch.cat(labels)
