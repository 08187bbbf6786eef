"""srn_d2's LazyConfig twins: each .py config builds the model its YAML config builds (module tree,
parameters, anchors, and from the same weights and input the same losses and detections), trains
with train_net.py in one and two processes, and names the key of a typo."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.config import instantiate
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from omegaconf import ListConfig

from srn_d2 import model_zoo
from srn_d2.engine.lazy_config import build_lazy_model, load_lazy_config
from srn_d2.errors import ConfigValueError
from srn_testing import REPO_ROOT as ROOT

# Every run of this file reads the session's one generated mini_faces.
pytestmark = pytest.mark.usefixtures("mini_faces_in_environment")


TWINS = [
    ("SRN_R_50_FPN_widerface", []),
    ("SRN_R_50_official", []),
    ("RetinaNet_R_50_FPN_widerface", []),
    ("SRN_mini", []),
    ("RetinaNet_mini", []),
    # No download in tests: timm's ImageNet weights off in both.
    (
        "SRN_MobileNetV3_widerface",
        (["MODEL.TIMM.PRETRAINED", "False"], ["model.backbone.bottom_up.pretrained=False"]),
    ),
]


def _scalars(model):
    """The model's own settings (thresholds, levels, ...), lists as lists."""
    out = {}
    for key, value in vars(model).items():
        if isinstance(value, ListConfig):
            value = list(value)
        if isinstance(value, (int, float, str, bool, tuple, list)):
            out[key] = value
    return out


def _inputs(seed=0):
    generator = torch.Generator().manual_seed(seed)
    inputs = []
    for height, width in ((128, 160), (96, 112)):
        instances = Instances((height, width))
        instances.gt_boxes = Boxes(
            torch.tensor([[10.0, 12.0, 60.0, 70.0], [70.0, 20.0, 90.0, 44.0]])
        )
        instances.gt_classes = torch.zeros(2, dtype=torch.int64)
        image = torch.randint(0, 256, (3, height, width), generator=generator).float()
        inputs.append({"image": image, "instances": instances, "height": height, "width": width})
    return inputs


@pytest.mark.parametrize("name, overrides", TWINS, ids=[t[0] for t in TWINS])
def test_each_lazy_config_builds_its_yaml_twin(name, overrides):
    yaml_overrides, lazy_overrides = overrides or ([], [])
    yaml_cfg = model_zoo.get_config(f"{name}.yaml", ["MODEL.WEIGHTS", "", *yaml_overrides])
    lazy_cfg = model_zoo.get_config(f"{name}.py", lazy_overrides)
    from_yaml = build_model(yaml_cfg)
    lazy_cfg.train.device = "cpu"
    from_lazy = build_lazy_model(lazy_cfg)

    assert str(from_lazy) == str(from_yaml)
    shapes = {k: tuple(v.shape) for k, v in from_yaml.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in from_lazy.state_dict().items()} == shapes
    assert _scalars(from_lazy) == _scalars(from_yaml)
    assert lazy_cfg.dataloader.image_format == yaml_cfg.INPUT.FORMAT

    features = [torch.zeros(1, 1, -(-96 // s), -(-112 // s)) for s in (4, 8, 16, 32, 64, 128)]
    for a, b in zip(from_yaml.anchor_generator(features), from_lazy.anchor_generator(features)):
        assert torch.equal(a.tensor, b.tensor)

    from_lazy.load_state_dict(from_yaml.state_dict())
    with EventStorage():
        losses = [model.train()(_inputs()) for model in (from_yaml, from_lazy)]
    assert losses[0].keys() == losses[1].keys()
    for key in losses[0]:
        assert torch.equal(losses[0][key], losses[1][key]), key
    with torch.no_grad():
        detections = [model.eval()(_inputs(1))[0]["instances"] for model in (from_yaml, from_lazy)]
    assert torch.equal(detections[0].pred_boxes.tensor, detections[1].pred_boxes.tensor)
    assert torch.equal(detections[0].scores, detections[1].scores)


def test_get_config_lists_and_loads_both_kinds():
    names = model_zoo.list_config_files()
    assert {f"{name}.py" for name, _ in TWINS} <= set(names)
    assert (
        model_zoo.get_config("SRN_mini.py").train.max_iter
        == model_zoo.get_config("SRN_mini.yaml").SOLVER.MAX_ITER
    )


def test_an_override_reaches_the_model():
    cfg = model_zoo.get_config(
        "SRN_mini.py", ["model.head.branch_channels=8", "model.plan.str_levels=[p6,p7]"]
    )
    cfg.train.device = "cpu"
    model = build_lazy_model(cfg)
    from srn_d2.modeling.rfe import RFE

    rfe = next(m for m in model.head.modules() if isinstance(m, RFE))
    assert {m.out_channels for m in rfe.modules() if isinstance(m, torch.nn.Conv2d)} >= {8}
    assert 16 not in {m.out_channels for m in rfe.modules() if isinstance(m, torch.nn.Conv2d)}
    assert model.plan.str_levels == ("p6", "p7") and model.backbone.plan.str_levels == ("p6", "p7")


def test_a_typo_is_named_in_an_override_and_in_a_config_file(tmp_path):
    path = model_zoo.get_config_file("SRN_mini.py")
    with pytest.raises(
        ConfigValueError,
        match=r"model.head.branch_chanels=8.*has no key 'model.head.branch_chanels'",
    ):
        load_lazy_config(path, ["model.head.branch_chanels=8"])
    with pytest.raises(ConfigValueError, match=r"key=value"):
        load_lazy_config(path, ["model.head.branch_channels", "8"])
    user = tmp_path / "mine.py"
    user.write_text(
        "from srn_d2.model_zoo import get_config\n"
        "cfg = get_config('SRN_mini.py')\n"
        "model, train = cfg.model, cfg.train\n"
        "model.head.branch_chanels = 8\n"
    )
    cfg = load_lazy_config(str(user))
    cfg.train.device = "cpu"
    with pytest.raises(ConfigValueError, match=r"model.head.branch_chanels: not an argument"):
        build_lazy_model(cfg)


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "train.max_iter=abc",
            r"train.max_iter = 'abc': must be a whole number, as the config's 300",
        ),
        ("train.max_iter=2.5", r"train.max_iter = 2.5: must be a whole number"),
        ("optimizer.lr=abc", r"optimizer.lr = 'abc': must be a number"),
        ("train.amp.enabled=3", r"train.amp.enabled = 3: must be true or false"),
        ("train.max_iter=[1,", r"override: no viable alternative at input '\[1,'"),
    ],
)
def test_an_override_of_the_wrong_kind_is_named(override, message):
    with pytest.raises(ConfigValueError, match=message):
        load_lazy_config(model_zoo.get_config_file("SRN_mini.py"), [override])


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "model.head.branch_channels=-3",
            r"MODEL.SRN.RFE_BRANCH_CHANNELS = -3: \(argument branch_channels\)",
        ),
        (
            "model.loss_normalization=per_los",
            r"MODEL.SRN.LOSS_NORMALIZATION = 'per_los': \(argument loss_normalization\)",
        ),
        (
            "model.stc_min_face_prob=5.0",
            r"MODEL.SRN.STC_MIN_FACE_PROB = 5.0: \(argument stc_min_face_prob\)",
        ),
        ("model.head.init=uniform", r"MODEL.SRN.HEAD_INIT = 'uniform': \(argument init\)"),
        (
            "model.test_nms_thresh=1.5",
            r"MODEL.SRN.NMS_THRESH_TEST = 1.5: \(argument test_nms_thresh\)",
        ),
    ],
)
def test_the_constructors_refuse_what_the_yaml_path_refuses(override, message):
    """The value checks live in the constructors: LazyConfig users meet the same refusals."""
    cfg = model_zoo.get_config("SRN_mini.py", [override])
    cfg.train.device = "cpu"
    with pytest.raises(ConfigValueError, match=message):
        build_lazy_model(cfg)


def _train(tmp_path, *args, num_gpus=1):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        os.path.join(ROOT, "train_net.py"),
        "--config-file",
        os.path.join(ROOT, "configs/SRN_mini.py"),
        "--num-gpus",
        str(num_gpus),
        *args,
        "dataloader.train.mapper.augmentations.4.shape=[128,128]",
        # Tested at 128-160 px instead of ~300: the val set's forward passes cost a fifth.
        "dataloader.test.mapper.augmentations.0.short_edge_length=128",
        "dataloader.test.mapper.augmentations.0.max_size=160",
        f"train.output_dir={tmp_path / 'out'}",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_lazy_training_in_two_processes_then_evaluating_the_checkpoint(tmp_path):
    # Every candidate kept: four iterations leave scores near the prior, and AP 0 would compare nothing.
    keep_all = "model.test_score_thresh=0.0"
    status, log = _train(
        tmp_path, "train.max_iter=4", "train.checkpointer.period=2", keep_all, num_gpus=2
    )
    assert status == 0, log[-3000:]
    out = tmp_path / "out"
    assert "World size: 2" in log and (out / "log.txt.rank1").exists()
    assert (
        torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["iteration"]
        == 3
    )
    trained = _reported_metrics(log)
    assert float(trained[2]) > 0  # hard AP
    status, log = _train(
        tmp_path, "--eval-only", f"train.init_checkpoint={out / 'model_final.pth'}", keep_all
    )
    assert status == 0, log[-3000:]
    assert _reported_metrics(log) == trained


def _reported_metrics(log):
    """The values of the last "copypaste:" table of a Detectron2 log."""
    rows = [line.split("copypaste: ", 1)[1] for line in log.splitlines() if "copypaste: " in line]
    return rows[-1].split(",")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_lazy_training_resumes_and_reports_a_typo_as_an_error(tmp_path):
    no_test, ema = "dataloader.test.dataset.names=[]", "train.model_ema.enabled=True"
    status, log = _train(tmp_path, "train.max_iter=2", no_test, ema)
    assert status == 0, log[-3000:]
    # With the weights' moving average on, the final checkpoint carries it and the model ends on it.
    final = torch.load(tmp_path / "out" / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["model"].keys() == final["model_ema"].keys()
    assert all(
        torch.equal(value, final["model_ema"][name]) for name, value in final["model"].items()
    )
    status, log = _train(tmp_path, "--resume", "train.max_iter=4", no_test, ema)
    assert status == 0, log[-3000:]
    assert "Starting training from iteration 2" in (tmp_path / "out" / "log.txt").read_text()
    status, log = _train(tmp_path, "train.max_iter=4", no_test, ema, "train.model_ema.decay=1.5")
    assert status == 2 and "train.model_ema.decay = 1.5: needs 0 <= decay < 1" in log, log[-3000:]
    status, log = _train(tmp_path, "train.max_itr=4")
    assert status == 2 and "has no key 'train.max_itr'" in log


@pytest.mark.parametrize(
    "overrides, expected_shape",
    [
        ([], (301, 257)),  # the YAML configs' MIN_SIZE_TEST 0: the original size
        (
            [
                "dataloader.test.mapper.augmentations.0.short_edge_length=128",
                "dataloader.test.mapper.augmentations.0.max_size=140",
            ],
            (140, 120),  # short edge to 128 would make the long one 150 > 140: scaled to 140
        ),
    ],
)
def test_the_test_size_is_set_as_the_yaml_path_sets_it(overrides, expected_shape):
    """dataloader.test.mapper's first augmentation is the YAML path's ResizeShortestEdge."""
    cfg = model_zoo.get_config("SRN_mini.py", overrides)
    mapper = instantiate(cfg.dataloader.test.mapper)
    image = np.zeros((301, 257, 3), np.uint8)
    transform = mapper.augmentations.augs[0].get_transform(image)
    assert transform.apply_image(image).shape[:2] == expected_shape
