"""The AFW / PASCAL faces toolbox restated literally, one detection and one face at a time,
in its own conventions (boxes as ``y1 x1 y2 x2``, ground truth rows ``[y1, x1, y2, x2, 0, ignore]``):
the independent reference that ``srn_d2.evaluation.face_benchmarks`` is tested and
benchmarked against. Slow on purpose; nothing here is shared with the package."""

import math


def overlap(a, b):
    """Overlap of two ``y1 x1 y2 x2`` boxes: inclusive pixel areas, touching boxes do not intersect."""
    area_a = (abs(a[0] - a[2]) + 1) * (abs(a[1] - a[3]) + 1)
    area_b = (abs(b[0] - b[2]) + 1) * (abs(b[1] - b[3]) + 1)
    intersection = 0
    if a[2] > b[0] and b[2] > a[0] and a[3] > b[1] and b[3] > a[1]:
        intersection = (min(a[3], b[3]) - max(a[1], b[1]) + 1) * (
            min(a[2], b[2]) - max(a[0], b[0]) + 1
        )
    return intersection / float(area_a + area_b - intersection)


def ground_truth(images, min_side=30):
    """{key: [[y1, x1, y2, x2, 0, ignore], ...]} from {key: [(x1, y1, x2, y2, flag), ...]}."""
    table = {}
    for key, faces in images.items():
        rows = []
        for x1, y1, x2, y2, flag in faces:
            small = abs(x2 - x1) < min_side or abs(y2 - y1) < min_side
            rows.append([y1, x1, y2, x2, 0, 1 if (flag or small) else 0])
        table[key] = rows
    return table


def drop_small(detections, min_pix=21):
    return [d for d in detections if (d[4] - d[2]) > min_pix or (d[5] - d[3]) > min_pix]


def record(table, detections, threshold=0.5):
    """tp, fp per detection (descending score, stable) and the matched face of each true positive."""
    found = {key: [False] * len(rows) for key, rows in table.items() if rows}
    total = sum(1 for rows in table.values() for row in rows if row[5] == 0)
    ordered = sorted(detections, key=lambda d: -d[1])
    tp, fp, pairs = [], [], []
    for name, score, x1, y1, x2, y2 in ordered:
        best, face = 0, 0
        if name in found:
            for index, row in enumerate(table[name]):
                value = overlap((y1, x1, y2, x2), row)
                if value >= best:
                    best, face = value, index
        is_tp = is_fp = 0
        if best > threshold:
            row = table[name][face]
            if row[5] == 0:
                if not found[name][face]:
                    is_tp = 1
                    found[name][face] = True
                    pairs.append(((x1, y1, x2, y2), (row[1], row[0], row[3], row[2])))
                else:
                    is_fp = 1
        else:
            is_fp = 1
        tp.append(is_tp)
        fp.append(is_fp)
    return ordered, tp, fp, total, pairs


def voc_ap(tp, fp, total):
    """VOC all-point AP of the curve, rows that count neither way left out (their precision is 0 / 0)."""
    recall, precision, hits, misses = [], [], 0, 0
    for t, f in zip(tp, fp):
        hits, misses = hits + t, misses + f
        if t or f:
            recall.append(hits / total)
            precision.append(hits / (hits + misses))
    mrec = [0.0] + recall + [1.0]
    mpre = [0.0] + precision + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum(
        (mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1]
    )


def calibrated(table, detections, iterations=5):
    """The last record of the toolbox's calibration loop, and the total correction of the
    detections that record was made on (the toolbox applies one more after it)."""
    total_shift, total_scale = [0.0, 0.0], [1.0, 1.0]
    for _ in range(iterations):
        ordered, tp, fp, total, pairs = record(table, detections)
        applied = total_shift + total_scale
        if not pairs:
            break
        tx = sum(((g[0] + g[2]) / 2 - (d[0] + d[2]) / 2) / (d[2] - d[0]) for d, g in pairs) / len(
            pairs
        )
        ty = sum(((g[1] + g[3]) / 2 - (d[1] + d[3]) / 2) / (d[3] - d[1]) for d, g in pairs) / len(
            pairs
        )
        sx = sum((g[2] - g[0]) / (d[2] - d[0]) for d, g in pairs) / len(pairs)
        sy = sum((g[3] - g[1]) / (d[3] - d[1]) for d, g in pairs) / len(pairs)
        moved = []
        for name, score, x1, y1, x2, y2 in detections:
            w, h = (x2 - x1) / 2.0, (y2 - y1) / 2.0
            cx, cy = (x1 + x2) / 2.0 + tx * w * 2, (y1 + y2) / 2.0 + ty * h * 2
            moved.append([name, score, cx - w * sx, cy - h * sy, cx + w * sx, cy + h * sy])
        detections = moved
        total_shift = [total_shift[0] + tx, total_shift[1] + ty]
        total_scale = [total_scale[0] * sx, total_scale[1] * sy]
    assert all(math.isfinite(v) for v in applied)
    return tp, fp, total, applied
