"""AFW / PASCAL faces: the toolbox's protocol on hand-made cases worked out by hand, against a
literal restatement of the toolbox (tests/toolbox_restatement.py), and on the real annotation files."""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.io import loadmat, savemat

import toolbox_restatement as toolbox
from srn_d2.annotations.face_benchmarks import load_benchmark_mat
from srn_d2.evaluation.face_benchmarks import (
    MIN_DETECTION_SIDE,
    BenchmarkDetections,
    calibrated_matches,
    evaluate_benchmark,
    match_detections,
    read_benchmark_detections,
    toolbox_overlaps,
)
from srn_d2.tools.evaluate_face_benchmark import main as benchmark_cli
from srn_testing import REPO_ROOT

BENCHMARK_DIR = os.path.join(REPO_ROOT, "..", "shared", "face_benchmarks")
AFW = os.path.join(BENCHMARK_DIR, "new_annotations_AFW.mat")
PASCAL = os.path.join(BENCHMARK_DIR, "Annotations_Face_PASCALLayout_large_fixed.mat")


def _mat(path, images):
    """A toolbox ground-truth file: {name: [(x1, y1, x2, y2, ignore), ...]}."""
    entries = np.zeros(
        (len(images), 1), dtype=[("imgname", "O"), ("imgsize", "O"), ("objects", "O")]
    )
    for row, (name, faces) in enumerate(images.items()):
        objects = np.array(
            [[x1, y1, x2, y2, 0, flag] for x1, y1, x2, y2, flag in faces], dtype=np.float64
        )
        entries[row, 0] = (np.array([name]), np.array([[640], [480], [3]]), objects.reshape(-1, 6))
    savemat(str(path), {"Annotations": entries})
    return str(path)


def _detections(gt, rows):
    """BenchmarkDetections of (key, score, x1, y1, x2, y2) rows."""
    index = {key: i for i, key in enumerate(gt.keys)}
    values = np.array([row[1:] for row in rows], dtype=np.float64).reshape(-1, 5)
    return BenchmarkDetections.sorted(
        np.array([index[row[0]] for row in rows], dtype=np.int64), values[:, 0], values[:, 1:]
    )


FACE_A, FACE_B = (100, 100, 199, 199, 0), (300, 100, 399, 199, 0)
SMALL = (500, 100, 528, 199, 0)  # 28 px wide: ignored by size
FLAGGED = (600, 100, 699, 199, 1)


@pytest.fixture
def hand_made(tmp_path):
    return load_benchmark_mat(
        _mat(tmp_path / "gt.mat", {"a.jpg": [FACE_A, FACE_B, SMALL, FLAGGED], "b.jpg": []})
    )


def test_ap_worked_out_by_hand(hand_made):
    rows = [
        ("a", 0.9, 0, 300, 50, 350),  # nothing there: false positive
        ("a", 0.8, *FACE_A[:4]),  # finds A
        ("a", 0.7, *SMALL[:4]),  # on an ignored face: counts neither way
        ("a", 0.65, *FLAGGED[:4]),  # on a flagged face: neither
        ("a", 0.6, 102, 100, 201, 199),  # A again: false positive
        ("b", 0.55, 0, 0, 100, 100),  # an image without faces: false positive
        ("a", 0.5, *FACE_B[:4]),  # finds B
    ]
    matches = match_detections(_detections(hand_made, rows), hand_made)
    assert matches.num_faces == 2
    assert matches.true_positive.tolist() == [False, True, False, False, False, False, True]
    assert matches.false_positive.tolist() == [True, False, False, False, True, True, False]
    # Counted rows: FP (R 0, P 0), TP (R .5, P .5), FP (R .5, P 1/3), FP (R .5, P .25), TP (R 1, P .4).
    # Precision envelope: .5 up to recall .5, .4 up to recall 1: AP = .5 * .5 + .5 * .4.
    assert matches.ap == pytest.approx(0.45)


def test_overlap_threshold_is_strict_and_touching_boxes_do_not_intersect():
    face = [[0, 0, 9, 9]]  # 10 x 10 px in the inclusive convention
    assert toolbox_overlaps([[0, 0, 9, 4]], face)[0, 0] == pytest.approx(
        0.5
    )  # 50 / (100 + 50 - 50)
    assert toolbox_overlaps([[0, 0, 9, 5]], face)[0, 0] == pytest.approx(0.6)
    assert (
        toolbox_overlaps([[9, 0, 20, 9]], face)[0, 0] == 0.0
    )  # x1 == the face's x2: no intersection
    assert toolbox_overlaps([[8, 0, 20, 9]], face)[0, 0] == pytest.approx(20 / (100 + 130 - 20))


def test_a_detection_at_exactly_half_overlap_is_a_false_positive(tmp_path):
    gt = load_benchmark_mat(_mat(tmp_path / "gt.mat", {"a.jpg": [(0, 0, 99, 99, 0)]}))
    half = match_detections(_detections(gt, [("a", 0.9, 0, 0, 99, 49)]), gt)
    assert half.false_positive.tolist() == [True]
    above = match_detections(_detections(gt, [("a", 0.9, 0, 0, 99, 50)]), gt)
    assert above.true_positive.tolist() == [True]


def test_of_equal_overlaps_the_last_face_takes_the_detection(tmp_path):
    # Two faces annotated at the same place, the second flagged: the toolbox's ">=" gives the
    # detection to the flagged one, so it counts neither way and the first face stays missed.
    gt = load_benchmark_mat(_mat(tmp_path / "gt.mat", {"a.jpg": [FACE_A, (*FACE_A[:4], 1)]}))
    matches = match_detections(_detections(gt, [("a", 0.9, *FACE_A[:4])]), gt)
    assert matches.true_positive.tolist() == [False] and matches.false_positive.tolist() == [False]
    assert matches.face.tolist() == [1] and matches.num_faces == 1


def test_size_limits(tmp_path):
    gt = load_benchmark_mat(
        _mat(tmp_path / "gt.mat", {"a.jpg": [(0, 0, 29, 100, 0), (0, 0, 30, 100, 0)]})
    )
    assert gt.ignored.tolist() == [True, False]  # 29 px wide ignored, 30 px counted
    detections = _detections(
        gt,
        [
            ("a", 0.9, 0, 0, MIN_DETECTION_SIDE, MIN_DETECTION_SIDE),
            ("a", 0.8, 0, 0, MIN_DETECTION_SIDE + 1, 5),
        ],
    )
    kept, dropped = detections.without_small()
    assert MIN_DETECTION_SIDE == 21 and dropped == 1 and kept.scores.tolist() == [0.8]


def test_calibration_recovers_a_known_offset_and_scale(tmp_path):
    faces = {f"{i}.jpg": [(100 * i, 50, 100 * i + 80, 150, 0)] for i in range(1, 6)}
    gt = load_benchmark_mat(_mat(tmp_path / "gt.mat", faces))
    # Every detection 1.25 times its face's size about a centre moved right by 10 px.
    rows = [
        (str(i), 0.5 + i / 10, 100 * i - 10 + 10, 50 - 12.5, 100 * i + 90 + 10, 162.5)
        for i in range(1, 6)
    ]
    detections = _detections(gt, rows)
    matches, correction = calibrated_matches(detections, gt, iterations=5)
    # The first iteration finds the whole correction; later ones find nothing more to correct.
    np.testing.assert_allclose(correction, [-10 / 100, 0, 0.8, 0.8], atol=1e-12)
    assert matches.true_positive.all()
    assert toolbox.calibrated(
        toolbox.ground_truth({k.split(".")[0]: v for k, v in faces.items()}),
        [list(r) for r in rows],
    )[3] == pytest.approx([-0.1, 0, 0.8, 0.8])


def _random_case(seed, num_images=6, max_faces=5, detections_per_image=12):
    rng = np.random.default_rng(seed)
    images, rows = {}, []
    for i in range(num_images):
        faces = []
        for _ in range(rng.integers(0, max_faces + 1)):
            x1, y1 = rng.integers(0, 200, 2)
            w, h = rng.integers(10, 80, 2)
            faces.append((int(x1), int(y1), int(x1 + w), int(y1 + h), int(rng.random() < 0.2)))
        images[f"img{i}"] = faces
        for _ in range(detections_per_image):
            if faces and rng.random() < 0.6:  # near a face, often exactly on one
                x1, y1, x2, y2, _ = faces[rng.integers(len(faces))]
                jitter = rng.integers(-6, 7, 4) * (rng.random() < 0.7)
                box = [x1 + jitter[0], y1 + jitter[1], x2 + jitter[2], y2 + jitter[3]]
            else:
                x1, y1 = rng.integers(0, 250, 2)
                box = [x1, y1, x1 + rng.integers(5, 90), y1 + rng.integers(5, 90)]
            # Few distinct scores: ties must keep the file order.
            rows.append((f"img{i}", float(rng.integers(0, 6)) / 5, *[float(v) for v in box]))
    rng.shuffle(rows)
    return images, [tuple(r) for r in rows]


@pytest.mark.parametrize("seed", range(12))
def test_equal_to_the_literal_toolbox(tmp_path, seed):
    images, rows = _random_case(seed)
    gt = load_benchmark_mat(_mat(tmp_path / "gt.mat", {f"{k}.jpg": v for k, v in images.items()}))
    table = toolbox.ground_truth(images)
    kept = toolbox.drop_small([list(r) for r in rows])
    _, tp, fp, total, _ = toolbox.record(table, kept)
    result = evaluate_benchmark(_detections(gt, rows), gt)
    assert result["matches"].true_positive.astype(int).tolist() == tp
    assert result["matches"].false_positive.astype(int).tolist() == fp
    assert result["matches"].num_faces == total
    if total:
        assert result["AP"] == pytest.approx(toolbox.voc_ap(tp, fp, total), abs=1e-12)
        tp_cal, fp_cal, _, correction = toolbox.calibrated(table, kept)
        assert result["matches_calibrated"].true_positive.astype(int).tolist() == tp_cal
        assert result["matches_calibrated"].false_positive.astype(int).tolist() == fp_cal
        assert result["AP_calibrated"] == pytest.approx(
            toolbox.voc_ap(tp_cal, fp_cal, total), abs=1e-12
        )
        np.testing.assert_allclose(result["correction"], correction, rtol=1e-9)


@pytest.mark.parametrize("max_pairs", [1, 7, 1 << 16])
def test_a_crowded_image_beside_sparse_ones_in_slices_equals_the_toolbox(
    tmp_path, monkeypatch, max_pairs
):
    """Each detection meets its own image's faces only, a slice of pairs at a time (at least one
    detection a slice): the answer is the toolbox's whatever the slices."""
    import srn_d2.evaluation.face_benchmarks as face_benchmarks

    monkeypatch.setattr(face_benchmarks, "MAX_PAIRS", max_pairs)
    sparse, sparse_rows = _random_case(3, num_images=5, max_faces=2, detections_per_image=8)
    crowd, crowd_rows = _random_case(4, num_images=1, max_faces=300, detections_per_image=60)
    images = {**sparse, "crowd": crowd["img0"]}
    rows = sparse_rows + [("crowd", *row[1:]) for row in crowd_rows]
    gt = load_benchmark_mat(_mat(tmp_path / "gt.mat", {f"{k}.jpg": v for k, v in images.items()}))
    _, tp, fp, total, _ = toolbox.record(
        toolbox.ground_truth(images), toolbox.drop_small([list(r) for r in rows])
    )
    matches = evaluate_benchmark(_detections(gt, rows), gt)["matches"]
    assert len(crowd["img0"]) > 100 and sum(tp) > 10
    assert (
        matches.true_positive.astype(int).tolist() == tp
        and matches.false_positive.astype(int).tolist() == fp
    )


@pytest.mark.skipif(not os.path.isfile(AFW), reason="needs ../shared/face_benchmarks")
@pytest.mark.parametrize(
    "path, images, faces, ignored", [(AFW, 205, 545, 72), (PASCAL, 851, 1635, 294)]
)
def test_real_annotation_counts(path, images, faces, ignored):
    gt = load_benchmark_mat(path)
    assert (len(gt.keys), gt.num_faces, int(gt.ignored.sum())) == (images, faces, ignored)
    assert len(set(gt.keys)) == images


@pytest.mark.skipif(not os.path.isfile(AFW), reason="needs ../shared/face_benchmarks")
def test_the_command_scores_the_faces_themselves_perfectly(tmp_path, capsys):
    gt = load_benchmark_mat(AFW)
    lines = [
        f"{name} 0.9 {x1} {y1} {x2} {y2}"
        for name, offset in zip(gt.image_names, gt.offsets)
        for x1, y1, x2, y2 in gt.boxes[offset : offset + 1].tolist()
    ]
    (tmp_path / "first_faces.txt").write_text("\n".join(lines) + "\n")
    assert (
        benchmark_cli(
            [
                "--dataset",
                "afw",
                "--gt",
                AFW,
                "--det",
                str(tmp_path / "first_faces.txt"),
                "--json",
                str(tmp_path / "ap.json"),
                "--plot",
                str(tmp_path / "pr.png"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "AFW: 205 images, 545 faces, 72 ignored, 473 scored" in out
    # The first face of each image: those that count are found with precision 1.
    ignored_first = int(gt.ignored[gt.offsets[:-1]].sum())
    recall = (205 - ignored_first) / 473
    import json

    assert json.loads((tmp_path / "ap.json").read_text())[str(tmp_path / "first_faces.txt")][
        "AP"
    ] == pytest.approx(recall)
    assert (tmp_path / "pr.png").stat().st_size > 0


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "line, message",
    [
        ("a 0.9 1 2 3", r"line 2: expected 'image score x1 y1 x2 y2', got 5 fields"),
        ("a 0.9 1 2 3 x", r"line 2: not a number in 'a 0.9 1 2 3 x'"),
        ("a nan 1 2 3 4", r"line 2: not finite"),
        ("a 0.9 1 2 3 1e999", r"line 2: not finite"),
        ("a 0.9 10 2 3 4", r"line 2: x2 < x1 or y2 < y1"),
        ("c.jpg 0.9 1 2 3 4", r"line 2: image 'c.jpg' is not in the ground truth"),
    ],
)
def test_bad_detection_lines_name_the_file_and_line(hand_made, tmp_path, line, message):
    path = tmp_path / "dets.txt"
    path.write_text(f"a.jpg 0.5 1 2 30 40\n{line}\n")
    with pytest.raises(ValueError, match=rf"{path}, {message}"):
        read_benchmark_detections(str(path), hand_made)


def test_images_without_detections_count_as_such(hand_made, tmp_path, capsys):
    path = tmp_path / "dets.txt"
    path.write_text("a 0.9 100 100 199 199\n")  # finds A; B is missed, image b has none
    assert (
        evaluate_benchmark(read_benchmark_detections(str(path), hand_made), hand_made)["AP"] == 0.5
    )


@pytest.mark.parametrize("content", [b"", b"not a mat file", b"MATLAB 5.0 MAT-file" + b"\0" * 200])
def test_a_bad_ground_truth_file_is_named(tmp_path, content):
    path = tmp_path / "gt.mat"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=str(path)):
        load_benchmark_mat(str(path))


def test_the_command_reports_bad_input_with_status_2(hand_made, tmp_path, capsys):
    gt = _mat(tmp_path / "gt.mat", {"a.jpg": [FACE_A]})
    path = tmp_path / "dets.txt"
    path.write_text("a 0.9 1 2 3\n")
    assert benchmark_cli(["--dataset", "afw", "--gt", gt, "--det", str(path)]) == 2
    assert f"error: {path}, line 1" in capsys.readouterr().err


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    content=st.one_of(
        st.binary(max_size=120),
        st.lists(
            st.sampled_from(
                [b"a", b"a.jpg", b"b", b" ", b"\n", b"0.5", b"1", b"100", b"-3", b"nan", b"\xff"]
            ),
            max_size=30,
        ).map(b"".join),
    )
)
def test_any_bytes_as_a_detection_file(hand_made, tmp_path, content):
    path = tmp_path / "any.txt"
    path.write_bytes(content)
    try:
        detections = read_benchmark_detections(str(path), hand_made)
    except ValueError as error:
        assert str(path) in str(error)
    else:
        evaluate_benchmark(detections, hand_made)


def test_the_evaluator_writes_the_toolbox_file_and_scores_it_as_the_command_does(
    tmp_path, monkeypatch, capsys
):
    import torch
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.structures import Boxes, Instances

    from srn_d2.data.face_benchmarks import load_face_benchmark
    from srn_d2.evaluation import build_evaluator
    from srn_testing import tiny_srn_cfg

    monkeypatch.setenv("SRN_DATASETS", str(tmp_path))
    (tmp_path / "tiny").mkdir()
    gt_file = _mat(
        tmp_path / "tiny" / "gt.mat", {"a.jpg": [FACE_A, FACE_B, SMALL], "b.jpg": [FACE_A]}
    )
    name = "face_benchmark_test_tiny"
    DatasetCatalog.register(
        name, lambda: load_face_benchmark(gt_file, str(tmp_path / "tiny" / "images"))
    )
    MetadataCatalog.get(name).set(
        thing_classes=["face"], evaluator_type="face_benchmark", gt_file="tiny/gt.mat"
    )
    try:
        records = DatasetCatalog.get(name)
        assert [r["image_id"] for r in records] == ["a", "b"]
        assert [a["iscrowd"] for a in records[0]["annotations"]] == [0, 0, 1]
        cfg = tiny_srn_cfg()
        cfg.OUTPUT_DIR = str(tmp_path / "out")
        evaluator = build_evaluator(cfg, name)
        evaluator.reset()
        for image_id, boxes, scores in (
            ("a", [FACE_A[:4], [0, 0, 50, 50]], [0.9, 0.8]),
            ("b", [], []),
        ):
            instances = Instances((480, 640))
            instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
            instances.scores = torch.tensor(scores)
            evaluator.process([{"image_id": image_id}], [{"instances": instances}])
        results = evaluator.evaluate()
        # A found (precision 1 at recall 1/3), then a false positive; B and b's face missed.
        assert results[name]["AP"] == pytest.approx(100 / 3)
        written = tmp_path / "out" / "inference" / name / "detections.txt"
        assert written.read_text().splitlines()[0] == "a 0.900000 100.00 100.00 199.00 199.00"
        assert benchmark_cli(["--dataset", "afw", "--gt", gt_file, "--det", str(written)]) == 0
        assert f"{100 / 3:7.2f}" in capsys.readouterr().out
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_only_the_annotations_are_read_from_the_mat_file(tmp_path):
    """An unused variable of 100 MB (a few hundred KB compressed) is skipped, not decompressed."""
    import tracemalloc

    path = _mat(tmp_path / "gt.mat", {"a.jpg": [(10, 10, 60, 60, 0)]})
    content = {
        "Annotations": loadmat(path)["Annotations"],
        "unused": np.zeros(100_000_000, dtype=np.uint8),
    }
    savemat(path, content, do_compression=True)
    del content
    tracemalloc.start()
    gt = load_benchmark_mat(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert gt.num_faces == 1 and peak < 10_000_000


@pytest.mark.parametrize("corner", [1e308, -1e308, 2e6])
def test_a_corner_beyond_any_image_is_named(tmp_path, corner):
    path = _mat(
        tmp_path / "gt.mat", {"a.jpg": [(10, 10, 60, 60, 0)], "b.jpg": [(0, 0, corner, 60, 0)]}
    )
    with pytest.raises(ValueError, match=r"gt.mat: a face of b.jpg has a corner beyond any image"):
        load_benchmark_mat(path)
