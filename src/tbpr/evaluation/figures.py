"""Ranked-retrieval figures like the papers': a query text, then its top-K gallery images."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from tbpr.atomic import atomic_write
from tbpr.errors import DataError

THUMB_SIZE = (64, 128)  # width, height: pedestrian crops are tall
BORDER = 4
GAP = 6
MARGIN = 10
TEXT_WIDTH = 320
LABEL_HEIGHT = 18
FONT_SIZE = 13
TITLE_FONT_SIZE = 15
TITLE_HEIGHT = 26  # the title line and the space under it
MATCH_COLOR = (0, 170, 0)
MISS_COLOR = (220, 0, 0)
NEUTRAL_COLOR = (150, 150, 150)  # results without ground truth (search)
BACKGROUND = (255, 255, 255)
INK = (30, 30, 30)
PAD_COLOR = (235, 235, 235)


def render_retrieval_figure(
    queries: list[str],
    ranked_paths: list[list[Path]],
    ranked_matches: list[list[bool]] | None,
    out_path: Path,
    top_k: int = 10,
    ranked_scores: list[list[float]] | None = None,
    title: str | None = None,
    first_match_ranks: list[int | None] | None = None,
) -> Path:
    """Write a PNG with one row per query: its text (wrapped) and its top ``top_k`` images.

    Each image gets a green border if it shows the query's person and a red one otherwise (grey for
    all when ``ranked_matches`` is None: no ground truth), and its rank below it, followed by its score
    if ``ranked_scores`` are given. Rows with fewer ranked images leave the rest blank. ``title`` is
    written above the rows; ``first_match_ranks`` (1-based, per query) adds "first match at rank R" under
    a query whose first true match is not among the images shown. Returns ``out_path``.
    """
    if ranked_matches is None:
        ranked_matches = [[None] * len(paths) for paths in ranked_paths]
    if ranked_scores is None:
        ranked_scores = [[None] * len(paths) for paths in ranked_paths]
    if first_match_ranks is None:
        first_match_ranks = [None] * len(queries)
    if len(first_match_ranks) != len(queries):
        raise ValueError(f"got {len(queries)} queries but {len(first_match_ranks)} first-match ranks")
    if not len(queries) == len(ranked_paths) == len(ranked_matches) == len(ranked_scores):
        raise ValueError(
            f"got {len(queries)} queries, {len(ranked_paths)} path lists, {len(ranked_matches)} match lists "
            f"and {len(ranked_scores)} score lists"
        )
    if not queries:
        raise ValueError("no queries to draw")
    for row, (paths, matches, scores) in enumerate(zip(ranked_paths, ranked_matches, ranked_scores)):
        if len(paths) != len(matches):
            raise ValueError(f"query {row}: {len(paths)} ranked paths but {len(matches)} match flags")
        if len(paths) != len(scores):
            raise ValueError(f"query {row}: {len(paths)} ranked paths but {len(scores)} scores")

    font = ImageFont.load_default(size=FONT_SIZE)
    cell_w, cell_h = THUMB_SIZE[0] + 2 * BORDER, THUMB_SIZE[1] + 2 * BORDER
    line_h = FONT_SIZE + 4
    wrapped = [_wrap(text, font, TEXT_WIDTH) for text in queries]
    notes = [
        f"first match at rank {rank}" if rank is not None and rank > min(top_k, len(paths)) else None
        for rank, paths in zip(first_match_ranks, ranked_paths)
    ]
    row_heights = [
        max(cell_h + LABEL_HEIGHT, (len(lines) + (note is not None)) * line_h)
        for lines, note in zip(wrapped, notes)
    ]
    width = 2 * MARGIN + TEXT_WIDTH + top_k * (cell_w + GAP)
    title_h = TITLE_HEIGHT if title else 0
    height = 2 * MARGIN + title_h + sum(row_heights) + GAP * (len(queries) - 1)

    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((MARGIN, MARGIN), title, fill=INK, font=ImageFont.load_default(size=TITLE_FONT_SIZE))
    y = MARGIN + title_h
    rows = zip(wrapped, notes, ranked_paths, ranked_matches, ranked_scores, row_heights)
    for lines, note, paths, matches, scores, row_h in rows:
        for i, line in enumerate(lines):
            draw.text((MARGIN, y + i * line_h), line, fill=INK, font=font)
        if note:
            draw.text((MARGIN, y + len(lines) * line_h), note, fill=MISS_COLOR, font=font)
        x = MARGIN + TEXT_WIDTH + GAP
        for rank, (path, match, score) in enumerate(zip(paths[:top_k], matches[:top_k], scores), start=1):
            colour = NEUTRAL_COLOR if match is None else MATCH_COLOR if match else MISS_COLOR
            draw.rectangle((x, y, x + cell_w - 1, y + cell_h - 1), fill=colour)
            canvas.paste(_thumbnail(Path(path)), (x + BORDER, y + BORDER))
            label = str(rank) if score is None else f"{rank}: {score:.3f}"
            draw.text((x + cell_w // 2, y + cell_h + 2), label, fill=INK, font=font, anchor="mt")
            x += cell_w + GAP
        y += row_h + GAP

    return atomic_write(out_path, lambda fh: canvas.save(fh, format="PNG"))


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
