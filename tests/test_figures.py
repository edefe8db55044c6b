"""Ranked-retrieval figures: size, borders, images, wrapping, errors, atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from tbpr.errors import DataError
from tbpr.evaluation import figures as F
from tbpr.evaluation import render_retrieval_figure

CELL_W = F.THUMB_SIZE[0] + 2 * F.BORDER
CELL_H = F.THUMB_SIZE[1] + 2 * F.BORDER
ROW_H = CELL_H + F.LABEL_HEIGHT


def make_images(folder: Path, count: int) -> list[Path]:
    """Solid-colour images of the thumbnail's aspect ratio, so they fill the thumbnail exactly."""
    paths = []
    for i in range(count):
        path = folder / f"img{i}.png"
        Image.new("RGB", (F.THUMB_SIZE[0] // 2, F.THUMB_SIZE[1] // 2), (10 * i, 100, 200)).save(path)
        paths.append(path)
    return paths


def cell_origin(row: int, rank: int) -> tuple[int, int]:
    """Top-left corner of the bordered cell of a 1-based rank in a row of short-query rows."""
    return F.MARGIN + F.TEXT_WIDTH + F.GAP + (rank - 1) * (CELL_W + F.GAP), F.MARGIN + row * (ROW_H + F.GAP)


def test_figure_size_borders_and_images(tmp_path):
    paths = make_images(tmp_path, 12)
    matches = [[i % 3 == 0 for i in range(10)], [i == 4 for i in range(10)]]
    out = render_retrieval_figure(
        ["a woman in a red coat", "a man in a grey hoodie"],
        [paths[:10], paths[2:12]],
        matches,
        tmp_path / "figs" / "retrieval.png",
    )
    assert out == tmp_path / "figs" / "retrieval.png"
    with Image.open(out) as img:
        assert img.format == "PNG"
        assert img.size == (
            2 * F.MARGIN + F.TEXT_WIDTH + 10 * (CELL_W + F.GAP),
            2 * F.MARGIN + 2 * ROW_H + F.GAP,
        )
        img = img.convert("RGB")
        for row, (row_matches, first) in enumerate(zip(matches, [0, 2])):
            for rank, match in enumerate(row_matches, start=1):
                x, y = cell_origin(row, rank)
                colour = F.MATCH_COLOR if match else F.MISS_COLOR
                assert img.getpixel((x + 1, y + CELL_H // 2)) == colour
                assert img.getpixel((x + CELL_W // 2, y + CELL_H - 2)) == colour
                centre = img.getpixel((x + CELL_W // 2, y + CELL_H // 2))
                assert centre == (10 * (first + rank - 1), 100, 200)
    assert [p.name for p in out.parent.iterdir()] == ["retrieval.png"]  # no temp file left


def test_short_rows_leave_cells_blank_and_top_k_truncates(tmp_path):
    paths = make_images(tmp_path, 3)
    out = render_retrieval_figure(["q"], [paths], [[True, False, True]], tmp_path / "f.png", top_k=2)
    with Image.open(out) as img:
        assert img.size[0] == 2 * F.MARGIN + F.TEXT_WIDTH + 2 * (CELL_W + F.GAP)
        x, y = cell_origin(0, 2)
        assert img.convert("RGB").getpixel((x + 1, y + 5)) == F.MISS_COLOR

    out = render_retrieval_figure(["q"], [paths[:1]], [[True]], tmp_path / "g.png", top_k=3)
    with Image.open(out) as img:
        x, y = cell_origin(0, 2)
        assert img.convert("RGB").getpixel((x + 1, y + 5)) == F.BACKGROUND


def test_long_queries_wrap_within_the_text_column_and_grow_the_row(tmp_path):
    font = F.ImageFont.load_default(size=F.FONT_SIZE)
    text = " ".join(["the pedestrian wears a long dark coat and carries a bag"] * 14)
    lines = F._wrap(text, font, F.TEXT_WIDTH)
    assert len(lines) > 3
    assert all(font.getlength(line) <= F.TEXT_WIDTH for line in lines)
    assert " ".join(lines) == text
    paths = make_images(tmp_path, 1)
    out = render_retrieval_figure([text], [paths], [[True]], tmp_path / "f.png")
    with Image.open(out) as img:
        assert img.size[1] == 2 * F.MARGIN + max(ROW_H, len(lines) * (F.FONT_SIZE + 4))
        assert img.size[1] > 2 * F.MARGIN + ROW_H


def test_mismatched_inputs_raise(tmp_path):
    paths = make_images(tmp_path, 2)
    with pytest.raises(ValueError, match="2 queries"):
        render_retrieval_figure(["a", "b"], [paths], [[True, False]], tmp_path / "f.png")
    with pytest.raises(ValueError, match="query 0: 2 ranked paths but 1 match flags"):
        render_retrieval_figure(["a"], [paths], [[True]], tmp_path / "f.png")
    with pytest.raises(ValueError, match="no queries"):
        render_retrieval_figure([], [], [], tmp_path / "f.png")


def test_unreadable_image_is_a_data_error_and_leaves_no_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.jpg"):
        render_retrieval_figure(["a"], [[bad]], [[True]], tmp_path / "out" / "f.png")
    assert not (tmp_path / "out" / "f.png").exists()


def test_title_and_first_match_rank_beyond_the_shown_images(tmp_path):
    paths = make_images(tmp_path, 2)
    out = render_retrieval_figure(
        ["q1", "q2"],
        [paths, paths],
        [[False, False], [True, False]],
        tmp_path / "f.png",
        top_k=2,
        title="run runs/x | checkpoint best.pt | synth test split",
        first_match_ranks=[7, 1],
    )
    line_h = F.FONT_SIZE + 4
    with Image.open(out) as img:
        img = img.convert("RGB")
        assert img.size[1] == 2 * F.MARGIN + F.TITLE_HEIGHT + 2 * ROW_H + F.GAP
        title = img.crop((F.MARGIN, F.MARGIN, F.MARGIN + F.TEXT_WIDTH, F.MARGIN + F.TITLE_HEIGHT))
        assert any(colour != F.BACKGROUND for _, colour in title.getcolors(4096))
        x, y = cell_origin(0, 1)
        assert img.getpixel((x + 1, y + F.TITLE_HEIGHT + 5)) == F.MISS_COLOR  # the cells moved down

        def note_ink(row: int) -> int:
            top = F.MARGIN + F.TITLE_HEIGHT + row * (ROW_H + F.GAP) + line_h  # the line under the query
            colours = img.crop((F.MARGIN, top, F.MARGIN + F.TEXT_WIDTH, top + line_h)).getcolors(4096)
            return sum(n for n, c in colours if c[0] > 150 and c[1] < 100)  # red ink

        assert note_ink(0) > 50  # "first match at rank 7": beyond the 2 shown
        assert note_ink(1) == 0  # rank 1 is shown: no note


def test_ranked_examples_scores_and_first_match_rank_by_hand():
    """Four gallery images of persons 1, 2, 1, 3; two queries, features chosen so ranks are known."""
    from tbpr.data.schema import CaptionRecord, ImageRecord, Manifest
    from tbpr.evaluation.evaluator import EncodedSplit
    from tbpr.evaluation.run_eval import ranked_examples

    images = [ImageRecord(i, f"{i}.jpg", pid, "test") for i, pid in enumerate([1, 2, 1, 3])]
    captions = [CaptionRecord(0, 0, "person one"), CaptionRecord(1, 3, "person three")]
    manifest = Manifest("m", Path("/g"), images, captions)
    image_feats = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8], [0.8, 0.6]])
    text_feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # query 0 scores 0, 1, .6, .8: order 1 (pid 2), 3 (pid 3), 2 (pid 1) -> first match at rank 3
    # query 1 scores 1, 0, .8, .6: order 0, 2, 3 (pid 3) -> first match at rank 3 as well, then 1
    encoded = EncodedSplit(image_feats, torch.tensor([1, 2, 1, 3]), text_feats, torch.tensor([1, 3]))
    ex = ranked_examples(encoded, manifest, num_queries=2, top_k=2, seed=0)
    order = [captions.index(next(c for c in captions if c.text == t)) for t in ex["queries"]]
    expected = {
        0: ([Path("/g/1.jpg"), Path("/g/3.jpg")], [False, False], [1.0, 0.8], 3),
        1: ([Path("/g/0.jpg"), Path("/g/2.jpg")], [False, False], [1.0, 0.8], 3),
    }
    for row, q in enumerate(order):
        paths, matches, scores, first = expected[q]
        assert ex["ranked_paths"][row] == paths and ex["ranked_matches"][row] == matches
        assert ex["ranked_scores"][row] == pytest.approx(scores)
        assert ex["first_match_ranks"][row] == first
