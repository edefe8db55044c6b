"""A folder of person crops as a gallery: its image files, their ids, content hashes and a Manifest."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from tbpr.data.check import image_problem
from tbpr.data.image_files import list_image_files
from tbpr.data.schema import ImageRecord, Manifest


@dataclass(frozen=True)
class FileStat:
    """One image file: ``path`` is POSIX and relative to the gallery folder; size and mtime are the
    cheap change check done before hashing; ``ino`` (0: not recorded) identifies the file at serve time."""

    path: str
    size: int
    mtime_ns: int
    ino: int = 0


def image_id(rel_path: str) -> str:
    """The stable id of a gallery image: the first 16 hex digits of sha1 of its relative POSIX path."""
    return hashlib.sha1(rel_path.encode("utf-8")).hexdigest()[:16]


def scan_folder(images_dir: Path) -> list[FileStat]:
    """Every image file under ``images_dir`` (see ``list_image_files``: others are skipped and listed)."""
    return [
        FileStat(f.path, f.stat.st_size, f.stat.st_mtime_ns, f.stat.st_ino)
        for f in list_image_files(images_dir, "image folder")
    ]


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def inspect_file(path: Path) -> tuple[str, str | None]:
    """(sha256, None) for a decodable image, (sha256 or '', why) for one that is not."""
    try:
        sha = file_sha256(path)
    except OSError as err:
        return "", f"{type(err).__name__}: {err}"
    return sha, image_problem(path)


def gallery_manifest(images_dir: Path, paths: list[str]) -> Manifest:
    """A captionless test-split Manifest of gallery images (person id -1: unknown) for the encoders."""
    images = [ImageRecord(id=i, path=p, pid=-1, split="test") for i, p in enumerate(paths)]
    return Manifest(Path(images_dir).name, Path(images_dir), images, [])
