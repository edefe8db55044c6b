"""Ranked-retrieval figures like the papers': a query text, then its top-K gallery images."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from tbpr.errors import DataError

THUMB_SIZE = (64, 128)  # width, height: pedestrian crops are tall
BORDER = 4
GAP = 6
MARGIN = 10
TEXT_WIDTH = 320
LABEL_HEIGHT = 18
FONT_SIZE = 13
MATCH_COLOR = (0, 170, 0)
MISS_COLOR = (220, 0, 0)
BACKGROUND = (255, 255, 255)
INK = (30, 30, 30)
PAD_COLOR = (235, 235, 235)


def render_retrieval_figure(
    queries: list[str],
    ranked_paths: list[list[Path]],
    ranked_matches: list[list[bool]],
    out_path: Path,
    top_k: int = 10,
) -> Path:
    """Write a PNG with one row per query: its text (wrapped) and its top ``top_k`` images.

    Each image gets a green border if it shows the query's person and a red one otherwise, and its
    rank below it. Rows with fewer ranked images leave the rest blank. Returns ``out_path``.
    """
    if not len(queries) == len(ranked_paths) == len(ranked_matches):
        raise ValueError(
            f"got {len(queries)} queries, {len(ranked_paths)} path lists and {len(ranked_matches)} match lists"
        )
    if not queries:
        raise ValueError("no queries to draw")
    for row, (paths, matches) in enumerate(zip(ranked_paths, ranked_matches)):
        if len(paths) != len(matches):
            raise ValueError(f"query {row}: {len(paths)} ranked paths but {len(matches)} match flags")

    font = ImageFont.load_default(size=FONT_SIZE)
    cell_w, cell_h = THUMB_SIZE[0] + 2 * BORDER, THUMB_SIZE[1] + 2 * BORDER
    line_h = FONT_SIZE + 4
    wrapped = [_wrap(text, font, TEXT_WIDTH) for text in queries]
    row_heights = [max(cell_h + LABEL_HEIGHT, len(lines) * line_h) for lines in wrapped]
    width = 2 * MARGIN + TEXT_WIDTH + top_k * (cell_w + GAP)
    height = 2 * MARGIN + sum(row_heights) + GAP * (len(queries) - 1)

    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    y = MARGIN
    for lines, paths, matches, row_h in zip(wrapped, ranked_paths, ranked_matches, row_heights):
        for i, line in enumerate(lines):
            draw.text((MARGIN, y + i * line_h), line, fill=INK, font=font)
        x = MARGIN + TEXT_WIDTH + GAP
        for rank, (path, match) in enumerate(zip(paths[:top_k], matches[:top_k]), start=1):
            draw.rectangle((x, y, x + cell_w - 1, y + cell_h - 1), fill=MATCH_COLOR if match else MISS_COLOR)
            canvas.paste(_thumbnail(Path(path)), (x + BORDER, y + BORDER))
            draw.text((x + cell_w // 2, y + cell_h + 2), str(rank), fill=INK, font=font, anchor="mt")
            x += cell_w + GAP
        y += row_h + GAP

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            canvas.save(fh, format="PNG")
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out_path


def _thumbnail(path: Path) -> Image.Image:
    """The image fitted into THUMB_SIZE, aspect ratio kept, padded with grey."""
    try:
        with Image.open(path) as img:
            return ImageOps.pad(img.convert("RGB"), THUMB_SIZE, color=PAD_COLOR)
    except OSError as exc:  # includes PIL.UnidentifiedImageError
        raise DataError(f"cannot read gallery image {path}: {exc}; check the dataset's image folder") from exc


def _wrap(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, max_width: int) -> list[str]:
    """Greedy word wrap to ``max_width`` pixels; a word longer than the width gets its own line."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= max_width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]
