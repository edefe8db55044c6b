"""``tbpr generate status``: the store status of ``tbpr.generate.status`` plus a contact sheet of the images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from tbpr.atomic import atomic_write
from tbpr.generate.images.store import accepted_images
from tbpr.generate.status import default_status_dir, write_status

CELL = (96, 192)  # thumbnail size
LABEL = 30  # pixels of label under each thumbnail


def contact_sheet(store_path: str | Path, columns: int = 8, limit: int = 32) -> Image.Image | None:
    """The first ``limit`` accepted images in store order, ``columns`` per row, each labelled with its key
    and (for edits) the edit; ``None`` when the store has no accepted image."""
    cells = []
    for rec, path in accepted_images(store_path):
        if len(cells) == limit:
            break
        edit = rec.extra.get("edit")
        label = f"{edit['kind']}={edit['value']}" if isinstance(edit, dict) else rec.key
        label = label if len(label) <= 16 else "..." + label[-13:]
        with Image.open(path) as img:
            cells.append((img.convert("RGB").resize(CELL), label))
    if not cells:
        return None
    rows = (len(cells) + columns - 1) // columns
    w, h = CELL[0], CELL[1] + LABEL
    sheet = Image.new("RGB", (min(columns, len(cells)) * w, rows * h), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=10)
    for i, (img, label) in enumerate(cells):
        x, y = (i % columns) * w, (i // columns) * h
        sheet.paste(img, (x, y))
        draw.text((x + 3, y + CELL[1] + 3), label, fill="black", font=font)
    return sheet


def write_image_status(
    store_path: str | Path, out: str | Path | None = None, examples: int = 3
) -> dict[str, Any]:
    """``write_status`` (summary.json: counts, failures and their reasons per method) and ``contact_sheet.png``
    in ``out`` (default ``STORE.status/``); returns the summary with the written files under ``"files"``."""
    out = Path(out) if out is not None else default_status_dir(store_path)
    summary = write_status(store_path, out, examples)
    sheet = contact_sheet(store_path)
    if sheet is not None:
        png = atomic_write(out / "contact_sheet.png", lambda fh: sheet.save(fh, format="PNG"))
        summary["files"]["contact_sheet"] = str(png)
    return summary
