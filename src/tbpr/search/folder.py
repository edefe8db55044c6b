"""A folder of person crops as a gallery: its image files, their ids, content hashes and a Manifest."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from tbpr.data.check import image_problem
from tbpr.data.schema import ImageRecord, Manifest
from tbpr.errors import DataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})


@dataclass(frozen=True)
class FileStat:
    """One image file: ``path`` is POSIX and relative to the gallery folder; size and mtime are the
    cheap change check done before hashing."""

    path: str
    size: int
    mtime_ns: int


def image_id(rel_path: str) -> str:
    """The stable id of a gallery image: the first 16 hex digits of sha1 of its relative POSIX path."""
    return hashlib.sha1(rel_path.encode("utf-8")).hexdigest()[:16]


def scan_folder(images_dir: Path) -> list[FileStat]:
    """Every image under ``images_dir`` (recursive; .jpg .jpeg .png .webp in any case), sorted by path."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise DataError(f"image folder {images_dir} does not exist or is not a folder")
    found = []
    for folder, _dirs, names in os.walk(images_dir):
        for name in names:
            if os.path.splitext(name)[1].lower() not in IMAGE_SUFFIXES:
                continue
            full = os.path.join(folder, name)
            stat = os.stat(full)
            found.append(
                FileStat(Path(full).relative_to(images_dir).as_posix(), stat.st_size, stat.st_mtime_ns)
            )
    return sorted(found, key=lambda f: f.path)


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
