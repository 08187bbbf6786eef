"""Keeping file names from input data inside the folders they are meant for."""
import os


def check_relative_path(path: str, source: str) -> str:
    """``path``, if joining it to a folder stays inside that folder; else ValueError naming ``source``.

    Image paths in annotation files become image ids, and image ids become the
    names of the files an evaluation writes: an absolute path or a ".." would
    let an annotation file choose a file anywhere to overwrite.
    """
    parts = path.replace("\\", "/").split("/")
    if os.path.isabs(path) or path.startswith(("/", "\\")) or ":" in parts[0] or ".." in parts:
        raise ValueError(
            f"{source}: image path {path!r} is absolute or climbs out of the image folder; "
            "image paths must be relative to it"
        )
    return path


def join_inside(folder: str, relative: str) -> str:
    """``os.path.join(folder, relative)``, refusing any result outside ``folder`` (links resolved)."""
    path = os.path.join(folder, relative)
    root = os.path.realpath(folder)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise ValueError(f"refusing to write {relative!r}: it would land outside {folder}")
    return path
