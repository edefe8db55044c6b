"""A contact sheet of a generated SynthPedes folder: a few identities, several images each, a caption."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from tbpr.atomic import atomic_write
from tbpr.data.synthpedes.render import HEIGHT, WIDTH

TEXT_WIDTH = 330


def _pick_identities(identities: dict[str, dict], n: int) -> list[int]:
    """Start with a hard-negative pair (source then negative), then the lowest other pids."""
    chosen: list[int] = []
    for pid, info in identities.items():
        if info["hard_negative_of"] is not None:
            chosen = [info["hard_negative_of"], int(pid)]
            break
    chosen += [int(pid) for pid in identities if int(pid) not in chosen]
    return chosen[:n]


def contact_sheet(dataset_dir: str | Path, n_ids: int = 6, per_id: int = 4) -> Image.Image:
    """One row per identity: ``per_id`` images and the first caption of the first image."""
    root = Path(dataset_dir)
    truth = json.loads((root / "attributes.json").read_text(encoding="utf-8"))
    by_pid: dict[int, list[str]] = {}
    for file_path, info in truth["images"].items():
        by_pid.setdefault(info["id"], []).append(file_path)
    pids = _pick_identities(truth["identities"], n_ids)
    sheet = Image.new("RGB", (per_id * WIDTH + TEXT_WIDTH, len(pids) * HEIGHT), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=14)
    for row, pid in enumerate(pids):
        for col, file_path in enumerate(by_pid[pid][:per_id]):
            with Image.open(root / "imgs" / file_path) as img:
                sheet.paste(img.convert("RGB"), (col * WIDTH, row * HEIGHT))
        info = truth["identities"][str(pid)]
        title = f"id {pid} ({info['split']})"
        if info["hard_negative_of"] is not None:
            title += f": hard negative of id {info['hard_negative_of']}, other {info['differs_in']}"
        caption = truth["images"][by_pid[pid][0]]["captions"][0]["text"]
        lines = textwrap.wrap(title, 38) + [""] + textwrap.wrap(caption, 38)
        draw.multiline_text(
            (per_id * WIDTH + 10, row * HEIGHT + 10), "\n".join(lines), fill="black", font=font, spacing=3
        )
        draw.line([(0, row * HEIGHT), (sheet.width, row * HEIGHT)], fill=(200, 200, 200), width=1)
    return sheet


def write_contact_sheet(dataset_dir: str | Path, path: str | Path, n_ids: int = 6, per_id: int = 4) -> Path:
    """Save :func:`contact_sheet` as a PNG (atomically) and return its path."""
    sheet = contact_sheet(dataset_dir, n_ids, per_id)
    return atomic_write(path, lambda fh: sheet.save(fh, format="PNG"))
