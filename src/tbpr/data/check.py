"""Validate a dataset completely and report every problem at once; load only data that passes.

Errors make data unusable as given (malformed annotations, missing or undecodable images,
empty captions, person ids in more than one split). Warnings are legal but suspicious
(a caption repeated for the same image, an image without captions).
"""

from __future__ import annotations

import logging
import posixpath
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from tbpr.data.image_files import not_regular
from tbpr.data.readers import contiguous_train_pids, read_annotations, summarize
from tbpr.data.schema import Manifest
from tbpr.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# Which split keeps a person id found in several: the others' images are the bad ones, so a
# skip_bad load never moves a test identity into training.
_SPLIT_PRECEDENCE = {"test": 0, "val": 1, "train": 2}


@dataclass
class CheckReport:
    """The outcome of ``check_dataset``: problems as messages and the records they concern."""

    dataset: Path
    annotation_file: Path
    format: str
    manifest: Manifest
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    bad_image_ids: set[int] = field(default_factory=set)
    bad_caption_ids: set[int] = field(default_factory=set)
    skipped_records: int = 0  # annotation records unusable for missing or wrongly typed fields

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "dataset": str(self.dataset),
            "annotation_file": str(self.annotation_file),
            "format": self.format,
            "images": len(self.manifest.images),
            "captions": len(self.manifest.captions),
            "errors": self.errors,
            "warnings": self.warnings,
            "bad_records": self.skipped_records,
            "bad_images": len(self.bad_image_ids),
            "bad_captions": len(self.bad_caption_ids),
        }


def image_problem(path: Path) -> str | None:
    """None if ``path`` decodes as an image, else 'missing' or why it is unreadable."""
    special = not_regular(path)  # opening a FIFO would block forever
    if special:
        return special
    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:  # verify() does not notice truncated JPEG data; decoding does
            im.load()
    except FileNotFoundError:
        return "missing"
    except Exception as err:  # any decoder failure means the image is unusable
        return f"{type(err).__name__}: {err}"
    return None


def _check_images(report: CheckReport, workers: int | None) -> None:
    manifest = report.manifest
    if not manifest.image_root.is_dir():
        report.errors.append(f"image folder {manifest.image_root} does not exist")
        report.bad_image_ids.update(rec.id for rec in manifest.images)
        return
    paths = [manifest.image_path(rec) for rec in manifest.images]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(
            tqdm(
                pool.map(image_problem, paths),
                total=len(paths),
                desc="checking images",
                unit="img",
                disable=None,
            )
        )
    missing, unreadable = [], []
    for rec, outcome in zip(manifest.images, outcomes):
        if outcome is None:
            continue
        report.bad_image_ids.add(rec.id)
        if outcome == "missing":
            missing.append(rec.path)
        else:
            unreadable.append(f"{rec.path} ({outcome})")
    root = manifest.image_root
    if missing:
        report.errors.append(summarize(f"images missing under {root}", missing))
    if unreadable:
        report.errors.append(summarize(f"images unreadable under {root}", unreadable))


def _check_captions(report: CheckReport) -> None:
    manifest = report.manifest
    empty, duplicate, seen = [], [], set()
    for cap in manifest.captions:
        key = (cap.image_id, " ".join(cap.text.lower().split()))
        if not key[1]:
            empty.append(f"caption {cap.id} of {manifest.image(cap.image_id).path}")
            report.bad_caption_ids.add(cap.id)
        elif key in seen:
            duplicate.append(f"{manifest.image(cap.image_id).path}: {cap.text[:60]!r}")
        seen.add(key)
    captioned = {c.image_id for c in manifest.captions}
    uncaptioned = [rec.path for rec in manifest.images if rec.id not in captioned]
    if empty:
        report.errors.append(summarize("empty captions", empty))
    if duplicate:
        report.warnings.append(summarize("captions repeating one of the same image", duplicate))
    if uncaptioned:
        report.warnings.append(summarize("images without captions", uncaptioned))


def _check_split_ids(report: CheckReport, raw_pids: list[int]) -> None:
    splits_of: dict[int, set[str]] = defaultdict(set)
    for rec, pid in zip(report.manifest.images, raw_pids):
        splits_of[pid].add(rec.split)
    shared = {pid: splits for pid, splits in splits_of.items() if len(splits) > 1}
    if not shared:
        return
    keep = {pid: min(splits, key=_SPLIT_PRECEDENCE.__getitem__) for pid, splits in shared.items()}
    for rec, pid in zip(report.manifest.images, raw_pids):
        if pid in keep and rec.split != keep[pid]:
            report.bad_image_ids.add(rec.id)
    examples = [f"id {pid} ({', '.join(sorted(shared[pid]))})" for pid in sorted(shared)]
    report.errors.append(summarize("person ids in more than one split", examples))


def _check_duplicate_images(report: CheckReport, raw_pids: list[int]) -> None:
    """An image file listed by several records: one record too many (or two identities for one person)."""
    records: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(report.manifest.images):
        records[posixpath.normpath(rec.path.replace("\\", "/"))].append(i)
    examples = []
    for path, where in records.items():
        if len(where) < 2:
            continue
        pids = sorted({raw_pids[i] for i in where})
        # the same person: keep the first record; different persons: which one is right is unknown
        drop = where[1:] if len(pids) == 1 else where
        report.bad_image_ids.update(report.manifest.images[i].id for i in drop)
        examples.append(f"{path} ({len(where)} records, person id{'s' if len(pids) > 1 else ''} {pids})")
    if examples:
        report.errors.append(summarize("images listed in more than one record", examples))


def check_dataset(
    path: str | Path, format: str | None = None, workers: int | None = None, split: str | None = None
) -> CheckReport:
    """Check annotations, images (each opened and decoded, ``workers`` threads), captions and splits;
    with ``split``, the images and captions of that split only (what evaluating it reads).

    Raises ``DataError`` only when there is nothing to check (no folder or annotation file).
    """
    annotations = read_annotations(path, format)
    manifest, raw_pids = annotations.manifest, annotations.raw_pids
    if split is not None:
        manifest = manifest.split(split)
        kept = {rec.id for rec in manifest.images}
        raw_pids = [pid for rec, pid in zip(annotations.manifest.images, raw_pids) if rec.id in kept]
    report = CheckReport(
        Path(path),
        annotations.file,
        annotations.spec.name,
        manifest,
        errors=list(annotations.problems),
        skipped_records=annotations.skipped_records,
    )
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers}: need at least 1 thread to decode images")
    _check_images(report, workers)
    _check_captions(report)
    _check_split_ids(report, raw_pids)
    _check_duplicate_images(report, raw_pids)
    return report


def without_bad(report: CheckReport) -> Manifest:
    """The checked manifest minus bad images, their captions and bad captions (train pids renumbered)."""
    manifest = report.manifest
    images = contiguous_train_pids([rec for rec in manifest.images if rec.id not in report.bad_image_ids])
    kept = {rec.id for rec in images}
    captions = [c for c in manifest.captions if c.image_id in kept and c.id not in report.bad_caption_ids]
    return Manifest(manifest.name, manifest.image_root, images, captions, manifest.annotation_file)


def load_training_manifest(path: str | Path, format: str | None = None, skip_bad: bool = False) -> Manifest:
    """The manifest of dataset ``path`` (all splits) after a full check.

    Data that fails the check is refused unless ``skip_bad``: then the bad records, images and
    captions are dropped (and counted in the log).
    """
    report = check_dataset(path, format)
    for message in report.warnings:
        log.warning("%s: %s", path, message)
    if report.ok:
        return report.manifest
    if not skip_bad:
        raise DataError(
            f"dataset {path} failed the check: "
            + "; ".join(report.errors)
            + "; fix the data, or pass skip_bad=True (--skip-bad; data.skip_bad=true in a recipe)"
            " to drop the bad records, images and captions"
        )
    manifest = without_bad(report)
    log.warning(
        "skipping %d annotation records, %d images and %d captions of %s that failed the check",
        report.skipped_records,
        len(report.manifest.images) - len(manifest.images),
        len(report.manifest.captions) - len(manifest.captions),
        path,
    )
    if not manifest.split("train").captions:
        raise DataError(
            f"dataset {path}: no training captions are left after skipping bad data: "
            + "; ".join(report.errors)
        )
    return manifest


def load_checked_split(path: str | Path, split: str, format: str | None = None) -> Manifest:
    """The ``split`` of dataset ``path`` after checking it (its images decoded): what evaluation reads.

    DataError listing every problem when it fails: a bad test image is one clear error, not a traceback.
    """
    report = check_dataset(path, format, split=split)
    for message in report.warnings:
        log.warning("%s (%s split): %s", path, split, message)
    if not report.ok:
        raise DataError(
            f"dataset {path}, {split} split, failed the check: " + "; ".join(report.errors) + "; fix the "
            f"data (`tbpr data check {path}` lists every problem)"
        )
    return report.manifest
