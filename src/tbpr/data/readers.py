"""Dataset readers: one mechanism, configured per annotation format by a ``FormatSpec``.

A dataset PATH is the folder holding the annotation file and ``imgs/``, as the benchmarks are
distributed. Every format is a list of records ``{split, captions, <image field>, id}``; they
differ only in the annotation file's name, its image-path field and JSON vs JSON Lines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from tbpr.data.schema import CaptionRecord, ImageRecord, Manifest, canonical_split
from tbpr.errors import DataError

MAX_EXAMPLES = 10  # problems quoted in one error message; the rest are counted
MAX_CAPTION_CHARS = 10_000  # far beyond any description (CUHK-PEDES: ~25 words); more is broken data
MAX_PID = 2**63 - 1  # person ids become int64 tensors


@dataclass(frozen=True)
class FormatSpec:
    """How one annotation format spells the common record layout."""

    name: str
    annotation_files: tuple[str, ...]  # accepted file names, the first is the canonical one
    image_field: str  # the record field holding the image path relative to ``image_dir``
    json_lines: bool = False  # one JSON object per line instead of one JSON list
    image_dir: str = "imgs"
    id_field: str = "id"
    split_field: str = "split"
    captions_field: str = "captions"


FORMATS: dict[str, FormatSpec] = {}


def register_format(spec: FormatSpec) -> FormatSpec:
    """Add a format to the registry (looked up case-insensitively by name)."""
    FORMATS[spec.name.lower()] = spec
    return spec


register_format(FormatSpec("cuhk-pedes", ("reid_raw.json",), "file_path"))
register_format(FormatSpec("icfg-pedes", ("ICFG-PEDES.json", "ICFG_PEDES.json"), "file_path"))
register_format(FormatSpec("rstpreid", ("data_captions.json",), "img_path"))
register_format(FormatSpec("jsonl", ("annotations.jsonl",), "file_path", json_lines=True))


def get_format(name: str) -> FormatSpec:
    try:
        return FORMATS[name.lower()]
    except KeyError:
        raise DataError(f"unknown dataset format {name!r}; known formats: {sorted(FORMATS)}") from None


def find_annotation(path: str | Path, format: str | None = None) -> tuple[FormatSpec, Path]:
    """The format and annotation file of dataset folder ``path`` (recognized by file name)."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(
            f"dataset folder {root} does not exist (expected a folder with an annotation file and imgs/)"
        )
    specs = [get_format(format)] if format else list(FORMATS.values())
    for spec in specs:
        for file_name in spec.annotation_files:
            if (root / file_name).is_file():
                return spec, root / file_name
    expected = ", ".join(f"{n} ({spec.name})" for spec in specs for n in spec.annotation_files)
    raise DataError(f"no annotation file in {root}: expected one of {expected}")


def load_annotations(spec: FormatSpec, file: Path) -> tuple[list[tuple[str, object]], list[str]]:
    """The raw records of ``file`` as (location, object) pairs, and syntax problems.

    A malformed JSON file yields no records and one problem with its line/column; a JSON Lines
    file yields every parsable line and one problem per malformed line.
    """
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        return [], [f"{file}: not UTF-8 text (byte {err.start}): {err.reason}"]
    if spec.json_lines:
        records, problems = [], []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((f"line {lineno}", json.loads(line)))
            except json.JSONDecodeError as err:
                problems.append(f"{file}: line {lineno}: invalid JSON at column {err.colno}: {err.msg}")
            except RecursionError:
                problems.append(f"{file}: line {lineno}: {TOO_DEEP}")
        return records, problems
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        return [], [f"{file}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}"]
    except RecursionError:
        return [], [f"{file}: {TOO_DEEP}"]
    if not isinstance(data, list):
        return [], [f"{file}: expected a JSON list of records, got {type(data).__name__}"]
    return [(f"record {i}", rec) for i, rec in enumerate(data)], []


TOO_DEEP = "JSON nested too deeply to read (a record is a flat object); the file is broken"


def inside_image_dir(path: str) -> bool:
    """Whether ``path`` is relative and stays inside the image folder (no absolute path, drive or ``..``)."""
    parts = path.replace("\\", "/").split("/")
    return bool(path) and not path.startswith(("/", "\\")) and ":" not in parts[0] and ".." not in parts


def record_problems(spec: FormatSpec, record: object) -> list[str]:
    """What is missing, wrongly typed or out of range in one raw record (empty when it is usable)."""
    if not isinstance(record, dict):
        return [f"expected a JSON object, got {type(record).__name__}"]
    expected = (
        (
            spec.id_field,
            f"an integer from 0 to {MAX_PID}",
            lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_PID,
        ),
        (spec.split_field, "a string", lambda v: isinstance(v, str)),
        (
            spec.image_field,
            f"a path relative to {spec.image_dir}/ that stays inside it (no leading / and no ..)",
            lambda v: isinstance(v, str) and inside_image_dir(v),
        ),
        (
            spec.captions_field,
            f"a list of strings of at most {MAX_CAPTION_CHARS} characters",
            lambda v: (
                isinstance(v, list) and all(isinstance(c, str) and len(c) <= MAX_CAPTION_CHARS for c in v)
            ),
        ),
    )
    problems = []
    for name, kind, valid in expected:
        if name not in record:
            problems.append(f"field {name!r} is missing")
        elif not valid(record[name]):
            problems.append(f"field {name!r} must be {kind}, got {json.dumps(record[name])[:60]}")
    return problems


def contiguous_train_pids(images: list[ImageRecord]) -> list[ImageRecord]:
    """Training person ids renumbered 0..N-1 in sorted order; the other splits keep theirs."""
    order = {pid: i for i, pid in enumerate(sorted({im.pid for im in images if im.split == "train"}))}
    return [replace(im, pid=order[im.pid]) if im.split == "train" else im for im in images]


def build_manifest(
    name: str, image_root: Path, spec: FormatSpec, records: list[dict], annotation_file: Path | None = None
) -> Manifest:
    """The manifest of valid raw records: split mapping, train pid remapping, sequential ids."""
    images, captions = [], []
    for image_id, rec in enumerate(records):
        split = canonical_split(rec[spec.split_field])
        images.append(ImageRecord(image_id, rec[spec.image_field], rec[spec.id_field], split))
        for text in rec[spec.captions_field]:
            captions.append(CaptionRecord(len(captions), image_id, text, "human"))
    return Manifest(name, image_root, contiguous_train_pids(images), captions, annotation_file)


def summarize(title: str, problems: list[str]) -> str:
    """One message for a list of problems: the count, then the first ``MAX_EXAMPLES``."""
    shown = "; ".join(problems[:MAX_EXAMPLES])
    more = f"; ... and {len(problems) - MAX_EXAMPLES} more" if len(problems) > MAX_EXAMPLES else ""
    return f"{len(problems)} {title}: {shown}{more}"


@dataclass
class Annotations:
    """What an annotation file holds: the manifest of its usable records, and what is wrong.

    ``raw_pids[i]`` is the annotation's person id of ``manifest.images[i]`` (before remapping).
    """

    spec: FormatSpec
    file: Path
    manifest: Manifest
    raw_pids: list[int]
    problems: list[str]
    skipped_records: int


def read_annotations(path: str | Path, format: str | None = None) -> Annotations:
    """Read dataset folder ``path`` keeping every usable record and listing structural problems.

    Syntax problems come first; then one summary of the records skipped for missing or
    wrongly typed fields (located by record index, or line number in JSON Lines).
    """
    spec, file = find_annotation(path, format)
    raw, problems = load_annotations(spec, file)
    records, field_problems, skipped = [], [], 0
    for location, rec in raw:
        bad = record_problems(spec, rec)
        field_problems.extend(f"{location}: {p}" for p in bad)
        if bad:
            skipped += 1
        else:
            records.append(rec)
    if field_problems:
        problems.append(f"{file}: " + summarize("record field problems", field_problems))
    if not raw and not problems:
        problems.append(f"{file}: no records (an empty list): nothing to train or evaluate on")
    root = Path(path)
    manifest = build_manifest(root.resolve().name, root / spec.image_dir, spec, records, file)
    return Annotations(spec, file, manifest, [rec[spec.id_field] for rec in records], problems, skipped)


def read_dataset(path: str | Path, format: str | None = None) -> Manifest:
    """The manifest of dataset folder ``path``; ``format`` overrides recognition by file name.

    Raises ``DataError`` if the annotation file is malformed (``tbpr data check PATH`` reports
    every problem, including missing images, at once).
    """
    annotations = read_annotations(path, format)
    if annotations.problems:
        hint = f" (run `tbpr data check {path}` for a full report)"
        raise DataError("; ".join(annotations.problems) + hint)
    return annotations.manifest
