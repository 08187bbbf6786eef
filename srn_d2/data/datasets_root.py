"""Where the face datasets live on disk."""

import os

DATASETS_ENV = "SRN_DATASETS"


def datasets_root() -> str:
    """The datasets root: ``$SRN_DATASETS``, else ``datasets`` relative to the working directory.

    Read on every call (not cached at import) so that a dataset resolves its
    files when it is loaded, like Detectron2's ``DETECTRON2_DATASETS``.
    """
    return os.path.expanduser(os.getenv(DATASETS_ENV, "datasets"))


def resolve_dataset_path(path: str) -> str:
    """A path from dataset metadata: relative ones lie under :func:`datasets_root`, read now."""
    return os.path.join(datasets_root(), os.path.expanduser(path))
