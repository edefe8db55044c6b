"""The image files of a folder, safely: regular files inside it only; everything else skipped and listed.

A gallery or crops folder is untrusted input: a dangling link, a link out of the folder, a FIFO named
``.jpg`` (which blocks whoever opens it) and a file name that is not UTF-8 are skipped with a reason
instead of crashing or hanging the command, and links out of the folder are never read.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from tbpr.data.readers import summarize
from tbpr.errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})


@dataclass(frozen=True)
class ImageFile:
    """An image file: ``path`` is POSIX and relative to the folder; ``stat`` is of the file (links followed)."""

    path: str
    stat: os.stat_result


def within(root: str, path: str) -> bool:
    """Whether the real path of ``path`` lies inside the real folder ``root``."""
    return os.path.commonpath([root, os.path.realpath(path)]) == root


def not_regular(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as an image file without blocking (None: it is a regular file)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "dangling symbolic link" if os.path.islink(path) else "missing"
    return None if stat.S_ISREG(mode) else "not a regular file (a FIFO, socket, device or folder)"


def _problem(root: str, full: str, rel: str) -> str | None:
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "the file name is not valid UTF-8: rename it"
    if os.path.islink(full) and not within(root, full):
        return "symbolic link to outside the folder"
    return not_regular(full)


def list_image_files(folder: str | Path, what: str = "image folder") -> list[ImageFile]:
    """The image files under ``folder`` (recursive; .jpg .jpeg .png .webp in any case), sorted by path.

    Links are followed when their target is a regular file inside the folder; other entries with an
    image suffix are skipped, and listed in one warning.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{what} {folder} does not exist or is not a folder")
    root = os.path.realpath(folder)
    found, skipped = [], []
    for current, _dirs, names in os.walk(folder):
        for name in names:
            if os.path.splitext(name)[1].lower() not in IMAGE_SUFFIXES:
                continue
            full = os.path.join(current, name)
            rel = Path(os.path.relpath(full, folder)).as_posix()
            problem = _problem(root, full, rel)
            if problem:
                skipped.append(f"{os.fsencode(rel).decode('utf-8', 'backslashreplace')} ({problem})")
            else:
                found.append(ImageFile(rel, os.stat(full)))
    if skipped:
        log.warning(
            "skipped %s", summarize(f"entries under {folder} that are not image files in it", skipped)
        )
    return sorted(found, key=lambda f: f.path)


def read_unchanged(folder: str | Path, rel: str, size: int, mtime_ns: int, ino: int | None) -> bytes:
    """The bytes of ``folder/rel`` if it is still the regular file inside ``folder`` that was recorded
    (size, mtime and inode); DataError saying what changed otherwise. Checked on the opened file."""
    root = os.path.realpath(folder)
    path = os.path.realpath(os.path.join(root, rel))
    if not within(root, path):
        raise DataError(f"{rel} now leads outside the image folder")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO must not block us
    except FileNotFoundError:
        raise DataError(f"{rel} is missing from the image folder") from None
    except OSError as err:
        raise DataError(f"{rel} cannot be opened ({err.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        now = os.fstat(fh.fileno())
        if (
            not stat.S_ISREG(now.st_mode)
            or (now.st_size, now.st_mtime_ns) != (size, mtime_ns)
            or (ino is not None and now.st_ino != ino)
        ):
            raise DataError(
                f"{rel} is not the file that was indexed (it changed since): run `tbpr index update`"
            )
        return fh.read()
