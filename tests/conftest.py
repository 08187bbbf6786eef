"""Fixtures several test files share.

The expensive ones (the generated mini_faces, the trained tiny model) are made once per
test run, also when pytest-xdist runs the tests in several processes: the first process
to ask makes them in the run's shared temporary folder, under a file lock, and the others
wait for it and read the result.
"""

import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from filelock import FileLock

from srn_testing import build_tiny_srn, converted_released_weights, tiny_srn_cfg, train_tiny_srn


def pytest_configure(config):
    # One compute thread a process when xdist runs several: they share the cores already.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


def _run_folder(tmp_path_factory, name):
    """``name`` in the folder every process of this test run shares; with the lock that guards it."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    folder = base / name
    return folder, FileLock(str(folder) + ".lock")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny SRN config file and its checkpoint (random weights: no detection passes the threshold)."""
    root = tmp_path_factory.mktemp("tiny")
    cfg = tiny_srn_cfg()
    (root / "tiny.yaml").write_text(cfg.dump())
    DetectionCheckpointer(build_tiny_srn(cfg), save_dir=str(root)).save("tiny")
    return str(root / "tiny.yaml"), str(root / "tiny.pth")


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory, mini_faces_root):
    """(config of the tiny SRN trained on mini_faces, the datasets folder holding mini_faces)."""
    folder, lock = _run_folder(tmp_path_factory, "trained_tiny")
    config_file = folder / "trained_tiny.yaml"
    with lock:
        if not config_file.exists():
            folder.mkdir(exist_ok=True)
            cfg = train_tiny_srn(folder, mini_faces_root)
            (folder / "written.yaml").write_text(cfg.dump())
            os.replace(folder / "written.yaml", config_file)
    cfg = tiny_srn_cfg()
    cfg.merge_from_file(str(config_file))
    return cfg, mini_faces_root


@pytest.fixture(scope="session")
def mini_faces_root(tmp_path_factory):
    """The test run's one datasets root holding a generated mini_faces, for tests that only read it
    (tests that generate, damage or race generations make their own)."""
    from srn_d2.data import ensure_mini_faces

    folder, lock = _run_folder(tmp_path_factory, "mini_faces_root")
    with lock:
        folder.mkdir(exist_ok=True)
        ensure_mini_faces(str(folder))
    return str(folder)


@pytest.fixture
def mini_faces_in_environment(mini_faces_root, monkeypatch):
    """$SRN_DATASETS names the run's one mini_faces root, for the tools a test starts."""
    monkeypatch.setenv("SRN_DATASETS", mini_faces_root)


@pytest.fixture(scope="session")
def converted_released(tmp_path_factory):
    """(the authors' network with varied random weights, its checkpoint converted to srn_d2): one per run."""
    return converted_released_weights(str(tmp_path_factory.mktemp("released")))
