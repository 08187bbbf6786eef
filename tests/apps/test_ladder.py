"""SRN's size ladder: its configs train and export, the smallest rung's export equals PyTorch,
the ladder's table and results files, and the ladder command on tiny settings."""

import json
import logging
import os
import statistics
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from hypothesis import given, settings
from hypothesis import strategies as st

from srn_d2.apps.ladder import (
    BASELINES,
    REFERENCE,
    RUNGS,
    all_rows,
    ladder_report,
    seeds_of,
    select,
)
from srn_d2.apps.study import DETECTORS, read_results
from srn_d2.deploy.export import deployment_metadata, export_onnx, exported_runner, verify
from srn_d2.deploy.onnx_runtime import INPUT_SIZE, ONNXFaceDetector
from srn_d2.errors import InputError
from srn_d2.utils.measure import cpu_name
from srn_testing import TINY_STUDY, face_instances, random_image, srn_cfg


def test_every_row_names_a_shipped_config_and_a_study_model_with_the_same_network():
    for row in all_rows():
        full, twin = srn_cfg(row.config_file), srn_cfg(DETECTORS[row.model].config_file)
        assert full.MODEL.META_ARCHITECTURE == twin.MODEL.META_ARCHITECTURE
        assert (
            full.MODEL.TIMM.NAME == twin.MODEL.TIMM.NAME
            and full.MODEL.RESNETS.DEPTH == twin.MODEL.RESNETS.DEPTH
        )
        if full.MODEL.META_ARCHITECTURE == "SRN" and row is not REFERENCE:
            keys = (
                "BOTTOM_UP",
                "OUT_CHANNELS",
                "C6_CHANNELS",
                "C7_CHANNELS",
                "RFE_BRANCH_CHANNELS",
                "STC_LEVELS",
                "STR_LEVELS",
            )
            assert [full.MODEL.SRN[k] for k in keys] == [twin.MODEL.SRN[k] for k in keys], row.label
        else:
            assert full.MODEL.FPN.OUT_CHANNELS == twin.MODEL.FPN.OUT_CHANNELS
    # Each rung's baseline is Detectron2's RetinaNet on its backbone.
    for rung in RUNGS:
        if rung.baseline:
            baseline = next(row for row in BASELINES if row.label == rung.baseline)
            assert (
                srn_cfg(baseline.config_file).MODEL.TIMM.NAME
                == srn_cfg(rung.config_file).MODEL.TIMM.NAME
            )
            assert srn_cfg(baseline.config_file).MODEL.META_ARCHITECTURE == "RetinaNet"


def test_the_smallest_rung_is_the_cheapest_and_gets_the_most_seeds():
    assert RUNGS[0].config_file == "SRN_MobileNetV3Small_widerface.yaml"
    assert seeds_of(RUNGS[0], 3, 5) == [1, 2, 3, 4, 5]
    assert all(seeds_of(row, 3, 5) == [1, 2, 3] for row in (*RUNGS[1:], *BASELINES, REFERENCE))
    assert [row.label for row in select(["SRN R-50", "SRN MobileNetV3-Small"])] == [
        "SRN MobileNetV3-Small",
        "SRN R-50",
    ]
    with pytest.raises(InputError, match="--rungs.*SRN R-18.*names no row"):
        select(["SRN R-18"])


def test_every_rung_has_detectron2_retinanet_on_its_backbone_beside_it():
    baselines = {row.label: row for row in BASELINES}
    for rung in RUNGS:
        baseline = baselines[rung.baseline]
        assert baseline.model == rung.model.replace("SRN_", "RetinaNet_", 1)
        assert baseline.model in DETECTORS and baseline.config_file.startswith("RetinaNet_")


@pytest.mark.parametrize("config_file", ["SRN_R_50_mini.yaml", "RetinaNet_R_50_mini.yaml"])
def test_the_r50_twins_train_a_step_from_scratch(config_file):
    cfg = srn_cfg(config_file)
    assert cfg.MODEL.RESNETS.NORM == "GN" and cfg.MODEL.BACKBONE.FREEZE_AT == 0
    assert cfg.MODEL.ANCHOR_GENERATOR.SIZES[0] == [8, 11.3137]  # SRN's anchors, on P2
    torch.manual_seed(0)
    model = build_model(cfg)
    batch = [
        {
            "image": random_image(128, 128, seed=i),
            "instances": face_instances((128, 128), [[10, 12, 60, 70]]),
        }
        for i in range(2)
    ]
    with EventStorage():
        losses = model(batch)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert model.backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0


def _random_weight_model(name, score_threshold):
    """A rung's model with random weights and a score threshold below its random scores (about
    the head's prior, 0.01), so that thousands of candidates reach the NMS."""
    cfg = srn_cfg(name)
    cfg.MODEL.SRN.SCORE_THRESH_TEST = score_threshold
    torch.manual_seed(0)
    return cfg, build_model(cfg).eval()


@pytest.mark.slow
@pytest.mark.parametrize("row", [*RUNGS, *BASELINES], ids=lambda row: row.label)
def test_each_ladder_config_exports_and_runs_end_to_end(row, tmp_path):
    cfg, model = _random_weight_model(row.config_file, 0.05)
    path = str(tmp_path / "model.onnx")
    export_onnx(model, (random_image(96, 128),), path, deployment_metadata(cfg))
    boxes, scores = ONNXFaceDetector(path, num_threads=1)(np.zeros((75, 101, 3), np.uint8))
    assert boxes.shape == (len(scores), 4) and boxes.dtype == np.float32


@pytest.mark.parametrize("height, width", [(97, 131), (61, 203), (257, 143)])
def test_the_smallest_rung_export_equals_pytorch_on_odd_sizes(tmp_path, height, width):
    cfg, model = _random_weight_model(RUNGS[0].config_file, 0.009)
    path = str(tmp_path / "model.onnx")
    export_onnx(model, (random_image(96, 128),), path, deployment_metadata(cfg))
    report = verify(model, exported_runner(path, "onnx"), random_image(height, width, seed=height))
    assert report["detections"] > 20
    assert report["box_diff_px"] <= 0.01 and report["score_diff"] <= 1e-4


def test_a_fixed_size_export_of_the_smallest_rung_equals_pytorch_and_takes_only_its_size(tmp_path):
    """As export --input-size writes it: no dynamic image axes, its size in the metadata."""
    import onnx

    cfg, model = _random_weight_model(RUNGS[0].config_file, 0.009)
    path = str(tmp_path / "model.onnx")
    export_onnx(model, (random_image(97, 131),), path, deployment_metadata(cfg), any_size=False)
    assert {p.key: p.value for p in onnx.load(path).metadata_props}[INPUT_SIZE] == "131x97"
    (graph_input,) = onnx.load(path).graph.input
    assert [d.dim_value for d in graph_input.type.tensor_type.shape.dim] == [3, 97, 131]
    report = verify(model, exported_runner(path, "onnx"), random_image(97, 131, seed=5))
    assert report["detections"] > 20
    assert report["box_diff_px"] <= 0.01 and report["score_diff"] <= 1e-4
    detector = ONNXFaceDetector(path, num_threads=1)
    assert detector.input_size == (97, 131)
    boxes, scores = detector(np.zeros((97, 131, 3), np.uint8))
    assert boxes.shape == (len(scores), 4)
    with pytest.raises(InputError, match=r"model.onnx: exported for 131x97 images only .* 131x98"):
        detector(np.zeros((98, 131, 3), np.uint8))


def _run(model, seed, ap_hard_iou70, ap=50.0):
    return {
        "model": model,
        "seed": seed,
        "AP_easy": ap,
        "AP_medium": ap + 1,
        "AP_hard": ap + 2,
        "AP_hard_IoU70": ap_hard_iou70,
    }


def _costs(rows):
    return {
        row.label: {"params_M": 1.5, "GFLOPs": 0.25 * (i + 1), "ms_1": 30.0 + i, "ms_2": 18.0 + i}
        for i, row in enumerate(rows)
    }


def test_ladder_table_gives_each_row_its_seeds_and_compares_rungs_with_their_retinanet():
    rows = select(["SRN MobileNetV3-Small", "RetinaNet MobileNetV3-Small", "SRN R-50"])
    srn_hard = [60.0, 62.0, 64.0, 61.0, 63.0]
    runs = [_run("SRN_MobileNetV3Small", seed, value) for seed, value in enumerate(srn_hard, 1)]
    runs += [
        _run("RetinaNet_MobileNetV3Small", seed, value)
        for seed, value in ((1, 50.0), (2, 52.0), (3, 51.0))
    ]
    # A seed beyond what the ladder asks for is not in its means.
    runs += [_run("RetinaNet_MobileNetV3Small", 4, 90.0), _run("SRN_R_50", 1, 70.0, ap=80.0)]
    report = ladder_report(
        rows, _costs(rows), runs, seeds=3, smallest_seeds=5, size=(480, 640), iters=7
    )

    assert (
        report.startswith(cpu_name())
        and "cost at 640x480" in report
        and "median of 7 runs" in report
        and "(--input-size)" not in report
    )
    fixed = ladder_report(rows, _costs(rows), runs, 3, 5, size=(480, 640), iters=7, any_size=False)
    assert "the ONNX export for 640x480 only (--input-size)" in fixed
    table = {
        line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
        for line in report.splitlines()
        if line.startswith("| SRN") or line.startswith("| RetinaNet")
    }
    assert table["SRN MobileNetV3-Small"] == [
        "SRN_MobileNetV3Small_widerface.yaml",
        "1.50",
        "0.25",
        "30.0",
        "18.0",
        "5",
        "50.0 ± 0.0",
        "51.0 ± 0.0",
        "52.0 ± 0.0",
        f"62.0 ± {statistics.stdev(srn_hard):.1f}",
    ]
    assert table["RetinaNet MobileNetV3-Small"][5:] == [
        "3",
        "50.0 ± 0.0",
        "51.0 ± 0.0",
        "52.0 ± 0.0",
        "51.0 ± 1.0",
    ]
    assert table["SRN R-50"][5:] == ["1", "80.0", "81.0", "82.0", "70.0"]
    # 62 - 51 = 11 with a standard error of sqrt(2.5 / 5 + 1 / 3) = 0.91: beyond two.
    comparison = [
        [cell.strip() for cell in line.split("|")[1:-1]]
        for line in report.splitlines()
        if line.startswith("| SRN MobileNetV3-Small - ")
    ]
    assert comparison == [
        ["SRN MobileNetV3-Small - RetinaNet MobileNetV3-Small", "+11.0 ± 0.9", "SRN ahead"]
    ]


def test_without_two_seeds_on_both_sides_no_comparison_is_made():
    rows = select(["SRN MobileNetV3-Small", "RetinaNet MobileNetV3-Small"])
    runs = [_run("SRN_MobileNetV3Small", 1, 60.0), _run("RetinaNet_MobileNetV3Small", 1, 50.0)]
    report = ladder_report(rows, _costs(rows), runs, 3, 5, (480, 640), 1)
    assert "against Detectron2's RetinaNet" not in report


def _write(path, value):
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return str(path)


def test_results_files_are_merged_with_each_run_once_and_the_repeats_logged(tmp_path, caplog):
    first = _write(tmp_path / "a.json", [_run("SRN", 1, 60.0), _run("SRN", 2, 61.0)])
    second = _write(tmp_path / "b.json", [_run("SRN", 2, 99.0), _run("RetinaNet", 1, 50.0)])
    with caplog.at_level(logging.WARNING):
        runs = read_results([first, second])
    assert [(run["model"], run["seed"], run["AP_hard_IoU70"]) for run in runs] == [
        ("SRN", 1, 60.0),
        ("SRN", 2, 61.0),
        ("RetinaNet", 1, 50.0),
    ]
    assert "left out 1 runs" in caplog.text and "b.json: SRN seed 2" in caplog.text


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not a results.json of"),
        ({"model": "SRN"}, "expected a list of runs"),
        ([{"model": "SRN", "seed": "1"}], "an integer seed"),
        ([{"model": "SRN", "seed": 1, "AP_hard": "high"}], "and numbers"),
        ([{"seed": 1}], "each with a model name"),
        (b"\xff\xfe".decode("latin-1"), "not a results.json of"),
    ],
)
def test_a_bad_results_file_is_named(tmp_path, content, message):
    path = _write(tmp_path / "results.json", content)
    with pytest.raises(InputError, match=f"{path}: .*{message}"):
        read_results([path])


@settings(max_examples=150, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_any_json_is_read_as_valid_runs_or_refused_with_the_file_named(tmp_path_factory, value):
    path = str(tmp_path_factory.mktemp("results") / "results.json")
    with open(path, "w") as f:
        json.dump(value, f)
    try:
        runs = read_results([path])
    except InputError as error:
        assert path in str(error)
        return
    assert runs == value
    assert all(isinstance(run["model"], str) and type(run["seed"]) is int for run in runs)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ladder_command_on_tiny_settings(tmp_path, mini_faces_root):
    out = tmp_path / "ladder"
    # Finished runs of the baseline: read, not trained again.
    earlier = _write(
        tmp_path / "earlier.json",
        [_run("RetinaNet_MobileNetV3Small", seed, 40.0 + seed) for seed in (1, 2)],
    )
    env = dict(os.environ, SRN_DATASETS=mini_faces_root, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "srn_d2.tools.ladder",
        "--rungs",
        "SRN MobileNetV3-Small",
        "RetinaNet MobileNetV3-Small",
        "--seeds",
        "2",
        "--smallest-seeds",
        "2",
        "--iters",
        "1",
        "--size",
        "96x64",
        "--results",
        earlier,
        "--output",
        str(out),
        *TINY_STUDY,
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    runs = json.loads((out / "results.json").read_text())
    assert [(run["model"], run["seed"]) for run in runs] == [
        ("RetinaNet_MobileNetV3Small", 1),
        ("RetinaNet_MobileNetV3Small", 2),
        ("SRN_MobileNetV3Small", 1),
        ("SRN_MobileNetV3Small", 2),
    ]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "SRN_MobileNetV3Small_seed1",
        "SRN_MobileNetV3Small_seed2",
    ]
    table = (out / "ladder.md").read_text()
    assert table.strip() in proc.stdout and "cost at 96x64" in table
    retinanet = next(
        line for line in table.splitlines() if line.startswith("| RetinaNet MobileNetV3-Small")
    )
    assert "| 41.5 ± 0.7 " in retinanet  # hard IoU.7 of the two runs read: 41 and 42
    assert "SRN MobileNetV3-Small - RetinaNet MobileNetV3-Small" in table

    # Without training, a row's accuracy is over the runs there are: 2 of the 5 seeds asked for.
    report = subprocess.run(
        cmd[:4]
        + [
            "SRN MobileNetV3-Small",
            "--smallest-seeds",
            "5",
            "--no-training",
            "--iters",
            "1",
            "--size",
            "96x64",
            "--output",
            str(out),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    row = next(
        line for line in report.stdout.splitlines() if line.startswith("| SRN MobileNetV3-Small ")
    )
    assert [cell.strip() for cell in row.split("|")[1:-1]][6] == "2"
    assert not (out / "SRN_MobileNetV3Small_seed3").exists()
    # A bad seed count is refused by name.
    again = subprocess.run(
        cmd[:4] + ["SRN MobileNetV3-Small", "--seeds", "0", "--output", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 2 and "--seeds" in again.stderr and "Traceback" not in again.stderr
    stray = subprocess.run(
        cmd[:5] + ["--no-training", "--output", str(out), "SOLVER.MAX_ITER", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert stray.returncode == 2 and "overrides = ['SOLVER.MAX_ITER', '2']" in stray.stderr


def test_the_smallest_rung_export_runs_a_video_through_the_demo_with_its_frame_rate(
    tmp_path, caplog
):
    import cv2

    from srn_d2.tools.detect import main as demo

    cfg, model = _random_weight_model(RUNGS[0].config_file, 0.009)
    path = str(tmp_path / "model.onnx")
    export_onnx(model, (random_image(96, 128),), path, deployment_metadata(cfg))
    video = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (160, 120))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write mp4v video")
    for index in range(3):
        writer.write(np.full((120, 160, 3), 60 * index, np.uint8))
    writer.release()
    with caplog.at_level(logging.INFO, logger="srn_d2.detect"):
        assert demo(["--onnx", path, "--input", video, "--output", str(tmp_path / "out")]) == 0
    capture = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    frames = [frame for ok, frame in iter(capture.read, (False, None)) if ok]
    assert len(frames) == 3
    # The frame rate's band: black with white text, top left.
    assert all((frame[2:20, 2:60].max(axis=2) < 40).mean() > 0.5 for frame in frames)
    assert (
        "clip.mp4: 3 frames, detection at" in caplog.text
        and "the video runs at 25.0" in caplog.text
    )


def _printed_row(text, label):
    """The cells after the label of the last table row ``label`` in ``text``."""
    rows = [
        line.split("|")
        for line in text.splitlines()
        if line.startswith("|") and line.split("|")[1].strip() == label
    ]
    return [cell.strip() for cell in rows[-1][2:-1]]


def test_the_kept_runs_give_the_ladder_and_comparisons_the_docs_print():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    runs = read_results([os.path.join(root, "benchmarks", "results", "ladder_runs.json")])
    assert sorted((run["model"], run["seed"]) for run in runs) == sorted(
        (row.model, seed) for row in all_rows() for seed in seeds_of(row, 3, 5)
    )
    rows = all_rows()
    report = ladder_report(rows, _costs(rows), runs, 3, 5, (480, 640), 20)
    comparisons = {
        "SRN MobileNetV3-Small - RetinaNet MobileNetV3-Small": ["+2.2 ± 3.2", "within 2 SE"],
        "SRN MobileNetV3-Large - RetinaNet MobileNetV3-Large": ["+12.9 ± 1.3", "SRN ahead"],
        "SRN R-50 - RetinaNet R-50": ["+32.3 ± 8.7", "SRN ahead"],
    }
    for label, printed in comparisons.items():
        assert _printed_row(report, label) == printed, label
    for page in ("README.md", os.path.join("docs", "MODEL_ZOO.md")):
        with open(os.path.join(root, page), encoding="utf-8") as f:
            text = f.read()
        for row in rows:
            # seeds and AP columns; the costs are the machine's
            assert _printed_row(text, row.label)[5:] == _printed_row(report, row.label)[5:], (
                page,
                row.label,
            )
        for label, printed in comparisons.items():
            assert _printed_row(text, label) == printed, (page, label)
