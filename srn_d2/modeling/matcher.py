"""Anchor matching without the dense faces x anchors IoU matrix.

WIDER FACE images hold up to ~1,000 faces, and a 1024x1024 image tiles
174,720 SRN anchors: Detectron2's :class:`Matcher` on the dense IoU matrix
takes gigabytes and seconds. SRN's anchors (before STR refines them) lie on a
regular grid per level, so the only anchors that can reach a face's IoU
thresholds, or be its best anchor, are the few near it at compatible sizes.
:class:`SparseGridMatcher` enumerates only those (face, anchor) pairs and
gives Detectron2's answer; refined anchors (a few thousand) are matched densely.
"""

import bisect
import functools
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, pairwise_iou

from ..errors import require, require_iou_thresholds
from ..utils.box_iou import aligned_iou, box_areas

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
        boxes: (R, 4) anchors shared by every image, or (N, R, 4) anchors of each
            image of a batch (anchors refined by STR). On a grid, ``H * W * A`` shared
            anchors, position-major (row by row), ``A`` per position, position
            (iy, ix) being the first position's anchors shifted by
            ``(ix * stride, iy * stride)``.
        grid: (H, W, A) for anchors on a grid; None for any other anchors, which
            are matched densely.
        stride: the grid's step in pixels.
    """

    boxes: torch.Tensor
    grid: Optional[Tuple[int, int, int]] = None
    stride: float = 0.0

    @property
    def num_anchors(self) -> int:
        return self.boxes.shape[-2]


@functools.lru_cache(maxsize=64)
def _grid_columns(
    layout: Tuple[Tuple[Tuple[int, int, int], float, int], ...], device: torch.device
) -> torch.Tensor:
    """(6, T) float64 on ``device``: offset, anchor index in its cell, height, width, anchors per
    cell and stride of each anchor shape of the grid levels ``layout`` lists as ((H, W, A),
    stride, offset). Built from Python numbers, it is copied to the device once per layout."""
    rows = [
        (offset, a, height, width, num_cell, stride)
        for (height, width, num_cell), stride, offset in layout
        for a in range(num_cell)
    ]
    return torch.tensor(rows, dtype=torch.float64).T.contiguous().to(device)


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

    :meth:`match_batch` labels every image of a batch in one set of operations
    (faces padded per image); the host reads the device once a call, for the
    number of candidate pairs. Calling the matcher labels one image.
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
        require_iou_thresholds(thresholds, "MODEL.SRN.STEP1_IOU_THRESHOLDS / STEP2_IOU_THRESHOLDS")
        require(
            len(labels) == 3 and set(labels) <= {-1, 0, 1},
            "MODEL.SRN.IOU_LABELS",
            list(labels),
            "(argument labels) needs three labels from -1 (ignore), 0 (background), 1 (face)",
        )
        require(
            int(max_pairs) > 0,
            "MODEL.SRN.MATCHER_MAX_PAIRS",
            max_pairs,
            "(argument max_pairs) must be positive",
        )
        self.matcher = Matcher(
            thresholds, labels, allow_low_quality_matches=allow_low_quality_matches
        )
        # The thresholds alone: the dense path adds the low-quality rule itself, chunk by chunk.
        self._threshold_matcher = Matcher(thresholds, labels, allow_low_quality_matches=False)
        self.max_pairs = int(max_pairs)

    @property
    def allow_low_quality_matches(self) -> bool:
        return self.matcher.allow_low_quality_matches

    @torch.no_grad()
    def __call__(
        self, gt_boxes: Boxes, levels: Sequence[AnchorLevel]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            gt_boxes: M faces.
            levels: the anchors, level after level (R in all), (R_l, 4) each.

        Returns:
            matches (R,) int64 and match_labels (R,) int8, as :class:`Matcher` returns them
            for the anchors of all levels concatenated.
        """
        faces = gt_boxes.tensor[None]
        valid = torch.ones(faces.shape[:2], dtype=torch.bool, device=faces.device)
        matches, labels = self.match_batch(faces, valid, levels)
        return matches[0], labels[0]

    @torch.no_grad()
    def match_batch(
        self, faces: torch.Tensor, valid: torch.Tensor, levels: Sequence[AnchorLevel]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Every image of a batch at once; each image as :meth:`__call__` would label it.

        Args:
            faces: (N, M, 4) each image's faces, padded to M.
            valid: (N, M) bool, the real faces; padding is never matched.
            levels: the anchors, level after level (R in all): (R_l, 4) shared or (N, R_l, 4).

        Returns:
            matches (N, R) int64, indices into M, and match_labels (N, R) int8.
        """
        num_images, num_faces = faces.shape[:2]
        anchors = torch.cat([level.boxes.expand(num_images, -1, -1) for level in levels], dim=1)
        num_anchors = anchors.shape[1]
        if num_faces == 0:
            return (
                anchors.new_zeros((num_images, num_anchors), dtype=torch.int64),
                anchors.new_full(
                    (num_images, num_anchors), self.matcher.labels[0], dtype=torch.int8
                ),
            )
        faces = faces.float()
        placed = list(zip(levels, self._offsets(levels)))
        grid = [(level, offset) for level, offset in placed if level.grid is not None]
        free = [(level, offset) for level, offset in placed if level.grid is None]
        shapes = self._shapes(grid) if grid else None
        best_possible = self._best_grid_iou(faces.flatten(0, 1), shapes).view(num_images, num_faces)
        free_best = self._free_best_per_face(faces, valid, free)
        if free_best is not None:
            best_possible = torch.maximum(best_possible, free_best.double())
        # An image with a face that overlaps almost nothing is matched densely (see _dense).
        tiny = ((best_possible < _TINY_BEST_IOU) & valid).any(dim=1)
        matches, labels, tiny = self._sparse(
            faces, valid & ~tiny[:, None], tiny, anchors, shapes, free, best_possible, free_best
        )
        for image in [i for i, is_tiny in enumerate(tiny) if is_tiny]:
            matches[image], labels[image] = self._dense(faces[image][valid[image]], anchors[image])
        return matches, labels

    @staticmethod
    def _offsets(levels: Sequence[AnchorLevel]) -> List[int]:
        offsets, total = [], 0
        for level in levels:
            offsets.append(total)
            total += level.num_anchors
        return offsets

    # ----------------------------------------------------------------- grid levels, analytically

    @staticmethod
    def _shapes(grid) -> dict:
        """Per anchor shape of every grid level (T shapes in all), float64 unless said: the first
        cell's center "c0" and half sides "half" as (T, 2) x, y pairs, the grid's "size" (T, 2)
        width, height (int64), "stride" (T, 1), "area" (T,), and "offset", "a", "num_cell" (T,)
        int64: where the level's anchors start, the shape's index in its cell, anchors per cell."""
        device = grid[0][0].boxes.device
        layout = tuple((tuple(level.grid), float(level.stride), offset) for level, offset in grid)
        offset, a, height, width, num_cell, stride = _grid_columns(layout, device)
        cell = torch.cat([level.boxes[: level.grid[2]] for level, _ in grid]).double()
        half = (cell[:, 2:] - cell[:, :2]) / 2
        return {
            "c0": (cell[:, :2] + cell[:, 2:]) / 2,
            "half": half,
            "area": 4 * half[:, 0] * half[:, 1],
            "size": torch.stack([width, height], dim=1).long(),
            "stride": stride[:, None],
            "offset": offset.long(),
            "a": a.long(),
            "num_cell": num_cell.long(),
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
        f = faces.double()[:, None, :]  # (M, 1, 4) against (T,) shapes; x and y side by side below
        center = (
            s["c0"]
            + self._nearest((f[..., :2] + f[..., 2:]) / 2, s["c0"], s["stride"], s["size"])
            * s["stride"]
        )
        overlap = torch.minimum(center + s["half"], f[..., 2:]) - torch.maximum(
            center - s["half"], f[..., :2]
        )
        overlap = overlap.clamp(min=0)
        inter = overlap[..., 0] * overlap[..., 1]
        sides = f[..., 2:] - f[..., :2]
        union = s["area"] + sides[..., 0] * sides[..., 1] - inter
        iou = torch.where(inter > 0, inter / union, torch.zeros_like(inter))
        return iou.max(dim=1).values

    @staticmethod
    def _candidate_rectangles(
        faces: torch.Tensor, s: dict, min_iou: torch.Tensor, active: torch.Tensor
    ):
        """Per face and anchor shape, the rectangle of grid positions that may reach IoU
        ``min_iou``: (x_lo, y_lo, nx, ny), each (F, T); empty for faces not ``active``.

        For an anchor of width w_a and a face of width w_f, IoU >= t needs an
        intersection of at least t (A_a + A_f) / (1 + t), hence an x-overlap of at
        least that over min(h_a, h_f), hence a center distance of at most
        (w_a + w_f) / 2 minus that overlap; likewise along y.

        Args:
            faces: (F, 4); min_iou: (F,) float64; active: (F,) bool.
        """
        f = faces.double()[:, None, :]
        min_iou = min_iou[:, None]
        face_sides = f[..., 2:] - f[..., :2]  # (F, 1, 2): w_f, h_f
        anchor_sides = 2 * s["half"]  # (T, 2): w_a, h_a
        min_inter = (
            min_iou
            * (anchor_sides[:, 0] * anchor_sides[:, 1] + face_sides[..., 0] * face_sides[..., 1])
            / (1 + min_iou)
        )
        # Along x the overlap needs min_inter over the lower of the heights; along y, of the widths.
        min_overlap = min_inter[..., None] / torch.minimum(
            anchor_sides.flip(-1), face_sides.flip(-1)
        ).clamp(min=1e-12)
        reach = (anchor_sides + face_sides) / 2 - min_overlap + _CENTER_SLACK
        center = (f[..., :2] + f[..., 2:]) / 2
        lo = torch.ceil((center - reach - s["c0"]) / s["stride"]).clamp(min=0)
        hi = torch.minimum(
            torch.floor((center + reach - s["c0"]) / s["stride"]), (s["size"] - 1).double()
        )
        count = (hi - lo + 1).clamp(min=0).long()
        lo = lo.long()
        return lo[..., 0], lo[..., 1], count[..., 0] * active[:, None], count[..., 1]

    def _candidate_chunks(self, rectangles, s: dict, pairs_so_far: List[int]):
        """(face, anchor) int64 pairs of the grid levels inside ``rectangles``, in chunks of at most
        ``max_pairs`` (whole faces; at least one face a chunk).

        Args:
            rectangles: as :meth:`_candidate_rectangles` returns them.
            pairs_so_far: (F,) on the host, the pairs of faces 0..f together (cumulative).
        """
        x_lo, y_lo, nx, ny = (r.flatten() for r in rectangles)
        num_shapes = rectangles[0].shape[1]
        counts = nx * ny  # (F * T,), face-major
        device = counts.device
        start, done = 0, 0
        while start < len(pairs_so_far):
            stop = max(
                start + 1, bisect.bisect_right(pairs_so_far, done + self.max_pairs, lo=start)
            )
            total = pairs_so_far[stop - 1] - done
            if total:
                row_counts = counts[start * num_shapes : stop * num_shapes]
                rows = torch.arange(start * num_shapes, stop * num_shapes, device=device)
                row = torch.repeat_interleave(rows, row_counts, output_size=total)
                first = torch.repeat_interleave(
                    row_counts.cumsum(0) - row_counts, row_counts, output_size=total
                )
                local = torch.arange(total, device=device) - first
                face, shape = row // num_shapes, row % num_shapes
                iy = y_lo[row] + local // nx[row]
                ix = x_lo[row] + local % nx[row]
                yield (
                    face,
                    s["offset"][shape]
                    + (iy * s["size"][shape, 0] + ix) * s["num_cell"][shape]
                    + s["a"][shape],
                )
            start, done = stop, pairs_so_far[stop - 1]

    # ----------------------------------------------------------------- non-grid levels, densely

    def _free_blocks(self, faces: torch.Tensor, valid: torch.Tensor, free):
        """(face slice, anchor index offset, (N, m, R_l) IoU block) over the non-grid levels, at most
        ``max_pairs`` IoUs a block; -1 for padding faces."""
        num_images, num_faces = faces.shape[:2]
        face_areas = box_areas(faces)[..., None]
        for level, offset in free:
            anchors = level.boxes.expand(num_images, -1, -1)[:, None]
            anchor_areas = box_areas(anchors)
            step = max(1, self.max_pairs // max(num_images * level.num_anchors, 1))
            for start in range(0, num_faces, step):
                rows = slice(start, start + step)
                iou = aligned_iou(
                    faces[:, rows, None], anchors, area_a=face_areas[:, rows], area_b=anchor_areas
                )
                yield rows, offset, iou.masked_fill(~valid[:, rows, None], -1.0)

    def _free_best_per_face(
        self, faces: torch.Tensor, valid: torch.Tensor, free
    ) -> Optional[torch.Tensor]:
        """(N, M) each face's best IoU with the non-grid anchors (float32, as the dense matrix's)."""
        if not free:
            return None
        best = faces.new_zeros(faces.shape[:2])
        for rows, _, iou in self._free_blocks(faces, valid, free):
            if iou.shape[2]:
                best[:, rows] = torch.maximum(best[:, rows], iou.max(dim=2).values)
        return best

    # ----------------------------------------------------------------- the matching

    def _sparse(self, faces, valid, tiny, anchors, shapes, free, best_possible, free_best):
        """The sparse matching of the ``valid`` faces; returns (matches, labels, tiny as a host list)."""
        num_images, num_faces = faces.shape[:2]
        num_anchors = anchors.shape[1]
        trash = num_images * num_anchors  # the slot that takes what a scatter must leave out
        first_threshold = self.matcher.thresholds[1]

        def lowest_per_image(values):
            return values.masked_fill(~valid, float("inf")).amin(dim=1)

        # Every pair that matters has an IoU of at least this (see the class docstring).
        min_iou = lowest_per_image(best_possible).clamp(max=first_threshold) * (1 - _SLACK)
        flat_faces = faces.flatten(0, 1)
        flat_anchors = anchors.flatten(0, 1)
        image_of_face = torch.arange(num_images * num_faces, device=faces.device) // num_faces
        pair_face, pair_anchor, pair_iou = [], [], []
        if shapes is None:
            tiny = tiny.tolist()
        else:
            rectangles = self._candidate_rectangles(
                flat_faces, shapes, min_iou[image_of_face], valid.flatten()
            )
            per_face = (rectangles[2] * rectangles[3]).sum(dim=1)
            # The one read of the device: the images to match densely, and how many pairs each face
            # has, which sizes the chunks.
            read = torch.cat([tiny.long(), per_face.cumsum(0)]).tolist()
            tiny, pairs_so_far = read[:num_images], read[num_images:]
            face_areas, anchor_areas = box_areas(flat_faces), box_areas(flat_anchors)
            min_iou32 = min_iou.float()
            for face, anchor in self._candidate_chunks(rectangles, shapes, pairs_so_far):
                anchor = image_of_face[face] * num_anchors + anchor
                iou = aligned_iou(
                    flat_faces[face],
                    flat_anchors[anchor],
                    area_a=face_areas[face],
                    area_b=anchor_areas[anchor],
                )
                pair_face.append(face)
                pair_anchor.append(
                    torch.where(iou >= min_iou32[image_of_face[face]], anchor, trash)
                )
                pair_iou.append(iou)
        face = torch.cat(pair_face) if pair_face else faces.new_zeros(0, dtype=torch.int64)
        anchor = torch.cat(pair_anchor) if pair_anchor else face
        iou = torch.cat(pair_iou) if pair_iou else faces.new_zeros(0)

        # Each face's best IoU, exactly: from its candidates and the non-grid anchors.
        face_slot = torch.where(anchor < trash, face, len(flat_faces))
        best_per_face = faces.new_zeros(len(flat_faces) + 1).scatter_reduce(
            0, face_slot, iou, "amax"
        )[:-1]
        if free_best is not None:
            best_per_face = torch.maximum(best_per_face, free_best.flatten())
        keep_from = lowest_per_image(best_per_face.view(num_images, num_faces)).clamp(
            max=first_threshold
        )
        anchor = torch.where(iou >= keep_from[image_of_face[face]], anchor, trash)

        # Each anchor's best IoU and, on ties, the first face that has it (Detectron2's argmax).
        best = faces.new_zeros(trash + 1).scatter_reduce(0, anchor, iou, "amax")
        is_best = torch.where(iou == best[anchor], anchor, trash)
        matches = torch.full((trash + 1,), num_faces, dtype=torch.int64, device=faces.device)
        matches.scatter_reduce_(0, is_best, face % num_faces, "amin")
        promoted = torch.zeros(trash + 1, dtype=torch.bool, device=faces.device)
        promoted.index_fill_(0, torch.where(iou == best_per_face[face], anchor, trash), True)
        best, matches, promoted = (
            x[:trash].view(num_images, num_anchors) for x in (best, matches, promoted)
        )
        best_per_face = best_per_face.view(num_images, num_faces)
        for rows, offset, block in self._free_blocks(faces, valid, free):
            if block.shape[2] == 0:
                continue
            columns = slice(offset, offset + block.shape[2])
            value, index = block.max(dim=1)
            # Blocks come in face order: a later one wins only with a strictly higher IoU.
            better = value > best[:, columns]
            best[:, columns] = torch.where(better, value, best[:, columns])
            matches[:, columns] = torch.where(better, index + rows.start, matches[:, columns])
            promoted[:, columns] |= (block == best_per_face[:, rows, None]).any(dim=1)
        matches = matches.masked_fill(matches == num_faces, 0)

        labels = self._labels_by_threshold(best)
        if self.allow_low_quality_matches:
            labels = labels.masked_fill(promoted, 1)
        return matches, labels, tiny

    def _labels_by_threshold(self, best: torch.Tensor) -> torch.Tensor:
        labels = best.new_full(best.shape, 1, dtype=torch.int8)
        thresholds = self.matcher.thresholds
        for label, low, high in zip(self.matcher.labels, thresholds[:-1], thresholds[1:]):
            labels = labels.masked_fill((best >= low) & (best < high), label)
        return labels

    def _dense(self, faces, anchors):
        """Detectron2's Matcher, computed over anchor chunks (used when a face overlaps
        almost nothing, where every anchor's match can matter)."""
        step = max(1, self.max_pairs // len(faces))
        chunks = [
            (start, min(start + step, len(anchors))) for start in range(0, len(anchors), step)
        ]
        gt = Boxes(faces)
        best_per_face = torch.stack(
            [pairwise_iou(gt, Boxes(anchors[s:e])).max(dim=1).values for s, e in chunks]
        )
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
