"""``tbpr index build/update`` and ``tbpr search``: table, JSON, contact sheet, exit codes."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys

import pytest
from PIL import Image

import tbpr
from tbpr.cli import main
from tbpr.evaluation import figures as F
from tbpr.search import Searcher

QUERY = "a man in a black coat with a red backpack"


@pytest.fixture(scope="module")
def cli_index(tmp_path_factory, synth_tiny, tiny_run):
    out = tmp_path_factory.mktemp("cli") / "idx"
    argv = ["index", "build", "--run", str(tiny_run), "--images", str(synth_tiny / "imgs"), "--out", str(out)]
    assert main([*argv, "--num-workers", "0", "--device", "cpu"]) == 0
    return out


def test_build_prints_a_summary(cli_index, capsys, synth_tiny):
    # the module fixture's output was printed before this test's capture began: rebuild a small one
    folder = cli_index.parent / "few"
    folder.mkdir()
    for path in sorted((synth_tiny / "imgs").rglob("*.jpg"))[:3]:
        shutil.copy(path, folder / path.name)
    (folder / "bad.jpg").write_bytes(b"junk")
    run = Searcher(cli_index).info()["model"]["checkpoint"]
    argv = [
        "index",
        "build",
        "--run",
        run,
        "--images",
        str(folder),
        "--out",
        str(cli_index.parent / "few_idx"),
    ]
    assert main([*argv, "--num-workers", "0", "--kind", "hnsw", "--ef-search", "16"]) == 0
    assert (
        capsys.readouterr().out.strip()
        == f"indexed 3 images (1 unreadable skipped) into {cli_index.parent / 'few_idx'}"
    )
    assert Searcher(cli_index.parent / "few_idx").info()["params"]["ef_search"] == 16


def test_search_prints_an_aligned_table(cli_index, capsys):
    expected = Searcher(cli_index).search(QUERY, k=3)
    assert main(["search", str(cli_index), QUERY, "-k", "3", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["rank", "score", "path"]
    assert len(lines) == 4
    for line, result in zip(lines[1:], expected):
        assert line.split() == [str(result.rank), f"{result.score:.4f}", result.path]
    assert len({line.index(line.split()[2]) for line in lines}) == 1  # the path column is aligned


def test_search_json_lists_rank_id_score_path(cli_index, capsys):
    expected = Searcher(cli_index).search(QUERY, k=5)
    assert main(["search", str(cli_index), QUERY, "-k", "5", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [sorted(r) for r in printed] == [["id", "path", "rank", "score"]] * 5
    assert [(r["rank"], r["id"], r["path"]) for r in printed] == [(r.rank, r.id, r.path) for r in expected]
    assert [r["score"] for r in printed] == pytest.approx([r.score for r in expected], abs=1e-6)


def test_search_sheet_draws_the_ranked_images_with_neutral_borders(cli_index, tmp_path, capsys):
    sheet = tmp_path / "sheet.png"
    assert main(["search", str(cli_index), QUERY, "-k", "4", "--sheet", str(sheet)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["rank", "score", "path"] and printed[-1] == f"contact sheet: {sheet}"
    cell_w, cell_h = F.THUMB_SIZE[0] + 2 * F.BORDER, F.THUMB_SIZE[1] + 2 * F.BORDER
    with Image.open(sheet) as img:
        img = img.convert("RGB")
        assert img.size[0] == 2 * F.MARGIN + F.TEXT_WIDTH + 4 * (cell_w + F.GAP)
        for rank in range(4):
            x, y = F.MARGIN + F.TEXT_WIDTH + F.GAP + rank * (cell_w + F.GAP), F.MARGIN
            assert img.getpixel((x + 1, y + cell_h // 2)) == F.NEUTRAL_COLOR
            label = img.crop((x, y + cell_h + 2, x + cell_w, y + cell_h + F.LABEL_HEIGHT)).getcolors(4096)
            inked = sum(n for n, colour in label if colour != F.BACKGROUND)
            assert inked > 120  # "1: 0.123" inks about 200 pixels, a rank alone ("1") about 30
        text = img.crop((F.MARGIN, F.MARGIN, F.MARGIN + F.TEXT_WIDTH, F.MARGIN + F.FONT_SIZE + 4))
        assert any(colour != F.BACKGROUND for _, colour in text.getcolors(4096))  # the query is written


def test_update_prints_what_changed(tmp_path, synth_tiny, tiny_run, capsys):
    folder = tmp_path / "imgs"
    shutil.copytree(synth_tiny / "imgs" / "test", folder)
    out = tmp_path / "idx"
    argv = ["index", "build", "--run", str(tiny_run), "--images", str(folder), "--out", str(out)]
    assert main([*argv, "--num-workers", "0"]) == 0
    victim = sorted(folder.rglob("*.jpg"))[0]
    victim.unlink()
    capsys.readouterr()
    assert main(["index", "update", str(out), "--num-workers", "0"]) == 0
    line = capsys.readouterr().out.strip()
    kept = len(list(folder.rglob("*.jpg")))
    assert line == (
        f"{out}: 0 added, 0 changed, 1 removed, {kept} unchanged; 0 images encoded; "
        f"{kept} images indexed (0 unreadable skipped)"
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["search", "{tmp}/missing", "a man"], "is not a tbpr index"),
        (["search", "{index}", "a man", "-k", "0"], "k must be a positive integer"),
        (["search", "{index}", "  "], "query is empty"),
        (["index", "build", "--run", "{run}", "--images", "{tmp}/empty", "--out", "{tmp}/o"], "no images"),
        (
            ["index", "build", "--run", "{run}", "--images", "{tmp}/nowhere", "--out", "{tmp}/o"],
            "does not exist",
        ),
        (["index", "build", "--run", "{tmp}", "--images", "{images}", "--out", "{tmp}/o"], "no checkpoint"),
        (
            [
                "index",
                "build",
                "--run",
                "{run}",
                "--images",
                "{images}",
                "--out",
                "{index}",
                "--kind",
                "hnsw",
            ],
            "already holds another index",
        ),
        (
            ["index", "build", "--run", "{run}", "--images", "{images}", "--out", "{tmp}/o", "--nprobe", "3"],
            "index kind flat has no parameter",
        ),
        (["index", "update", "{tmp}/missing"], "is not a tbpr index"),
    ],
)
def test_bad_inputs_exit_2_with_a_clear_message(
    argv, message, cli_index, tiny_run, synth_tiny, tmp_path, caplog
):
    (tmp_path / "empty").mkdir()
    values = {"tmp": tmp_path, "index": cli_index, "run": tiny_run, "images": synth_tiny / "imgs"}
    with caplog.at_level(logging.ERROR, logger="tbpr"):
        assert main([arg.format(**values) for arg in argv]) == 2
    assert message in caplog.text


def test_unquoted_query_words_get_a_hint_to_quote_them(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "gallery.index", "a", "man", "in", "red", "-k", "3"])
    assert exit_info.value.code == 2
    assert 'quote it, e.g. tbpr search INDEX "a man in red"' in capsys.readouterr().err


def test_version_usage_errors_and_help_answer_without_importing_torch():
    """Each command line in a fresh interpreter: it exits as argparse does and torch was never imported."""
    argvs = [
        ["--version"],
        ["search"],
        ["search", "idx", "a", "man"],
        ["search", "--help"],
        ["index", "update"],
        ["train", "--no-such-option"],
        ["eval", "--help"],
    ]
    script = (
        "import json, sys\n"
        "from tbpr.cli import main\n"
        "try:\n    main(json.loads(sys.argv[1]))\nexcept SystemExit as e:\n    code = e.code\n"
        "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules}), file=sys.stderr)\n"
    )
    for argv in argvs:
        done = subprocess.run(
            [sys.executable, "-c", script, json.dumps(argv)], capture_output=True, text=True
        )
        verdict = json.loads(done.stderr.strip().splitlines()[-1])
        assert verdict == {"code": 0 if argv[-1] in ("--help", "--version") else 2, "torch": False}, argv
        if argv == ["--version"]:
            assert done.stdout.strip() == f"tbpr {tbpr.__version__}"
