"""Fixtures several test files share."""
import pytest
from detectron2.checkpoint import DetectionCheckpointer

from srn_testing import build_tiny_srn, tiny_srn_cfg, train_tiny_srn


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny SRN config file and its checkpoint (random weights: no detection passes the threshold)."""
    root = tmp_path_factory.mktemp("tiny")
    cfg = tiny_srn_cfg()
    (root / "tiny.yaml").write_text(cfg.dump())
    DetectionCheckpointer(build_tiny_srn(cfg), save_dir=str(root)).save("tiny")
    return str(root / "tiny.yaml"), str(root / "tiny.pth")


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory):
    """(config of the tiny SRN trained on mini_faces, the datasets folder holding mini_faces)."""
    datasets = tmp_path_factory.mktemp("trained_tiny_datasets")
    return train_tiny_srn(tmp_path_factory.mktemp("trained_tiny"), datasets), datasets


@pytest.fixture(scope="session")
def mini_faces_root(tmp_path_factory):
    """A datasets root holding a generated mini_faces, for tests that only read it."""
    from srn_d2.data import ensure_mini_faces

    root = tmp_path_factory.mktemp("mini_faces_root")
    ensure_mini_faces(str(root))
    return str(root)
