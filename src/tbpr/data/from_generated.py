"""Training sets from image generation stores (``tbpr generate persons`` / ``edit`` / ``pairs``): one record
per accepted image, its identity shared by the images of one prompt and their edits (a PDG pair is an
identity of its own).

Written like ``tbpr data from-captions`` (``annotations.jsonl`` in the jsonl format, ``imgs`` linking to the
stores' folder). Captions are a record's ``caption`` when it has one (a PDG pair: the edited caption its
image shows), else the construction prompts (an edit keeps its source's prompt: the edit changes the
background, weather, style or posture, which captions do not describe), or, with ``caption_store``, the
accepted captions ``tbpr caption`` wrote for the stores' folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tbpr.data.caption_store import CaptionStore
from tbpr.data.from_captions import captions_by_image, write_training_set
from tbpr.errors import DataError


@dataclass
class FromGeneratedSummary:
    images: int
    identities: int
    captions: int
    without_captions: int  # accepted images with no caption (no prompt, or none in the caption store)

    def line(self, out: str) -> str:
        return (
            f"{out}: {self.images} images of {self.identities} identities, {self.captions} captions; "
            f"{self.without_captions} images without a caption left out"
        )


def build_from_generated(
    stores: list[str | Path], out: str | Path, caption_store: str | Path | None = None
) -> FromGeneratedSummary:
    """Write the dataset folder ``out`` from the accepted images of ``stores`` (all in one folder)."""
    paths = [Path(s) for s in stores]
    folders = {p.resolve().parent for p in paths}
    if len(folders) != 1:
        raise DataError(
            f"generation stores {[str(p) for p in paths]} are in different folders; put them in one"
        )
    folder = folders.pop()
    captioned: dict[str, list[str]] = {}
    if caption_store is not None:
        image_paths, texts = captions_by_image(caption_store)
        captioned = {image_paths[cid]: texts[cid] for cid in texts if texts[cid]}
    images: dict[str, tuple[int, list[str]]] = {}  # image file -> identity, captions
    without = 0
    for path in paths:
        store = CaptionStore(path)
        if not store.path.is_file():
            raise DataError(
                f"generation store {store.path} does not exist; fill it with `tbpr generate persons`"
            )
        for rec in store:
            if not rec.accepted or rec.text in images:
                continue
            prompt = rec.extra.get("caption") or rec.extra.get("source_caption") or rec.extra.get("prompt")
            captions = (
                captioned.get(rec.text, []) if caption_store is not None else [prompt] if prompt else []
            )
            if not captions:
                without += 1
                continue
            images[rec.text] = (int(rec.extra.get("identity_id", rec.caption_id)), captions)
    if not images:
        raise DataError(f"generation stores {[str(p) for p in paths]} hold no accepted image with a caption")
    ids = {identity: k for k, identity in enumerate(sorted({i for i, _ in images.values()}))}
    rows = [
        {"file_path": file, "id": ids[identity], "split": "train", "captions": captions}
        for file, (identity, captions) in sorted(images.items(), key=lambda item: (ids[item[1][0]], item[0]))
    ]
    write_training_set(Path(out), folder, rows)
    return FromGeneratedSummary(len(rows), len(ids), sum(len(r["captions"]) for r in rows), without)
