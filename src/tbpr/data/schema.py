"""The canonical dataset schema every reader produces and every stage consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "val", "test")


def canonical_split(raw: str) -> str:
    """Map an annotation's split name to 'train', 'test' or 'val' as the field does."""
    if raw == "train":
        return "train"
    if raw == "test":
        return "test"
    return "val"


@dataclass(frozen=True)
class ImageRecord:
    """One image: ``path`` is relative to the dataset's image folder, or to ``root`` when set (an image
    of another dataset added as an extra training source, ``tbpr.data.sources``); ``pid`` the person id."""

    id: int
    path: str
    pid: int
    split: str
    root: Path | None = None


@dataclass(frozen=True)
class CaptionRecord:
    """One caption of one image; ``source`` says where it came from (e.g. 'human')."""

    id: int
    image_id: int
    text: str
    source: str = "human"


@dataclass
class Manifest:
    """A dataset: its image folder, its images and their captions.

    In the training split person ids are contiguous 0..N-1 (remapped by the reader);
    in the other splits they are the raw ids of the annotation file.
    """

    name: str
    image_root: Path
    images: list[ImageRecord]
    captions: list[CaptionRecord]
    annotation_file: Path | None = None
    _image_index: dict[int, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._image_index = {rec.id: i for i, rec in enumerate(self.images)}

    def image(self, image_id: int) -> ImageRecord:
        return self.images[self._image_index[image_id]]

    def image_path(self, rec: ImageRecord) -> Path:
        return (rec.root or self.image_root) / rec.path

    def split(self, name: str) -> Manifest:
        """The sub-manifest of one split (captions follow their images)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        images = [rec for rec in self.images if rec.split == name]
        keep = {rec.id for rec in images}
        captions = [c for c in self.captions if c.image_id in keep]
        return Manifest(self.name, self.image_root, images, captions, self.annotation_file)

    def caption_pids(self) -> list[int]:
        return [self.image(c.image_id).pid for c in self.captions]

    def num_ids(self) -> int:
        return len({rec.pid for rec in self.images})
