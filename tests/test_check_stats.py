"""Dataset check (every problem at once, exit codes, skip_bad) and per-split statistics."""

from __future__ import annotations

import argparse
import json
import logging

import pytest
from PIL import Image

from fixtures.dataset_files import make_dataset, write_image, write_records
from tbpr import cli
from tbpr.cli import data_cmd
from tbpr.data.check import check_dataset, image_problem, load_training_manifest
from tbpr.data.readers import read_dataset
from tbpr.data.stats import SplitStats, format_stats_table, split_stats
from tbpr.errors import DataError


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tbpr")
    data_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def record(path: str, pid: int, split: str = "train", captions: tuple[str, ...] = ("a person",)) -> dict:
    return {"file_path": path, "id": pid, "split": split, "captions": list(captions)}


def corrupt(root, rel: str, data: bytes) -> None:
    (root / "imgs" / rel).write_bytes(data)


# ---------------------------------------------------------------- stats


def test_split_stats_hand_counted(tmp_path):
    stats = split_stats(read_dataset(make_dataset("cuhk", tmp_path)))
    assert stats["train"] == SplitStats(ids=3, images=4, captions=6, mean_words=pytest.approx(31 / 6))
    assert stats["val"] == SplitStats(ids=1, images=1, captions=2, mean_words=4.5)
    assert stats["test"] == SplitStats(ids=2, images=2, captions=3, mean_words=pytest.approx(17 / 3))


def test_stats_table_and_empty_split(tmp_path):
    stats = split_stats(read_dataset(make_dataset("icfg", tmp_path)))
    lines = format_stats_table(stats).splitlines()
    assert lines[0].split() == ["split", "ids", "images", "captions", "mean", "words"]
    assert lines[1].split() == ["train", "2", "3", "3", "7.00"]  # (9 + 6 + 6) / 3
    assert lines[2].split() == ["val", "0", "0", "0", "-"]
    assert lines[3].split() == ["test", "1", "1", "1", "6.00"]


def test_stats_cli_json_is_exactly_the_spec(tmp_path, capsys):
    root = make_dataset("cuhk", tmp_path)
    assert run_cli(["data", "stats", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "train": {"ids": 3, "images": 4, "captions": 6},
        "val": {"ids": 1, "images": 1, "captions": 2},
        "test": {"ids": 2, "images": 2, "captions": 3},
    }


def test_stats_cli_table_and_format_flag(tmp_path, capsys):
    root = make_dataset("rstp", tmp_path)
    assert run_cli(["data", "stats", str(root), "--format", "rstpreid"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["train", "1", "2", "4", "6.00"]  # (6 + 5 + 8 + 5) / 4


# ---------------------------------------------------------------- check


def test_clean_dataset_passes(tmp_path, capsys):
    root = make_dataset("cuhk", tmp_path)
    report = check_dataset(root)
    assert report.ok and report.errors == [] and report.warnings == []
    assert report.bad_image_ids == set() and report.format == "cuhk-pedes"
    assert run_cli(["data", "check", str(root)]) == 0
    assert capsys.readouterr().out.strip().endswith("OK: 0 errors, 0 warnings")


def test_image_problem_detects_truncated_garbage_and_missing(tmp_path):
    root = make_dataset("cuhk", tmp_path)
    truncated = root / "imgs" / "CUHK01/a.jpg"
    write_image(truncated, size=(128, 64))
    truncated.write_bytes(truncated.read_bytes()[:-500])
    with Image.open(truncated) as im:
        im.verify()  # PIL's verify() alone does not notice: the check decodes too
    corrupt(root, "test_query/g.png", b"\x89PNG garbage" * 10)
    assert image_problem(truncated).startswith("OSError: image file is truncated")
    assert "cannot identify image" in image_problem(root / "imgs" / "test_query/g.png")
    assert image_problem(root / "imgs" / "nope.jpg") == "missing"
    assert image_problem(root / "imgs" / "CUHK01/b.jpg") is None


def test_check_reports_missing_and_unreadable_images(tmp_path, capsys):
    root = make_dataset("cuhk", tmp_path)
    (root / "imgs" / "CUHK01/b.jpg").unlink()
    (root / "imgs" / "test_query/f.jpg").unlink()
    jpeg = (root / "imgs" / "CUHK01/a.jpg").read_bytes()
    corrupt(root, "CUHK01/a.jpg", jpeg[:200])
    corrupt(root, "cam_a/d.jpg", b"")
    report = check_dataset(root, workers=2)
    assert not report.ok
    assert report.bad_image_ids == {0, 1, 3, 5}
    missing, unreadable = report.errors
    assert missing.startswith("2 images missing under") and "CUHK01/b.jpg; test_query/f.jpg" in missing
    assert unreadable.startswith("2 images unreadable under")
    assert "CUHK01/a.jpg (OSError" in unreadable and "cam_a/d.jpg (UnidentifiedImageError" in unreadable
    assert run_cli(["data", "check", str(root), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and out["bad_images"] == 4 and out["errors"] == report.errors


def test_check_counts_many_missing_images_with_first_examples(tmp_path):
    records = [record(f"p/{i:03d}.jpg", i) for i in range(25)]
    root = write_records(tmp_path / "d", records)
    for i in range(3, 25):
        (root / "imgs" / f"p/{i:03d}.jpg").unlink()
    (message,) = check_dataset(root).errors
    assert message.startswith("22 images missing under")
    assert "p/003.jpg" in message and "p/012.jpg" in message and "p/013.jpg" not in message
    assert message.endswith("... and 12 more")


def test_missing_image_folder_is_one_error(tmp_path):
    root = make_dataset("jsonl", tmp_path)
    for path in sorted((root / "imgs").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (root / "imgs").rmdir()
    report = check_dataset(root)
    assert report.errors == [f"image folder {root / 'imgs'} does not exist"]
    assert report.bad_image_ids == {0, 1, 2, 3}


def test_check_reports_malformed_json_position_without_raising(tmp_path, capsys):
    root = make_dataset("cuhk", tmp_path)
    (root / "reid_raw.json").write_text('[{"split": "train",, "id": 1}]')
    report = check_dataset(root)
    position = "invalid JSON at line 1, column 20: Expecting property name enclosed in double quotes"
    assert report.errors == [f"{root / 'reid_raw.json'}: {position}"]
    assert run_cli(["data", "check", str(root)]) == 1
    assert "ERROR:" in capsys.readouterr().out


def test_empty_captions_are_errors_duplicates_are_warnings(tmp_path):
    records = [
        record("a.jpg", 1, captions=("A man in red.", "a  man in RED.", "A man in red.")),
        record("b.jpg", 2, captions=("  ",)),
        record("c.jpg", 2, captions=("A man in red.",)),
        record("d.jpg", 3, captions=()),
    ]
    report = check_dataset(write_records(tmp_path / "d", records))
    assert report.errors == ["1 empty captions: caption 3 of b.jpg"]
    assert report.bad_caption_ids == {3}
    duplicates, uncaptioned = report.warnings
    assert duplicates.startswith("2 captions repeating one of the same image: a.jpg")  # not c.jpg's
    assert uncaptioned == "1 images without captions: d.jpg"


def test_duplicate_captions_alone_keep_the_check_ok(tmp_path, capsys):
    root = write_records(tmp_path / "d", [record("a.jpg", 1, captions=("same", "same"))])
    report = check_dataset(root)
    assert report.ok and len(report.warnings) == 1
    assert run_cli(["data", "check", str(root)]) == 0
    assert "WARNING:" in capsys.readouterr().out


def test_person_id_in_two_splits(tmp_path):
    records = [
        record("a.jpg", 1),
        record("b.jpg", 1, "test"),
        record("c.jpg", 2),
        record("d.jpg", 2, "val"),
        record("e.jpg", 3, "val"),
        record("f.jpg", 3, "test"),
        record("g.jpg", 4),
    ]
    report = check_dataset(write_records(tmp_path / "d", records))
    assert report.errors == [
        "3 person ids in more than one split: id 1 (test, train); id 2 (train, val); id 3 (test, val)"
    ]
    assert report.bad_image_ids == {0, 2, 4}  # test keeps its ids, then val


def test_check_reports_all_problems_at_once(tmp_path):
    records = [
        record("a.jpg", 1),
        {"file_path": "b.jpg", "split": "train", "captions": ["x"]},
        record("c.jpg", 2, captions=("",)),
        record("d.jpg", 2, "test"),
        record("e.jpg", 5),
    ]
    root = write_records(tmp_path / "d", records)
    (root / "imgs" / "e.jpg").unlink()
    report = check_dataset(root)
    assert len(report.errors) == 4
    assert "record 1: field 'id' is missing" in report.errors[0]
    assert report.errors[1].startswith("1 images missing") and "e.jpg" in report.errors[1]
    assert report.errors[2] == "1 empty captions: caption 1 of c.jpg"  # ids of the usable records
    assert report.errors[3] == "1 person ids in more than one split: id 2 (test, train)"
    assert report.skipped_records == 1
    assert report.to_dict()["bad_records"] == 1


def test_check_of_folder_without_annotations_raises(tmp_path):
    with pytest.raises(DataError, match="no annotation file"):
        check_dataset(tmp_path)


# ---------------------------------------------------------------- load_training_manifest


def test_training_manifest_of_clean_data(tmp_path):
    root = make_dataset("cuhk", tmp_path)
    assert load_training_manifest(root).images == read_dataset(root).images


def test_training_manifest_logs_warnings(tmp_path, caplog):
    root = write_records(tmp_path / "d", [record("a.jpg", 1, captions=("same", "same"))])
    with caplog.at_level(logging.WARNING):
        assert len(load_training_manifest(root).captions) == 2
    assert "1 captions repeating one of the same image: a.jpg" in caplog.text


def test_training_manifest_refuses_bad_data_and_names_skip_bad(tmp_path):
    root = make_dataset("cuhk", tmp_path)
    (root / "imgs" / "CUHK01/b.jpg").unlink()
    expected = r"failed the check: 1 images missing.*CUHK01/b\.jpg.*skip_bad=True.*--skip-bad"
    with pytest.raises(DataError, match=expected):
        load_training_manifest(root)


def test_skip_bad_drops_and_logs(tmp_path, caplog):
    records = [
        record("a.jpg", 10, captions=("one", "")),
        record("b.jpg", 20, captions=("two",)),
        record("c.jpg", 30, captions=("three", "four")),
        record("d.jpg", 30, "test"),
        {"file_path": "e.jpg", "id": "40", "split": "train", "captions": ["x"]},
        record("f.jpg", 50),
    ]
    root = write_records(tmp_path / "d", records)
    (root / "imgs" / "b.jpg").write_bytes(b"not an image")
    with caplog.at_level(logging.WARNING):
        m = load_training_manifest(root, skip_bad=True)
    # kept: a.jpg (caption 'one'), d.jpg (test keeps id 30), f.jpg; train pids renumbered 10, 50 -> 0, 1
    assert [(im.path, im.pid, im.split) for im in m.images] == [
        ("a.jpg", 0, "train"),
        ("d.jpg", 30, "test"),
        ("f.jpg", 1, "train"),
    ]
    assert [c.text for c in m.captions] == ["one", "a person", "a person"]
    assert "skipping 1 annotation records, 2 images and 4 captions" in caplog.text


def test_skip_bad_with_nothing_left_to_train_on(tmp_path):
    root = make_dataset("cuhk", tmp_path)
    (root / "reid_raw.json").write_text("[")
    with pytest.raises(DataError, match="no training captions are left"):
        load_training_manifest(root, skip_bad=True)


def test_tbpr_main_dispatches_data_commands(tmp_path, capsys):
    root = make_dataset("icfg", tmp_path)
    assert cli.main(["data", "stats", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["train"] == {"ids": 2, "images": 3, "captions": 3}
    (root / "ICFG-PEDES.json").unlink()
    assert cli.main(["data", "check", str(root)]) == 2  # a DataError: nothing to check


# ---------------------------------------------------------------- hostile annotations


def test_the_same_image_twice_is_an_error(tmp_path):
    records = [
        record("a.jpg", 1),
        record("./a.jpg", 1),
        record("b.jpg", 2),
        record("b.jpg", 3),
        record("c.jpg", 4),
    ]
    report = check_dataset(write_records(tmp_path / "d", records))
    assert report.errors == [
        "2 images listed in more than one record: a.jpg (2 records, person id [1]); "
        "b.jpg (2 records, person ids [2, 3])"
    ]
    assert report.bad_image_ids == {1, 2, 3}  # the repeat of a.jpg; both identities of b.jpg


def test_an_empty_record_list_is_an_error(tmp_path, capsys):
    root = write_records(tmp_path / "d", [])
    assert f"{root / 'reid_raw.json'}: no records (an empty list): nothing to train or evaluate on" in (
        check_dataset(root).errors
    )
    assert run_cli(["data", "check", str(root)]) == 1


@pytest.mark.parametrize(
    "path", ["/etc/hostname", "../outside.jpg", "a/../../outside.jpg", "\\\\server\\x.jpg", "C:\\x.jpg", ""]
)
def test_image_paths_must_stay_inside_imgs(tmp_path, path):
    root = write_records(tmp_path / "d", [record("a.jpg", 1)])
    (root / "reid_raw.json").write_text(json.dumps([record("a.jpg", 1), record(path, 2)]))
    report = check_dataset(root)
    assert (
        "record 1: field 'file_path' must be a path relative to imgs/ that stays inside it"
        in report.errors[0]
    )
    assert report.skipped_records == 1


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"id": 10**30}, "field 'id' must be an integer from 0 to 9223372036854775807"),
        ({"id": -1}, "field 'id' must be an integer from 0 to"),
        (
            {"captions": ["x" * 10_001]},
            "field 'captions' must be a list of strings of at most 10000 characters",
        ),
    ],
    ids=["pid-1e30", "negative-pid", "10k-caption"],
)
def test_out_of_range_fields_are_errors(tmp_path, bad, message):
    report = check_dataset(write_records(tmp_path / "d", [record("a.jpg", 1), {**record("b.jpg", 2), **bad}]))
    assert f"record 1: {message}" in report.errors[0]


@pytest.mark.parametrize("command", ["check", "stats"])
def test_deeply_nested_json_is_one_clear_error(tmp_path, caplog, capsys, command):
    from tbpr.cli import main

    root = write_records(tmp_path / "d", [record("a.jpg", 1)])
    (root / "reid_raw.json").write_text("[" * 100_000 + "]" * 100_000)
    assert main(["data", command, str(root)]) in (1, 2)
    assert "nested too deeply" in capsys.readouterr().out + caplog.text


def test_data_check_workers_must_be_positive(tmp_path, caplog):
    from tbpr.cli import main

    assert main(["data", "check", str(make_dataset("cuhk", tmp_path)), "--workers", "0"]) == 2
    assert "--workers 0: need at least 1" in caplog.text
