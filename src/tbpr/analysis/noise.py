"""Does clean-sample division find the moved pairs? Precision, recall and F1 of the noisy set per epoch.

Reads the divisions a run wrote (``RUN/noise/epoch-NNN.npz``: caption ids and their clean flag, see
``tbpr.train.noise``) and the attributes.json of a SynthPedes set made with ``tbpr synth --pair-noise P``,
where each caption records ``pair_noise`` (null on its own image, else where it came from). A pair is
truly noisy when its caption was moved; the division's noisy set is the pairs it did not call clean.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from tbpr.data import read_dataset
from tbpr.errors import DataError
from tbpr.train.noise import load_division

log = logging.getLogger(__name__)


def moved_captions(data: Path) -> dict[int, bool]:
    """{caption id: its caption was moved by pair noise} for the captions of ``data`` attributes.json knows."""
    path = Path(data) / "attributes.json"
    if not path.is_file():
        raise DataError(f"{path}: not found; generate the data with `tbpr synth --pair-noise P`")
    images = json.loads(path.read_text()).get("images", {})
    moved = {
        (img, cap["text"]): cap.get("pair_noise") is not None
        for img, rec in images.items()
        for cap in rec["captions"]
    }
    manifest = read_dataset(data)
    image_path = {rec.id: rec.path for rec in manifest.images}
    found = {c.id: moved.get((image_path[c.image_id], c.text)) for c in manifest.captions}
    return {cid: flag for cid, flag in found.items() if flag is not None}


def detection_scores(flagged: np.ndarray, noisy: np.ndarray) -> dict[str, float | None]:
    """Precision, recall and F1 (percent) of ``flagged`` as a detector of ``noisy``; None where undefined
    (precision: nothing flagged; recall: nothing noisy; F1: either)."""
    hits = int((flagged & noisy).sum())
    precision = 100 * hits / int(flagged.sum()) if flagged.any() else None
    recall = 100 * hits / int(noisy.sum()) if noisy.any() else None
    f1 = None
    if precision is not None and recall is not None:
        f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def noise_detection_table(run: Path, data: Path) -> list[dict]:
    """One row per division the run wrote: pairs scored, truly noisy, flagged noisy, precision, recall, F1."""
    files = sorted((Path(run) / "noise").glob("epoch-*.npz"))
    if not files:
        raise DataError(f"{run}/noise has no epoch-NNN.npz: train with noise.division=gmm")
    truth = moved_captions(data)
    rows = []
    for path in files:
        record = load_division(path)
        ids = record["caption_ids"].tolist()
        known = np.array([cid in truth for cid in ids])
        if not known.all():
            log.warning("%s: %d captions unknown to %s/attributes.json skipped", path, (~known).sum(), data)
        noisy = np.array([truth[cid] for cid in ids if cid in truth], dtype=bool)
        flagged = ~record["clean"].astype(bool)[known]
        rows.append(
            {
                "epoch": int(record["epoch"]),
                "pairs": int(known.sum()),
                "noisy": int(noisy.sum()),
                "flagged": int(flagged.sum()),
                **detection_scores(flagged, noisy),
            }
        )
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| epoch | pairs | noisy | flagged noisy | precision | recall | F1 |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['epoch']} | {r['pairs']} | {r['noisy']} | {r['flagged']} "
            + "".join(f"| {_percent(r[key])} " for key in ("precision", "recall", "f1"))
            + "|"
        )
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
