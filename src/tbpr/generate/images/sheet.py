"""``tbpr generate status``: the store status of ``tbpr.generate.status`` plus a contact sheet of the images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from tbpr.atomic import atomic_write
from tbpr.data.caption_store import StoreRecord
from tbpr.generate.images.store import accepted_images
from tbpr.generate.status import default_status_dir, write_status

CELL = (96, 192)  # thumbnail size
LABEL = 30  # pixels of label under each thumbnail: two lines
MARGIN = 3  # pixels between a cell's edge and its label


def contact_sheet(store_path: str | Path, columns: int = 8, limit: int = 32) -> Image.Image | None:
    """The first ``limit`` accepted images in store order, ``columns`` per row, each labelled
    (``cell_label``); ``None`` when the store has no accepted image."""
    font = label_font()
    cells = []
    for rec, path in accepted_images(store_path):
        if len(cells) == limit:
            break
        with Image.open(path) as img:
            cells.append((img.convert("RGB").resize(CELL), cell_label(rec, font)))
    if not cells:
        return None
    rows = (len(cells) + columns - 1) // columns
    w, h = CELL[0], CELL[1] + LABEL
    sheet = Image.new("RGB", (min(columns, len(cells)) * w, rows * h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (img, label) in enumerate(cells):
        x, y = (i % columns) * w, (i // columns) * h
        sheet.paste(img, (x, y))
        draw.multiline_text((x + MARGIN, y + CELL[1] + MARGIN), label, fill="black", font=font, spacing=2)
    return sheet


def label_font() -> ImageFont.FreeTypeFont:
    """The labels' font: Pillow's built-in one at 10 pixels."""
    return ImageFont.load_default(size=10)


def cell_label(rec: StoreRecord, font: ImageFont.FreeTypeFont) -> str:
    """What the sheet writes under an image: its edit (``edit_text``) or else its key, in at most two
    lines that fit the cell: broken after the edit's kind when too wide, a line still too wide shortened
    in its middle."""
    edit = rec.extra.get("edit")
    text = edit_text(edit) if isinstance(edit, dict) else rec.key
    width = CELL[0] - 2 * MARGIN
    lines = [text] if font.getlength(text) <= width else text.replace(": ", ":\n", 1).split("\n")
    return "\n".join(_shortened(line, font, width) for line in lines)


def edit_text(edit: dict[str, Any]) -> str:
    """A record's ``edit`` as short text: ``kind: value``, a value with ``old`` and ``new`` as the change
    (PDG's word swap: "word_swap: red -> blue"), another mapping as its pairs ("attributes:
    upper_colour=purple"). Keys beside ``kind`` and ``value`` (provenance) are left out."""
    value = edit.get("value")
    if isinstance(value, dict):
        if "old" in value and "new" in value:
            value = f"{value['old']} -> {value['new']}"
        else:
            value = ", ".join(f"{k}={v}" for k, v in value.items())
    return f"{edit.get('kind', 'edit')}: {value}"


def _shortened(line: str, font: ImageFont.FreeTypeFont, width: float) -> str:
    """``line``, or as much of its start and end as fits ``width`` pixels around "..."."""
    short, keep = line, len(line)
    while font.getlength(short) > width and keep:
        keep -= 1
        short = f"{line[: (keep + 1) // 2]}...{line[len(line) - keep // 2 :]}"
    return short


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
