"""PDG's generated pairs as a dataset folder the readers load (``jsonl`` format, docs/data-formats.md).

``OUT/annotations.jsonl`` holds one training record per generated pair: the generated image under
``OUT/imgs/``, the edited caption, and the pair's new person id (``plan``: no id of the source dataset);
a ``pdg`` field keeps where it came from (source person, image and caption, the edit, the seed). The
readers ignore that field. Train on the folder by itself (``data.path``) or beside the source dataset
as an extra training source (``data.extra_train: [OUT]``, ``tbpr.data.sources``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tbpr.atomic import write_text
from tbpr.generate.images.pdg.plan import PlannedPair

ANNOTATIONS = "annotations.jsonl"
IMAGES = "imgs"


def pair_record(pair: PlannedPair, image: str) -> dict:
    """The annotation record of ``pair`` whose generated image is ``IMAGES/image``."""
    source = pair.source
    return {
        "file_path": image,
        "id": pair.pid,
        "split": "train",
        "captions": [pair.caption],
        "pdg": {
            "source_person": source.person,
            "source_image": source.image,
            "source_caption_id": source.caption_id,
            "source_caption": source.caption,
            "pair": pair.index,
            "edit": pair.edit.to_json(),
            "seed": pair.seed,
        },
    }


def write_pairs_dataset(out: str | Path, pairs: Iterable[tuple[PlannedPair, str]]) -> int:
    """Write ``OUT/annotations.jsonl`` for ``(pair, image path under OUT/imgs)`` rows, ordered by person
    id; the number of pairs written. The images must be there already."""
    rows = sorted(pairs, key=lambda row: row[0].pid)
    lines = [json.dumps(pair_record(pair, image), ensure_ascii=False) + "\n" for pair, image in rows]
    write_text(Path(out) / ANNOTATIONS, "".join(lines))
    return len(lines)
