"""Registers the face datasets under their standard names, like detectron2's builtin.py.

Registration reads nothing: each loader resolves the datasets root
(``$SRN_DATASETS``, default ``datasets``) and reads its files only when the
dataset is first asked for. Metadata paths (``image_root``, ``gt_file``,
``gt_mat_dir``, ...) are relative to that root and resolved when used, with
:func:`srn_d2.data.datasets_root.resolve_dataset_path`.

Expected layout under the root (see datasets/README.md)::

    widerface/WIDER_{train,val,test}/images/<event>/<image>.jpg
    widerface/wider_face_split/wider_face_{train,val}_bbx_gt.txt
    widerface/wider_face_split/wider_face_test_filelist.txt
    widerface/eval_tools/ground_truth/*.mat            (official val evaluation)
    widerface/retinaface_gt_v1.1/train/label.txt       (RetinaFace's five landmarks, widerface_train_landmarks)
    fddb/FDDB-folds/FDDB-fold-NN-ellipseList.txt
    fddb/originalPics/<path>.jpg
    afw/new_annotations_AFW.mat, afw/images/<name>.jpg  (the cleaned AFW ground truth)
    pascal_face/Annotations_Face_PASCALLayout_large_fixed.mat, pascal_face/images/<name>.jpg
    mini_faces/...                                      (generated on first use)
"""

import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..errors import require
from ..annotations.face_benchmarks import BENCHMARKS
from .face_benchmarks import load_face_benchmark
from .fddb import NUM_FOLDS, fold_file_name, load_fddb
from .mini_faces import MINI_FACES_DIR, SPLIT_SIZES, ensure_mini_faces, mini_faces_split_paths
from .datasets_root import datasets_root
from .retinaface_labels import attach_landmarks, landmark_metadata, load_retinaface_labels
from .wider_face import DIFFICULTY_BY_SIZE, load_wider_face, load_wider_face_test_list

WIDER_FACE_DIR = "widerface"
WIDER_FACE_GT_MAT_DIR = os.path.join("eval_tools", "ground_truth")
FDDB_DIR = "fddb"

# name -> (image folder, annotation file), relative to <root>/widerface
_WIDER_FACE_SPLITS = {
    "widerface_train": ("WIDER_train/images", "wider_face_split/wider_face_train_bbx_gt.txt"),
    "widerface_val": ("WIDER_val/images", "wider_face_split/wider_face_val_bbx_gt.txt"),
    "widerface_test": ("WIDER_test/images", "wider_face_split/wider_face_test_filelist.txt"),
}
_FACE_CLASSES = ["face"]


def _under_root(*parts: str) -> str:
    return os.path.join(datasets_root(), *parts)


def require_registered_dataset(name: str, key: str) -> str:
    """``name`` if a dataset is registered under it; else ConfigValueError naming ``key``
    (Detectron2's own KeyError would escape the commands' one-line error report)."""
    require(
        name in DatasetCatalog.list(),
        key,
        name,
        "is not a registered dataset (see datasets/README.md)",
    )
    return name


def _require_file(path: str, dataset_name: str) -> str:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{dataset_name}: {path} not found. Lay the dataset out as datasets/README.md "
            f"describes, under $SRN_DATASETS (now {datasets_root()!r})."
        )
    return path


def register_all_wider_face() -> None:
    for name, (image_dir, annotation_file) in _WIDER_FACE_SPLITS.items():
        is_test = name == "widerface_test"
        load = load_wider_face_test_list if is_test else load_wider_face

        def load_split(name=name, load=load, image_dir=image_dir, annotation_file=annotation_file):
            return load(
                _require_file(_under_root(WIDER_FACE_DIR, annotation_file), name),
                _under_root(WIDER_FACE_DIR, image_dir),
            )

        DatasetCatalog.register(name, load_split)
        metadata = dict(
            thing_classes=_FACE_CLASSES,
            evaluator_type="widerface",
            image_root=os.path.join(WIDER_FACE_DIR, image_dir),
            gt_file=os.path.join(WIDER_FACE_DIR, annotation_file),
        )
        # The official splits take easy/medium/hard from these .mat lists, not from face sizes.
        if name == "widerface_val":
            metadata["gt_mat_dir"] = os.path.join(WIDER_FACE_DIR, WIDER_FACE_GT_MAT_DIR)
        MetadataCatalog.get(name).set(**metadata)


# RetinaFace's landmark annotations of WIDER FACE train; the val landmarks were never published.
WIDER_FACE_LANDMARKS = (
    "widerface_train_landmarks",
    "WIDER_train/images",
    "retinaface_gt_v1.1/train/label.txt",
)


def register_wider_face_landmarks() -> None:
    name, image_dir, label_file = WIDER_FACE_LANDMARKS

    def load():
        return load_retinaface_labels(
            _require_file(_under_root(WIDER_FACE_DIR, label_file), name),
            _under_root(WIDER_FACE_DIR, image_dir),
        )

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        thing_classes=_FACE_CLASSES,
        evaluator_type="widerface",
        image_root=os.path.join(WIDER_FACE_DIR, image_dir),
        gt_file=os.path.join(WIDER_FACE_DIR, label_file),
        **landmark_metadata(),
    )


def register_all_fddb() -> None:
    folds = {f"fddb_fold_{fold}": [fold] for fold in range(1, NUM_FOLDS + 1)}
    folds["fddb"] = list(range(1, NUM_FOLDS + 1))
    for name, fold_numbers in folds.items():
        fold_files = [os.path.join("FDDB-folds", fold_file_name(fold)) for fold in fold_numbers]

        def load_folds(name=name, fold_files=fold_files):
            return load_fddb(
                [_require_file(_under_root(FDDB_DIR, f), name) for f in fold_files],
                _under_root(FDDB_DIR, "originalPics"),
            )

        DatasetCatalog.register(name, load_folds)
        MetadataCatalog.get(name).set(
            thing_classes=_FACE_CLASSES,
            evaluator_type="fddb",
            image_root=os.path.join(FDDB_DIR, "originalPics"),
            gt_files=[os.path.join(FDDB_DIR, f) for f in fold_files],
        )


# Dataset name -> (its folder under the root, the toolbox's name of the benchmark).
_FACE_BENCHMARKS = {"afw": ("afw", "afw"), "pascal_face": ("pascal_face", "pascal")}


def register_all_face_benchmarks() -> None:
    for name, (folder, benchmark) in _FACE_BENCHMARKS.items():
        gt_file = os.path.join(folder, BENCHMARKS[benchmark])

        def load(name=name, folder=folder, gt_file=gt_file):
            return load_face_benchmark(
                _require_file(_under_root(gt_file), name), _under_root(folder, "images")
            )

        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(
            thing_classes=_FACE_CLASSES,
            evaluator_type="face_benchmark",
            image_root=os.path.join(folder, "images"),
            gt_file=gt_file,
        )


def register_all_mini_faces() -> None:
    for split in SPLIT_SIZES:
        name = f"mini_faces_{split}"

        def load_split(split=split):
            image_root, gt_file, label_file = mini_faces_split_paths(
                ensure_mini_faces(datasets_root()), split
            )
            return attach_landmarks(load_wider_face(gt_file, image_root), label_file, image_root)

        DatasetCatalog.register(name, load_split)
        image_root, gt_file, label_file = mini_faces_split_paths(MINI_FACES_DIR, split)
        MetadataCatalog.get(name).set(
            thing_classes=_FACE_CLASSES,
            evaluator_type="widerface",
            image_root=image_root,
            gt_file=gt_file,
            landmark_file=label_file,
            difficulty_by_size=DIFFICULTY_BY_SIZE,
            **landmark_metadata(),
        )


register_all_wider_face()
register_wider_face_landmarks()
register_all_fddb()
register_all_face_benchmarks()
register_all_mini_faces()
