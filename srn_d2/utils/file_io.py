"""Where srn_d2 reads and writes files: input paths kept inside their folders, and
the one way every output file is written (:func:`atomic_write`).

Every writer (export, converter, checkpoints, evaluation and demo outputs,
generated data) goes through :func:`atomic_write`: the output path is checked
before anything is written (no link, no folder, a writable folder), the content
goes to a hidden file beside the target, and only a complete file is renamed
over it. A crash, a full disk or a failed check afterwards leaves the previous
file byte-identical and no partial file behind.
"""

import contextlib
import errno
import fnmatch
import logging
import os
import shutil
import tempfile
from typing import IO, Iterator

from ..errors import InputError, OutputPathError

logger = logging.getLogger(__name__)

# The longest line a reader of user text files takes. Their lines are a path, a face's numbers or
# a box (under 300 bytes); a longer one is a damaged file, and unbounded it would cost memory in
# proportion to its length at every step that copies or parses it.
MAX_LINE_BYTES = 1 << 20

__all__ = [
    "MAX_LINE_BYTES",
    "check_relative_path",
    "join_inside",
    "check_output_path",
    "check_output_folder",
    "check_run_folder",
    "atomic_write",
    "atomic_write_path",
    "partial_prefix",
    "process_alive",
    "remove_abandoned_partials",
    "write_bytes",
    "write_text",
    "write_image",
    "save_figure",
]


def check_relative_path(path: str, source: str) -> str:
    """``path``, if joining it to a folder stays inside that folder; else ValueError naming ``source``.

    Image paths in annotation files become image ids, and image ids become the
    names of the files an evaluation writes: an absolute path or a ".." would
    let an annotation file choose a file anywhere to overwrite.
    """
    if "\x00" in path:
        raise InputError(f"{source}: image path {path!r} holds a NUL byte, which no file name can")
    parts = path.replace("\\", "/").split("/")
    if os.path.isabs(path) or path.startswith(("/", "\\")) or ":" in parts[0] or ".." in parts:
        raise InputError(
            f"{source}: image path {path!r} is absolute or climbs out of the image folder; "
            "image paths must be relative to it"
        )
    return path


def join_inside(folder: str, relative: str) -> str:
    """``os.path.join(folder, relative)``, refusing any result outside ``folder`` (links resolved)."""
    path = os.path.join(folder, relative)
    root = os.path.realpath(folder)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise InputError(f"refusing to write {relative!r}: it would land outside {folder}")
    return path


def check_output_folder(folder: str) -> str:
    """``folder``, created if missing, if files can be written in it; else OutputPathError naming it."""
    folder = folder or "."
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise OutputPathError(f"{folder}: exists and is not a folder; outputs need a folder")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise OutputPathError(
            f"{folder}: cannot create this output folder ({error.strerror})"
        ) from error
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"{folder}: this output folder is not writable")
    return folder


# What a training or evaluation run writes into OUTPUT_DIR: Detectron2's config dump, logs, metrics
# and event files, and the checkpoints. Detectron2 opens its files as they are, through any link.
RUN_OUTPUTS = (
    "config.yaml",
    "log.txt",
    "log.txt.rank*",
    "metrics.json",
    "events.out.tfevents.*",
    "last_checkpoint",
    "model_*.pth",
)


def check_run_folder(folder: str) -> str:
    """:func:`check_output_folder`, and an OutputPathError naming any of the files a run will write
    there (:data:`RUN_OUTPUTS`) that is a link or a folder: checked before the run starts, not when
    Detectron2 writes through the link or after the schedule, at the final checkpoint."""
    check_output_folder(folder)
    for name in sorted(os.listdir(folder or ".")):
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in RUN_OUTPUTS):
            check_output_path(os.path.join(folder, name))
    return folder


def check_output_path(path: str) -> str:
    """``path``, if :func:`atomic_write` may replace it; else OutputPathError naming it.

    Refused: a link (writing through it would change a file elsewhere; replacing
    it would surprise whoever made it), a folder, a folder that cannot be written.
    The containing folder is created if missing.
    """
    if os.path.islink(path):
        raise OutputPathError(
            f"{path}: is a link; refusing to write through it (remove it or choose another path)"
        )
    if os.path.isdir(path):
        raise OutputPathError(f"{path}: is a folder; cannot write a file there")
    check_output_folder(os.path.dirname(path))
    return path


def _mode_for(path: str) -> int:
    """The permissions the file would get from a plain open(): the old file's, or 0o666 less the umask."""
    if os.path.exists(path):
        return os.stat(path).st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def partial_prefix(path: str) -> str:
    """The name start of this process's temporary files for ``path``: hidden, with the process id,
    which tells a later run whether their writer still lives."""
    return f".{os.path.basename(path)}.{os.getpid()}."


def remove_abandoned_partials(path: str) -> None:
    """Remove the temporary files and folders beside ``path`` (see :func:`partial_prefix`) of writers
    that no longer run: a kill or a lost machine leaves them behind."""
    folder, name = os.path.split(os.path.abspath(path))
    start = f".{name}."
    for entry in os.listdir(folder):
        owner = entry[len(start) :].split(".", 1)[0]
        if (
            not entry.startswith(start)
            or ".partial" not in entry
            or not owner.isdigit()
            or process_alive(int(owner))
        ):
            continue
        abandoned = os.path.join(folder, entry)
        logger.warning(
            f"removing {abandoned}, left by an interrupted write of {name} (process {owner})"
        )
        if os.path.isdir(abandoned) and not os.path.islink(abandoned):
            shutil.rmtree(abandoned, ignore_errors=True)
        else:
            _remove(abandoned)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_write_path(path: str) -> Iterator[str]:
    """A temporary path beside ``path`` to write to, renamed onto ``path`` when the block succeeds.

    For writers that take a file name (``torch.onnx.export``, ``cv2.VideoWriter``);
    the temporary name keeps the extension, which some of them read the format
    from. If the block raises, the temporary file is removed and ``path`` is untouched.
    """
    check_output_path(path)
    folder, name = os.path.split(os.path.abspath(path))
    remove_abandoned_partials(path)
    fd, temporary = tempfile.mkstemp(
        prefix=partial_prefix(path), suffix=".partial" + os.path.splitext(name)[1], dir=folder
    )
    os.close(fd)
    try:
        yield temporary
        if not os.path.isfile(temporary) or os.path.islink(temporary):
            raise OutputPathError(f"{path}: the writer left no file to move into place")
        with open(temporary, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(temporary, _mode_for(path))
        # Checked again just before the rename: a link made meanwhile is not replaced either.
        check_output_path(path)
        os.replace(temporary, path)
    except BaseException as error:
        _remove(temporary)
        if isinstance(error, OSError):
            reason = (
                "the disk is full"
                if error.errno == errno.ENOSPC
                else (error.strerror or str(error))
            )
            raise OSError(
                error.errno, f"{path}: not written ({reason}); any previous file is unchanged"
            ) from error
        raise


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w") -> Iterator[IO]:
    """``open(path, mode)`` that writes beside ``path`` and renames into place (see :func:`atomic_write_path`)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes whole files: mode 'w' or 'wb', not {mode!r}")
    with atomic_write_path(path) as temporary:
        with open(temporary, mode) as f:
            yield f


def write_bytes(path: str, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def write_text(path: str, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def write_image(path: str, image, params=()) -> None:
    """``cv2.imwrite`` through :func:`atomic_write`; the format follows the extension of ``path``."""
    import cv2

    ok, encoded = cv2.imencode(os.path.splitext(path)[1] or ".png", image, list(params))
    if not ok:
        raise OutputPathError(
            f"{path}: OpenCV cannot encode an image of shape {image.shape} for this extension"
        )
    write_bytes(path, encoded.tobytes())


def save_figure(fig, path: str, dpi: int = 100) -> None:
    """``fig.savefig(path)`` through :func:`atomic_write`."""
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format=os.path.splitext(path)[1][1:] or "png", dpi=dpi)
